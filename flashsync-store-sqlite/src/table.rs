//! One view table: its columns and the SQL that reads and writes it.
//!
//! A copy of a view (published, or a generation being filled) is a SQLite
//! table with, in order:
//!
//! - one column per upstream column, under the upstream name and with the
//!   SQL type of its [`Kind`];
//! - `_flashsync_key` BLOB, the primary key: the core's order-preserving
//!   [`encode_key`](flashsync_core::codec::encode_key) bytes of the row's
//!   key. SQLite compares BLOBs with `memcmp`, so `ORDER BY _flashsync_key`
//!   is flashsync's key order, and the table is declared `WITHOUT ROWID` so
//!   its rows are stored in that order;
//! - `_flashsync_copies` INTEGER, for views without a key only (full-row
//!   identity, a multiset): how many copies of the row there are;
//! - `_flashsync_exact` BLOB, NULL unless a value of the row does not read
//!   back exactly from its column (see [`types`](crate::types)); then it
//!   holds the row's [`encode_row`](flashsync_core::codec::encode_row)
//!   bytes, which reads use instead of the columns;
//! - for each `numeric` and `timestamptz` column, a generated (virtual:
//!   computed when read, never stored) helper column, `<name>_real` or
//!   `<name>_utc`. A generation is filled without them and they are added
//!   when it is published (`ALTER TABLE … ADD COLUMN`, which for a virtual
//!   column touches no row): SQLite evaluates every generated column of a
//!   row it inserts, and the helpers' `strftime` cost a bulk copy of a
//!   table with timestamps nearly 40% of its time.
//!
//! SQLite column names are case-insensitive (ASCII) while Postgres' are not,
//! and an upstream column could be called `_flashsync_key`: a name already
//! taken gets `_2`, `_3`, ... appended. Reads go by position, so renaming
//! never changes what the store returns; `_flashsync_columns` records the
//! mapping.

use std::collections::HashSet;

use flashsync_core::codec::{decode_row, encode_row};
use flashsync_core::{Identity, RelationSchema, Row, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};

use crate::layout::quote;
use crate::types::{class_name, to_sql, Kind};

/// The hidden primary-key column.
pub(crate) const COL_KEY: &str = "_flashsync_key";
/// The hidden copy count of full-row views.
pub(crate) const COL_COPIES: &str = "_flashsync_copies";
/// The hidden exact encoding of rows whose values do not fit their columns.
pub(crate) const COL_EXACT: &str = "_flashsync_exact";

/// SQLite's default limit on columns per table.
const MAX_COLUMNS: usize = 2000;

/// One upstream column in SQL.
#[derive(Clone, Debug)]
pub(crate) struct SqlColumn {
    /// Its SQL name.
    pub name: String,
    /// What it holds.
    pub kind: Kind,
    /// The SQL name of its generated helper column, if it has one.
    pub helper: Option<String>,
}

/// A copy's table and the statements that work on it.
#[derive(Debug)]
pub(crate) struct Plan {
    /// The table's name (unquoted).
    pub table: String,
    /// The schema its rows have.
    pub schema: RelationSchema,
    /// One per schema column.
    pub columns: Vec<SqlColumn>,
    /// `CREATE TABLE`, without the helper columns.
    pub create: String,
    /// `ALTER TABLE … ADD COLUMN` for each helper column.
    pub add_helpers: Vec<String>,
    /// Writes one row, replacing any row under its key.
    pub upsert: String,
    /// Writes one snapshot row: like `upsert` for keyed views; for full-row
    /// views it adds its copies to those of an identical row.
    pub add: String,
    /// Reads one row by key.
    pub select_one: String,
    /// Deletes one row by key.
    pub delete_one: String,
    /// Deletes every row.
    pub clear: String,
    /// Counts rows, copies included.
    pub count: String,
    /// Range scans in key order: `[start?][end?]`, parameters in that order
    /// followed by the limit.
    scans: [String; 4],
}

impl Plan {
    /// The plan of a copy of `schema` in `table`. Refuses names SQLite cannot
    /// take and schemas wider than SQLite's column limit.
    pub(crate) fn new(table: &str, schema: &RelationSchema) -> Result<Plan, String> {
        if let Some(c) = schema.columns.iter().find(|c| c.name.contains('\0')) {
            return Err(format!("column name {:?} contains a NUL byte", c.name));
        }
        let full_row = schema.identity == Identity::FullRow;
        let mut taken: HashSet<String> =
            [COL_KEY, COL_COPIES, COL_EXACT].iter().map(|n| n.to_ascii_lowercase()).collect();
        let mut columns: Vec<SqlColumn> = schema
            .columns
            .iter()
            .map(|c| SqlColumn { name: unique(&c.name, &mut taken), kind: Kind::of(&c.type_name), helper: None })
            .collect();
        // Helpers are named after the user columns have theirs: an upstream
        // column called `price_real` keeps its name.
        for c in &mut columns {
            if let Some(helper) = c.kind.helper() {
                c.helper = Some(unique(&format!("{}{}", c.name, helper.suffix), &mut taken));
            }
        }
        let width = columns.len() + columns.iter().filter(|c| c.helper.is_some()).count() + 3;
        if width > MAX_COLUMNS {
            return Err(format!("the view needs {width} SQLite columns; SQLite allows {MAX_COLUMNS}"));
        }

        let t = quote(table);
        let (key, copies, exact) = (quote(COL_KEY), quote(COL_COPIES), quote(COL_EXACT));
        let mut defs = Vec::new();
        let mut add_helpers = Vec::new();
        for c in &columns {
            defs.push(format!("{} {}", quote(&c.name), c.kind.sql_type()));
            if let (Some(name), Some(helper), Some(expr)) =
                (&c.helper, c.kind.helper(), c.kind.helper_expr(&quote(&c.name)))
            {
                add_helpers.push(format!(
                    "ALTER TABLE {t} ADD COLUMN {} {} GENERATED ALWAYS AS ({expr}) VIRTUAL",
                    quote(name),
                    helper.sql_type
                ));
            }
        }
        defs.push(format!("{key} BLOB NOT NULL PRIMARY KEY"));
        if full_row {
            defs.push(format!("{copies} INTEGER NOT NULL"));
        }
        defs.push(format!("{exact} BLOB"));
        let create = format!("CREATE TABLE {t} ({}) WITHOUT ROWID", defs.join(", "));

        // Written and read: the user columns, the key, the count, the exact row.
        let mut names: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
        names.push(key.clone());
        if full_row {
            names.push(copies.clone());
        }
        names.push(exact.clone());
        let list = names.join(", ");
        let params = (1..=names.len()).map(|i| format!("?{i}")).collect::<Vec<_>>().join(", ");
        let upsert = format!("INSERT OR REPLACE INTO {t} ({list}) VALUES ({params})");
        let add = if full_row {
            format!(
                "INSERT INTO {t} ({list}) VALUES ({params}) ON CONFLICT ({key}) DO UPDATE SET \
                 {copies} = {copies} + excluded.{copies}"
            )
        } else {
            upsert.clone()
        };
        // The read list leaves out the key, which callers already have.
        let mut read: Vec<String> = columns.iter().map(|c| quote(&c.name)).collect();
        if full_row {
            read.push(copies.clone());
        }
        read.push(exact);
        let read = read.join(", ");
        let select_one = format!("SELECT {read} FROM {t} WHERE {key} = ?1");
        let scan = |start: bool, end: bool| {
            let mut conditions = Vec::new();
            let mut n = 0;
            let mut next = || {
                n += 1;
                n
            };
            if start {
                conditions.push(format!("{key} >= ?{}", next()));
            }
            if end {
                conditions.push(format!("{key} < ?{}", next()));
            }
            let filter =
                if conditions.is_empty() { String::new() } else { format!(" WHERE {}", conditions.join(" AND ")) };
            format!("SELECT {read} FROM {t}{filter} ORDER BY {key} LIMIT ?{}", next())
        };
        let count = if full_row {
            format!("SELECT coalesce(sum({copies}), 0) FROM {t}")
        } else {
            format!("SELECT count(*) FROM {t}")
        };
        Ok(Plan {
            table: table.to_owned(),
            schema: schema.clone(),
            create,
            add_helpers,
            upsert,
            add,
            delete_one: format!("DELETE FROM {t} WHERE {key} = ?1"),
            clear: format!("DELETE FROM {t}"),
            count,
            scans: [scan(false, false), scan(false, true), scan(true, false), scan(true, true)],
            select_one,
            columns,
        })
    }

    /// The same copy under another table name (after a publish or a rename).
    pub(crate) fn renamed(&self, table: &str) -> Result<Plan, String> {
        Plan::new(table, &self.schema)
    }

    /// Whether rows carry a copy count.
    pub(crate) fn full_row(&self) -> bool {
        self.schema.identity == Identity::FullRow
    }

    /// The scan statement for the given bounds.
    pub(crate) fn scan(&self, start: bool, end: bool) -> &str {
        let i = usize::from(start) * 2 + usize::from(end);
        self.scans.get(i).map_or("", String::as_str)
    }

    /// The parameters of `upsert` / `add` for `copies` copies of `row` under
    /// `key`. `exact` must be [`Plan::exact`] of the row.
    pub(crate) fn params<'a>(
        &self,
        key: &'a [u8],
        row: &'a Row,
        copies: i64,
        exact: Option<&'a [u8]>,
    ) -> Vec<ToSqlOutput<'a>> {
        let mut out: Vec<ToSqlOutput<'a>> = Vec::with_capacity(row.0.len() + 3);
        out.extend(row.0.iter().map(|v| ToSqlOutput::Borrowed(to_sql(v))));
        out.push(ToSqlOutput::Borrowed(ValueRef::Blob(key)));
        if self.full_row() {
            out.push(ToSqlOutput::Borrowed(ValueRef::Integer(copies)));
        }
        out.push(ToSqlOutput::Borrowed(exact.map_or(ValueRef::Null, ValueRef::Blob)));
        out
    }

    /// The row's exact encoding, when one of its values does not read back
    /// exactly from its column; `None` when the columns suffice.
    pub(crate) fn exact(&self, row: &Row) -> Option<Vec<u8>> {
        let fits = self.columns.iter().zip(&row.0).all(|(c, v)| c.kind.fits(v));
        (!fits).then(|| encode_row(row))
    }

    /// Checks a row's width against the schema.
    pub(crate) fn check_width(&self, row: &Row) -> Result<(), String> {
        self.schema.check(row.0.len()).map_err(|e| e.to_string())
    }

    /// Decodes one row read with a `select_one` or scan statement: the row
    /// and its number of copies.
    pub(crate) fn decode(&self, r: &rusqlite::Row<'_>) -> Result<(Row, u64), String> {
        let n = self.columns.len();
        let get = |i: usize| r.get_ref(i).map_err(|e| format!("column {i}: {e}"));
        let (copies, exact_at) = if self.full_row() {
            let copies = match get(n)? {
                ValueRef::Integer(c) if c > 0 => c as u64,
                other => return Err(format!("copy count of {} {other:?}", class_name(other))),
            };
            (copies, n + 1)
        } else {
            (1, n)
        };
        match get(exact_at)? {
            ValueRef::Blob(bytes) => {
                let row = decode_row(bytes).map_err(|e| format!("exact row: {e}"))?;
                self.check_width(&row).map_err(|e| format!("exact row: {e}"))?;
                Ok((row, copies))
            }
            ValueRef::Null => {
                let mut values: Vec<Value> = Vec::with_capacity(n);
                for (i, c) in self.columns.iter().enumerate() {
                    let v = get(i)?;
                    values.push(c.kind.read(v).ok_or_else(|| {
                        format!("column {:?} ({:?}) holds a {} value", c.name, c.kind, class_name(v))
                    })?);
                }
                Ok((Row(values), copies))
            }
            other => Err(format!("exact row stored as {}", class_name(other))),
        }
    }
}

/// `base`, or `base_2`, `base_3`, ... : the first not in `taken`
/// (case-insensitively, as SQLite compares names), which it joins.
fn unique(base: &str, taken: &mut HashSet<String>) -> String {
    let mut candidate = base.to_owned();
    let mut n = 1;
    while taken.contains(&candidate.to_ascii_lowercase()) {
        n += 1;
        candidate = format!("{base}_{n}");
    }
    taken.insert(candidate.to_ascii_lowercase());
    candidate
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashsync_core::{Column, SourceRelId};

    fn cols(specs: &[(&str, &str)]) -> Vec<Column> {
        specs.iter().map(|(n, t)| Column { name: (*n).into(), type_name: (*t).into() }).collect()
    }

    #[test]
    fn names_are_unique_case_insensitively_and_never_ours() {
        let schema = RelationSchema::keyed(
            SourceRelId(1),
            cols(&[
                ("id", "int8"),
                ("ID", "text"),
                ("price", "numeric"),
                ("price_real", "text"),
                ("_flashsync_key", "text"),
            ]),
            vec![0],
        );
        let plan = Plan::new("public.t", &schema).expect("plan");
        let names: Vec<&str> = plan.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["id", "ID_2", "price", "price_real", "_flashsync_key_2"]);
        assert_eq!(plan.columns[2].helper.as_deref(), Some("price_real_2"));
        let conn = rusqlite::Connection::open_in_memory().expect("sqlite");
        conn.execute_batch(&plan.create).expect("the table can be created");
        for sql in &plan.add_helpers {
            conn.execute_batch(sql).expect("the helpers can be added");
        }
        for start in [false, true] {
            for end in [false, true] {
                conn.prepare(plan.scan(start, end)).expect("scan statement");
            }
        }
        for sql in [&plan.upsert, &plan.add, &plan.select_one, &plan.delete_one, &plan.clear, &plan.count] {
            conn.prepare(sql).expect("statement");
        }
    }

    #[test]
    fn refuses_what_sqlite_cannot_take() {
        let nul = RelationSchema::keyed(SourceRelId(1), cols(&[("a\0b", "text")]), vec![0]);
        assert!(Plan::new("t", &nul).is_err());
        let wide: Vec<(String, String)> = (0..1500).map(|i| (format!("c{i}"), "numeric".to_owned())).collect();
        let wide: Vec<(&str, &str)> = wide.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
        assert!(Plan::new("t", &RelationSchema::keyed(SourceRelId(1), cols(&wide), vec![0])).is_err());
    }
}
