//! Parsing, refusals, rendering and binding.

use super::*;

fn col(name: &str, ty: &str) -> Column {
    Column { name: name.into(), type_name: ty.into() }
}

fn refused(text: &str) -> PredicateError {
    match Predicate::parse(text) {
        Ok(p) => panic!("{text:?} was accepted as {p:?}"),
        Err(e) => e,
    }
}

fn sql(text: &str) -> String {
    Predicate::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}")).to_sql()
}

#[test]
fn hostile_filters_are_refused_by_name() {
    let e = refused("1=1; DROP TABLE t");
    assert_eq!(e, PredicateError::Unsupported { construct: "`;`".into() });
    assert!(e.to_string().contains("`;`"), "{e}");
    assert_eq!(refused("id = 1;"), PredicateError::Unsupported { construct: "`;`".into() });
    assert_eq!(refused("id = 1 OR (SELECT 1) = 1"), PredicateError::Unsupported { construct: "subquery".into() });
    assert_eq!(refused("id IN (SELECT id FROM t)"), PredicateError::Unsupported { construct: "subquery".into() });
    assert_eq!(refused("EXISTS (SELECT 1)"), PredicateError::Unsupported { construct: "subquery".into() });
    assert!(refused("lower(name) = 'x'").to_string().contains("lower()"));
    assert!(refused("pg_sleep(10) IS NULL").to_string().contains("pg_sleep()"));
    assert!(refused("CASE WHEN a THEN b END").to_string().contains("CASE"));
    assert!(refused("a = $1").to_string().contains("$1"));
    assert!(refused("a + 1 = 2").to_string().contains("operator +"));
    assert!(refused("a || 'x' = 'y'").to_string().contains("operator ||"));
    assert!(refused("doc -> 'k' = 'v'").to_string().contains("->"));
    assert!(refused("t.a = 1").to_string().contains("t.a"));
    assert!(refused("a = 1 b").to_string().contains("syntax"));
    assert!(refused("a = 'x' COLLATE \"de_DE\"").to_string().contains("COLLATE"));
    assert!(refused("a::text = 'x'").to_string().contains("column \"a\""));
    assert!(refused("ts > now()").to_string().contains("now()"));
    assert!(refused("d = current_date").to_string().contains("current_date"));
    assert!(refused("a = E'\\n'").to_string().contains("E''"));
    assert!(refused("a = ANY(ARRAY[1])").to_string().contains("ANY"));
    assert!(refused("a SIMILAR TO 'x'").to_string().contains("SIMILAR TO"));
    assert!(refused("a = 0x1F").to_string().contains("0x1F"));
    assert!(refused("a = '1'::numeric(10,2)").to_string().contains("cast to"));
    assert!(refused("a = 'x'::json").to_string().contains("cast to"));
    assert!(refused("a = '1'::int4::int8").to_string().contains("cast of a cast"));
    assert!(refused("a = -'1'").to_string().contains("unary minus"));
    assert!(refused("ts > 'now'::timestamptz").to_string().contains("depends on when"));
    assert!(refused("d = 'today'::date").to_string().contains("depends on when"));
    assert!(refused("a = 'abc'::int4").to_string().contains("'abc'"));
    assert!(refused("a = 2147483648::int4").to_string().contains("out of range"));
    assert!(refused("a = 1.5::int4").to_string().contains("integral"));
    assert!(refused("a = 1e400::float8").to_string().contains("out of range"));
    assert_eq!(refused(""), PredicateError::Empty);
    assert_eq!(refused("  -- nothing\n /* at all */ "), PredicateError::Empty);
    assert!(refused("a = 'x\0'").to_string().contains("NUL"));
    assert!(matches!(refused(&"(".repeat(200)), PredicateError::Syntax { .. } | PredicateError::Unsupported { .. }));
    assert!(refused(&format!("\"{}\" = 1", "x".repeat(64))).to_string().contains("63"));
}

#[test]
fn refusals_never_panic_on_deep_or_long_input() {
    // Left-deep chains sqlparser builds without recursion must not
    // overflow anything here (they are bounded, flattened or refused).
    let and_chain = vec!["a = 1"; 2000].join(" AND ");
    assert_eq!(Predicate::parse(&and_chain).map(|p| p.columns().len()), Ok(1));
    let eq_chain = format!("a{}", " = a".repeat(4000));
    assert!(Predicate::parse(&eq_chain).is_err());
    let nots = format!("{}a", "NOT ".repeat(3000));
    assert!(Predicate::parse(&nots).is_err());
    let minus = format!("a = {}1", "- ".repeat(3000));
    assert!(Predicate::parse(&minus).is_err());
    assert!(Predicate::parse(&"x".repeat(parse::MAX_TEXT_BYTES + 1)).is_err());
    let big_in = format!("a IN ({})", (0..3000).map(|i| i.to_string()).collect::<Vec<_>>().join(", "));
    let p = Predicate::parse(&big_in).expect("a long IN list");
    assert_eq!(Predicate::parse(&p.to_sql()).map(|q| q.expr == p.expr), Ok(true));
}

#[test]
fn identifiers_fold_like_postgres_and_render_quoted() {
    let p = Predicate::parse(
        "Tenant_ID = 1 AND \"MixedCase\" = 2 AND \"naïve \"\"x\"\"\" = 3 AND Äb = 4 AND tenant_id > 0",
    )
    .unwrap();
    assert_eq!(p.columns(), ["tenant_id", "MixedCase", "naïve \"x\"", "Äb"]);
    assert_eq!(
        p.to_sql(),
        r#"(("tenant_id" = 1) AND ("MixedCase" = 2) AND ("naïve ""x""" = 3) AND ("Äb" = 4) AND ("tenant_id" > 0))"#
    );
    // Keywords and function-like names are columns once quoted.
    assert_eq!(
        sql("\"user\" = 'x' AND \"select\" IS NULL"),
        r#"(("user" = ('x' COLLATE "C")) AND ("select" IS NULL))"#
    );
}

#[test]
fn literals_render_safely() {
    assert_eq!(sql("name = 'it''s'"), r#"("name" = ('it''s' COLLATE "C"))"#);
    assert_eq!(sql(r"name = 'a\b'"), r#"("name" = ($fs$a\b$fs$ COLLATE "C"))"#);
    assert_eq!(sql(r"name = 'x$fs'''"), r#"("name" = ('x$fs''' COLLATE "C"))"#);
    // A dollar tag is never closed early by the text it quotes.
    assert_eq!(render::string(r"\$fs"), r"$fs1$\$fs$fs1$");
    assert_eq!(render::string(r"\$fs$"), r"$fs1$\$fs$$fs1$");
    assert_eq!(sql("name = $$a'b$$"), r#"("name" = ('a''b' COLLATE "C"))"#);
    assert_eq!(sql("n = -1.50 OR n = 1e3 OR n = - -2"), r#"(("n" = -1.50) OR ("n" = 1e3) OR ("n" = 2))"#);
    assert_eq!(sql("n = -1::int4"), r#"("n" = (-((1)::int4)))"#);
    assert_eq!(sql("n = (-1)::int4"), r#"("n" = ((-1)::int4))"#);
    assert_eq!(sql("d = date '2026-01-01'"), r#"("d" = ('2026-01-01'::date))"#);
    assert_eq!(
        sql("t = CAST('2026-01-01 10:00+02' AS timestamptz)"),
        r#"("t" = ('2026-01-01 10:00+02'::timestamptz))"#
    );
    assert_eq!(sql("s = 'x'::text"), r#"("s" = ('x'::text COLLATE "C"))"#);
    assert_eq!(sql("n = NULL::numeric"), r#"("n" = (NULL::numeric))"#);
    assert_eq!(sql("b IS NOT TRUE"), r#"("b" IS NOT TRUE)"#);
    assert_eq!(sql("x NOT BETWEEN 1 AND 5"), r#"(("x" < 1) OR ("x" > 5))"#);
    assert_eq!(sql("s NOT ILIKE 'a!%' ESCAPE '!'"), r#"("s" NOT ILIKE ('a!%' COLLATE "C") ESCAPE '!')"#);
    assert_eq!(
        sql("a IS DISTINCT FROM 1 AND NOT a IN (1, NULL)"),
        r#"(("a" IS DISTINCT FROM 1) AND (NOT ("a" IN (1, NULL))))"#
    );
}

#[test]
fn rendering_round_trips_to_the_same_tree() {
    for text in [
        "tenant_id = 42 AND status <> 'archived'",
        "a IN (1, 2.5, -3, 1e-3) OR b NOT IN ('x', NULL) OR c IS NULL",
        r"s LIKE 'a\%b_' OR s NOT LIKE 'x!%' ESCAPE '!' OR s ILIKE '%Q%' ESCAPE ''",
        "x BETWEEN -1 AND 1 AND NOT (y IS NOT DISTINCT FROM 'NaN'::numeric)",
        "-(1::int8) < a AND +2 > a AND - - -3 <> a AND -(-(1.5::float8)) = f",
        "ts >= timestamptz '2026-01-01 10:00+02' AND d < '2026-01-01'::date AND u = 'A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11'",
        "(a = 1) IS UNKNOWN OR (a = 1) = TRUE OR active OR NOT active IS FALSE",
        r"s = 'quote '' and \ backslash $fs$ dollar'",
        "\"we\"\"ird\" = 'é' COLLATE \"C\"",
    ] {
        let p = Predicate::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let rendered = p.to_sql();
        let back = Predicate::parse(&rendered).unwrap_or_else(|e| panic!("{text:?} renders as {rendered:?}: {e}"));
        assert_eq!(back.expr, p.expr, "{text:?} renders as {rendered:?}");
        assert_eq!(back.to_sql(), rendered);
    }
}

#[test]
fn predicates_serialize_as_their_text() {
    let p = Predicate::parse("  a = 1  ").unwrap();
    assert_eq!(p.text(), "a = 1");
    let text = String::from(p.clone());
    assert_eq!(text, "a = 1");
    let back: Predicate = Predicate::try_from(text).unwrap();
    assert_eq!(back, p);
    assert!(Predicate::try_from("a = (".to_owned()).is_err());
}

#[test]
fn binding_names_columns_and_types() {
    let cols = [col("id", "int8"), col("name", "text"), col("doc", "jsonb"), col("Flag", "bool"), col("n", "numeric")];
    let bound = Predicate::parse("\"Flag\" AND n > 1 AND id = 3").unwrap().bind(&cols).unwrap();
    assert_eq!(bound.columns(), [0, 3, 4]);
    let err = |t: &str| Predicate::parse(t).unwrap().bind(&cols).unwrap_err();
    assert_eq!(err("nope = 1"), PredicateError::UnknownColumn { name: "nope".into() });
    assert_eq!(err("flag"), PredicateError::UnknownColumn { name: "flag".into() });
    assert_eq!(err("doc IS NULL"), PredicateError::UnsupportedType { column: "doc".into(), type_name: "jsonb".into() });
    let e = err("id = 'abc'");
    assert!(e.to_string().contains("column \"id\""), "{e}");
    assert!(e.to_string().contains("'abc'"), "{e}");
    assert_eq!(err("name < 'm'"), PredicateError::TextOrdering { column: "name".into() });
    assert_eq!(err("name BETWEEN 'a' AND 'b'"), PredicateError::TextOrdering { column: "name".into() });
    assert!(err("name").to_string().contains("not a boolean"));
    assert!(err("id AND TRUE").to_string().contains("not a boolean"));
    assert!(err("name = 1").to_string().contains("cannot compare"));
    assert!(err("\"Flag\" = 1").to_string().contains("cannot compare"));
    assert!(err("id LIKE '1%'").to_string().contains("LIKE applies to text"));
    assert!(err(r"name LIKE 'a\'").to_string().contains("escape"));
    assert!(err("name ILIKE 'é%'").to_string().contains("non-ASCII"));
    assert!(err("name = name").to_string().contains("collations"));
    assert!(err("n = 1.5::float8").to_string().contains("can fail"));
    // Postgres resolves these without a problem.
    for ok in ["id = 1.5", "id > 99999999999999999999999", "id IN ('1', 2)", "name ILIKE 'Ab%'"] {
        Predicate::parse(ok).unwrap().bind(&cols).unwrap_or_else(|e| panic!("{ok:?}: {e}"));
    }
}

#[test]
fn bound_predicates_serialize_and_rebind() {
    let cols = [col("id", "int8"), col("name", "text"), col("n", "numeric")];
    let bound = Predicate::parse("n > 1 AND name = 'x'").unwrap().bind(&cols).unwrap();
    let source = BoundSource::from(bound.clone());
    assert_eq!(source.columns.iter().map(|(i, _)| *i).collect::<Vec<_>>(), [1, 2]);
    let back = BoundPredicate::try_from(source).unwrap();
    assert_eq!(back, bound);
    assert_eq!(back.predicate().text(), "n > 1 AND name = 'x'");
}

#[test]
fn nested_types_and_long_chains_are_refused_without_recursing() {
    let deep_array = format!("a = '{{}}'::int{}", "[]".repeat(3000));
    assert!(Predicate::parse(&deep_array).is_err());
    let casts = format!("a{}", "::int4".repeat(3000));
    assert!(Predicate::parse(&casts).is_err());
    let nulls = format!("a{}", " IS NULL".repeat(3000));
    assert!(Predicate::parse(&nulls).is_err());
}

#[test]
fn precedence_is_postgres_precedence() {
    // Postgres: unary minus > LIKE/IN/BETWEEN > comparison > IS > NOT > AND > OR.
    for (text, expected) in [
        ("x BETWEEN 1 AND 2 AND y", r#"((("x" >= 1) AND ("x" <= 2)) AND "y")"#),
        ("NOT a = 1 AND b", r#"((NOT ("a" = 1)) AND "b")"#),
        ("a = 1 IS NULL", r#"(("a" = 1) IS NULL)"#),
        ("NOT a IS NULL", r#"(NOT ("a" IS NULL))"#),
        ("a LIKE 'x' = b", r#"(("a" LIKE ('x' COLLATE "C")) = "b")"#),
        ("a IN (1) IS TRUE", r#"(("a" IN (1)) IS TRUE)"#),
        ("a OR b AND c", r#"("a" OR ("b" AND "c"))"#),
        ("NOT a OR b", r#"((NOT "a") OR "b")"#),
    ] {
        assert_eq!(sql(text), expected, "{text}");
    }
}

#[test]
fn whatever_parses_renders_to_sql_that_parses_the_same() {
    // Shapes whose SQL nests deeper than their text: chains, negations,
    // casts, IS tests, IN lists, at depths around the limits.
    let shapes: [fn(usize) -> String; 6] = [
        |n| format!("a{}", " = a".repeat(n)),
        |n| format!("{}a", "NOT ".repeat(n)),
        |n| format!("a = {}1::int4{}", "-(".repeat(n), ")".repeat(n)),
        |n| format!("a{}", " IS NULL".repeat(n)),
        |n| format!("{}a = 1{}", "a IN (TRUE, ".repeat(n), ")".repeat(n)),
        |n| format!("{}a{}", "(".repeat(n), ")".repeat(n)),
    ];
    for shape in shapes {
        for n in [1, 10, 20, 30, 31, 32, 33, 40, 60, 100, 127, 200] {
            let text = shape(n);
            if let Ok(p) = Predicate::parse(&text) {
                let sql = p.to_sql();
                let back = Predicate::parse(&sql).unwrap_or_else(|e| panic!("{text:?} renders as {sql:?}: {e}"));
                assert_eq!(back.expr, p.expr, "{text:?}");
            }
        }
    }
    // Parentheses alone are not nesting.
    assert!(Predicate::parse(&format!("{}a = 1{}", "(".repeat(100), ")".repeat(100))).is_ok());
    assert!(Predicate::parse(&format!("a{}", " = a".repeat(40))).is_err());
}
