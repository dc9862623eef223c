//! [`Expr`] → SQL for a `WHERE` clause, with the same meaning on the server
//! as the evaluator gives it.
//!
//! - Every identifier is double-quoted, so no name is a keyword, a function
//!   or a different case.
//! - Every operation is parenthesized, so precedence never matters.
//! - String literals are `'…'` with quotes doubled, or dollar-quoted when
//!   they contain a backslash, so `standard_conforming_strings` never
//!   matters; and they carry `COLLATE "C"`. That makes `=`, `IN` and
//!   `LIKE` compare bytes, as the evaluator does, even on a column with a
//!   non-deterministic collation, and `ILIKE` fold exactly the ASCII letters.
//!   On a literal that resolves to a non-string type Postgres drops the
//!   clause (it is pushed below the coercion of the unknown literal).
//! - Numeric constants keep their spelling (it decides their type), and
//!   casts and negations keep their nesting (`(-1)::int4` and `-(1::int4)`
//!   differ at the edges of the range).

use std::fmt::Write;

use super::expr::{Expr, Literal};

/// Appends `name` as a quoted identifier.
pub(crate) fn ident(out: &mut String, name: &str) {
    out.push('"');
    out.push_str(&name.replace('"', "\"\""));
    out.push('"');
}

/// `s` as a SQL string constant that reads back as exactly `s` whatever
/// `standard_conforming_strings` is.
pub(crate) fn string(s: &str) -> String {
    if !s.contains('\\') {
        return format!("'{}'", s.replace('\'', "''"));
    }
    // A dollar quote ends at the first `$tag$`: pick a tag whose first
    // occurrence in `s` + `$tag$` is the closing one.
    let mut n = 0u32;
    loop {
        let tag = if n == 0 { "$fs$".to_owned() } else { format!("$fs{n}$") };
        let closed = format!("{s}{tag}");
        if closed.find(&tag) == Some(s.len()) {
            return format!("{tag}{closed}");
        }
        n += 1;
    }
}

/// A literal as SQL.
pub(crate) fn literal(lit: &Literal) -> String {
    match lit {
        Literal::Null => "NULL".into(),
        Literal::Bool(true) => "TRUE".into(),
        Literal::Bool(false) => "FALSE".into(),
        Literal::Number(s) => s.clone(),
        Literal::Str(s) => format!("({} COLLATE \"C\")", string(s)),
        Literal::Cast(inner, ty) => {
            let inner = match inner.as_ref() {
                Literal::Str(s) => string(s),
                Literal::Number(s) => format!("({s})"),
                other => literal(other),
            };
            let collate = if *ty == super::types::SqlType::Text { " COLLATE \"C\"" } else { "" };
            format!("({inner}::{}{collate})", ty.name())
        }
        Literal::Neg(inner) => format!("(-{})", literal(inner)),
    }
}

/// A literal as messages show it (as written, without the pinned collation).
pub(crate) fn shown(lit: &Literal) -> String {
    match lit {
        Literal::Str(s) => string(s),
        Literal::Cast(inner, ty) => format!("{}::{}", shown(inner), ty.name()),
        Literal::Neg(inner) => format!("-({})", shown(inner)),
        other => literal(other),
    }
}

/// Appends `e` as SQL.
pub(crate) fn expr(out: &mut String, e: &Expr) {
    match e {
        Expr::Column(name) => ident(out, name),
        Expr::Lit(lit) => out.push_str(&literal(lit)),
        Expr::Not(inner) => {
            out.push_str("(NOT ");
            expr(out, inner);
            out.push(')');
        }
        Expr::And(parts) | Expr::Or(parts) => {
            let sep = if matches!(e, Expr::And(_)) { " AND " } else { " OR " };
            out.push('(');
            for (i, p) in parts.iter().enumerate() {
                if i > 0 {
                    out.push_str(sep);
                }
                expr(out, p);
            }
            out.push(')');
        }
        Expr::Cmp { op, left, right } => {
            out.push('(');
            expr(out, left);
            let _ = write!(out, " {} ", op.sql());
            expr(out, right);
            out.push(')');
        }
        Expr::Distinct { not, left, right } => {
            out.push('(');
            expr(out, left);
            out.push_str(if *not { " IS NOT DISTINCT FROM " } else { " IS DISTINCT FROM " });
            expr(out, right);
            out.push(')');
        }
        Expr::In { expr: x, list, negated } => {
            out.push('(');
            expr(out, x);
            out.push_str(if *negated { " NOT IN (" } else { " IN (" });
            for (i, item) in list.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                expr(out, item);
            }
            out.push_str("))");
        }
        Expr::Like { expr: x, pattern, escape, negated, ilike } => {
            out.push('(');
            expr(out, x);
            out.push_str(match (negated, ilike) {
                (false, false) => " LIKE ",
                (true, false) => " NOT LIKE ",
                (false, true) => " ILIKE ",
                (true, true) => " NOT ILIKE ",
            });
            out.push_str(&literal(pattern));
            if let Some(esc) = escape {
                out.push_str(" ESCAPE ");
                out.push_str(&string(esc));
            }
            out.push(')');
        }
        Expr::IsNull { expr: x, negated } => {
            out.push('(');
            expr(out, x);
            out.push_str(if *negated { " IS NOT NULL)" } else { " IS NULL)" });
        }
        Expr::IsBool { expr: x, value, negated } => {
            out.push('(');
            expr(out, x);
            out.push_str(if *negated { " IS NOT " } else { " IS " });
            out.push_str(match value {
                Some(true) => "TRUE)",
                Some(false) => "FALSE)",
                None => "UNKNOWN)",
            });
        }
    }
}
