//! The differential test's table and filter generator: value pools for
//! every column type (NULLs, NaN, infinities, -0, 40-digit numerics, BC and
//! far-future dates, unicode, quotes, backslashes), and random filters over
//! them with literals of matching kinds.

/// (column, SQL type, typname, type OID, values as SQL literals).
pub type ColumnSpec = (&'static str, &'static str, &'static str, u32, &'static [&'static str]);

pub const COLUMNS: &[ColumnSpec] = &[
    ("i2", "int2", "int2", 21, &["-32768", "-1", "0", "1", "2", "42", "16384", "32767"]),
    ("i4", "int4", "int4", 23, &["-2147483648", "-1", "0", "1", "3", "42", "16777217", "2147483647"]),
    (
        "i8",
        "int8",
        "int8",
        20,
        &["-9223372036854775808", "0", "1", "42", "2147483648", "9007199254740993", "9223372036854775807"],
    ),
    (
        "n",
        "numeric",
        "numeric",
        1700,
        &[
            "0",
            "1",
            "1.0",
            "1.5",
            "-1.5",
            "0.1",
            "0.10",
            "42",
            "1234567890123456789012345678901234567890",
            "0.0000000000000000000000000000000000000001",
            "3.1415926535897932384626433832795028841971",
            "-0.0",
            "1e-20",
            "99999999999999999999999",
            "-1234567890123456789012345678901234567890.5",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
        ],
    ),
    (
        "f4",
        "float4",
        "float4",
        700,
        &[
            "0",
            "'-0'",
            "1.1",
            "1.5",
            "0.1",
            "42",
            "16777216",
            "3.4028235e38",
            "1e-45",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
        ],
    ),
    (
        "f8",
        "float8",
        "float8",
        701,
        &[
            "0",
            "'-0'",
            "0.1",
            "1.1",
            "1.5",
            "42",
            "1.100000023841858",
            "9007199254740992",
            "1e308",
            "5e-324",
            "'NaN'",
            "'Infinity'",
            "'-Infinity'",
        ],
    ),
    ("b", "bool", "bool", 16, &["true", "false"]),
    (
        "s",
        "text",
        "text",
        25,
        &[
            "''",
            "'a'",
            "'abc'",
            "'ABC'",
            "'é'",
            "'É'",
            "'it''s'",
            r"'back\slash'",
            "'%'",
            "'_'",
            "'a%b'",
            "'naïve'",
            "'日本'",
            "'ab '",
            "'\u{212A}'",
            "'Abc'",
        ],
    ),
    ("v", "varchar(10)", "varchar", 1043, &["''", "'a'", "'ab'", "'ab '", "'AB'", "'x_y'"]),
    ("c", "char(4)", "bpchar", 1042, &["''", "'ab'", "'ab  '", "'abcd'", "'a b'", "'AB'"]),
    (
        "d",
        "date",
        "date",
        1082,
        &[
            "'2026-01-01'",
            "'2000-02-29'",
            "'1970-01-01'",
            "'0044-03-15 BC'",
            "'4713-01-01 BC'",
            "'294276-12-31'",
            "'5874897-12-31'",
            "'infinity'",
            "'-infinity'",
        ],
    ),
    (
        "ts",
        "timestamp",
        "timestamp",
        1114,
        &[
            "'2026-01-01 00:00:00'",
            "'2026-01-01 10:00:00'",
            "'2026-01-01 10:00:00.123456'",
            "'2000-02-29 23:59:59.999999'",
            "'0044-03-15 10:00:00 BC'",
            "'294276-12-31 23:59:59'",
            "'infinity'",
            "'-infinity'",
        ],
    ),
    (
        "tz",
        "timestamptz",
        "timestamptz",
        1184,
        &[
            "'2026-01-01 10:00:00+00'",
            "'2026-01-01 08:00:00+00'",
            "'2026-01-01 12:00:00+02'",
            "'2026-01-01 00:00:00+00'",
            "'1999-12-31 23:00:00-01'",
            "'0044-03-15 10:00:00+00 BC'",
            "'infinity'",
            "'-infinity'",
        ],
    ),
    (
        "u",
        "uuid",
        "uuid",
        2950,
        &[
            "'00000000-0000-0000-0000-000000000000'",
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
            "'ffffffff-ffff-ffff-ffff-ffffffffffff'",
            "'7fffffff-0000-0000-0000-000000000001'",
        ],
    ),
];

pub const ROWS: usize = 72;

/// xorshift64*: deterministic, no clock.
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

/// Literals a generated filter compares a column of this family with.
fn literals(typname: &str) -> &'static [&'static str] {
    match typname {
        "int2" | "int4" | "int8" | "numeric" | "float4" | "float8" => &[
            "0",
            "1",
            "-1",
            "2",
            "42",
            "1.5",
            "-1.5",
            "1.0",
            "0.1",
            "1.1",
            "1e3",
            "2.5e0",
            "1e-1",
            "32767",
            "-32768",
            "2147483647",
            "-2147483648",
            "2147483648",
            "16777217",
            "9007199254740993",
            "9007199254740992",
            "9223372036854775807",
            "99999999999999999999999",
            "1234567890123456789012345678901234567890",
            "0.1000000000000000000000000000000000000001",
            "'42'",
            "'1.1'",
            "'NaN'",
            "'-0'",
            "'Infinity'",
            "'1.1'::float4",
            "1.1::float8",
            "'NaN'::numeric",
            "'NaN'::float8",
            "'-Infinity'::numeric",
            "'Infinity'::float8",
            "-(1.5::float8)",
            "(-2147483648)::int4",
            "16777217::float4",
            "NULL",
            "NULL::numeric",
            "'1e3'",
            "'.5'",
            "'+1.5'",
            "'inf'",
            "'-inf'",
            "'nan'",
            "'1e-45'::float4",
            "'3.4028235e38'::float4",
            "'5e-324'::float8",
            "1e308",
            "'-0'::float8",
            "+1",
            "- -1",
            "-(1::int4)",
            "-('NaN'::numeric)",
            "-'Infinity'::float8",
            "(-32768)::int2",
            "1.::numeric",
            ".5",
        ],
        "bool" => &["TRUE", "FALSE", "'t'", "'no'", "'YES'", "'on'", "'0'", "NULL", "NULL::bool"],
        "text" | "varchar" | "bpchar" => &[
            "''",
            "'a'",
            "'abc'",
            "'ABC'",
            "'é'",
            "'it''s'",
            r"'back\slash'",
            "'ab'",
            "'ab '",
            "'ab  '",
            "'abcd'",
            "'%'",
            "'日本'",
            "'x_y'",
            "'a b'",
            "'ab'::text",
            "'ab '::text",
            "NULL",
            "$$it's$$",
        ],
        "date" | "timestamp" | "timestamptz" => &[
            "'2026-01-01'",
            "'2026-01-01 10:00'",
            "'2026-01-01 10:00:00.123456'",
            "'2026-01-01T10:00:00'",
            "'infinity'",
            "'-infinity'",
            "'0044-03-15 BC'",
            "'1970-01-01'",
            "date '2026-01-01'",
            "timestamp '2026-01-01 10:00:00'",
            "timestamptz '2026-01-01 12:00+02'",
            "'2026-01-01 12:00+02'::timestamptz",
            "CAST('2000-02-29 23:59:59.999999' AS timestamp)",
            "'294276-12-31'::date",
            "'infinity'::date",
            "NULL",
            "'2026-01-01 12:00+02'",
            "'2026-01-01 10:00-02:30:15'",
            "'2026-01-01T10:00:00Z'",
            "'2026-01-01 10:00+0230'",
            "'-INFINITY'",
            "'4714-11-24 BC'",
            "'5874897-12-31'",
            "'2026-01-01 AD'",
            "'294276-12-31 23:59:59.999999'",
        ],
        "uuid" => &[
            "'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11'",
            "'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
            "'{00000000-0000-0000-0000-000000000000}'",
            "'7fffffff000000000000000000000001'",
            "NULL",
        ],
        _ => &["NULL"],
    }
}

const LIKE_PATTERNS: &[&str] = &[
    "'a%'",
    "'%b%'",
    "'_'",
    "'%'",
    "''",
    r"'a\%b'",
    r"'\_'",
    "'A%'",
    "'%C'",
    "'ab__'",
    "'%s%'",
    "'it''%'",
    "'_é'",
    "'%_'",
    "'ab  '",
    "'a!%'",
    "'!!'",
    "'%!_'",
    r"'%\\%'",
    "NULL",
    "'ab'::text",
];

pub fn family(typname: &str) -> &'static str {
    match typname {
        "int2" | "int4" | "int8" | "numeric" | "float4" | "float8" => "number",
        "text" | "varchar" | "bpchar" => "text",
        "date" | "timestamp" | "timestamptz" => "time",
        "bool" => "bool",
        _ => "uuid",
    }
}

/// A random condition over the table's columns.
pub fn condition(rng: &mut Rng, depth: u32) -> String {
    if depth > 0 && rng.chance(35) {
        let (a, b) = (condition(rng, depth - 1), condition(rng, depth - 1));
        return match rng.below(4) {
            0 => format!("({a}) AND ({b})"),
            1 => format!("({a}) OR ({b})"),
            2 => format!("NOT ({a})"),
            _ => format!("({a}) IS NOT TRUE"),
        };
    }
    let (name, _, typname, _, _) = *rng.pick(COLUMNS);
    let fam = family(typname);
    let lits = literals(typname);
    let ordering = fam != "text";
    match rng.below(12) {
        0..=3 => {
            let ops: &[&str] = if ordering { &["=", "<>", "<", "<=", ">", ">=", "!="] } else { &["=", "<>", "!="] };
            format!("{name} {} {}", rng.pick(ops), rng.pick(lits))
        }
        4 | 5 => {
            let n = 1 + rng.below(4);
            let items: Vec<&str> = (0..n).map(|_| *rng.pick(lits)).collect();
            let not = if rng.chance(40) { "NOT " } else { "" };
            format!("{name} {not}IN ({})", items.join(", "))
        }
        6 if ordering => {
            let not = if rng.chance(30) { "NOT " } else { "" };
            format!("{name} {not}BETWEEN {} AND {}", rng.pick(lits), rng.pick(lits))
        }
        7 => {
            let not = if rng.chance(50) { "NOT " } else { "" };
            format!("{name} IS {not}DISTINCT FROM {}", rng.pick(lits))
        }
        8 => format!("{name} IS {}NULL", if rng.chance(50) { "NOT " } else { "" }),
        9 if fam == "text" => {
            let op = rng.pick(&["LIKE", "NOT LIKE", "ILIKE", "NOT ILIKE"]);
            let esc = *rng.pick(&["", "", "", " ESCAPE '!'", " ESCAPE ''"]);
            format!("{name} {op} {}{esc}", rng.pick(LIKE_PATTERNS))
        }
        10 => {
            // Column against column of the same family (text columns are
            // refused: their collations could differ).
            let others: Vec<&ColumnSpec> = COLUMNS.iter().filter(|c| family(c.2) == fam).collect();
            let other = rng.pick(&others).0;
            let ops: &[&str] = if ordering { &["=", "<>", "<", ">="] } else { &["="] };
            format!("{name} {} {other}", rng.pick(ops))
        }
        11 if rng.chance(50) => {
            // Columns among the items of an IN list: compared one by one.
            let others: Vec<&ColumnSpec> = COLUMNS.iter().filter(|c| family(c.2) == fam && fam != "text").collect();
            if others.is_empty() {
                format!("{name} IS NOT NULL")
            } else {
                format!("{name} IN ({}, {}, {})", rng.pick(&others).0, rng.pick(lits), rng.pick(lits))
            }
        }
        _ => {
            let test = rng.pick(&[
                "b",
                "NOT b",
                "b IS TRUE",
                "b IS NOT FALSE",
                "b IS UNKNOWN",
                "b = TRUE",
                "'a' = 'a'",
                "1 < 2.5",
                "NULL IS NULL",
                "'1.1'::float4 = 1.1",
                "1 IN (1.0, 2)",
                "(i4 = 1) = b",
                "(i4 > 0) IS DISTINCT FROM (n > 0)",
            ]);
            (*test).to_owned()
        }
    }
}
