//! Binding: column names to positions in the upstream row, and Postgres'
//! type resolution applied to every operator, so evaluation only compares.

use std::collections::BTreeSet;

use super::eval::{Node, Operand, Read};
use super::expr::{CmpOp, Expr, Literal};
use super::input::{self, Datum};
use super::like::{Pattern, PatternError};
use super::render;
use super::scalar::{Domain, Scalar};
use super::types::{common_type, resolve_cmp, SqlType};
use super::PredicateError;
use crate::schema::Column;

/// A value-producing expression, typed.
#[derive(Clone)]
enum Typed {
    Const {
        datum: Datum,
        shown: String,
    },
    Column {
        index: usize,
        ty: SqlType,
        name: String,
    },
    /// A boolean expression (comparison, AND, ...).
    Bool(Node),
}

impl Typed {
    fn ty(&self) -> SqlType {
        match self {
            Typed::Const { datum, .. } => datum.ty,
            Typed::Column { ty, .. } => *ty,
            Typed::Bool(_) => SqlType::Bool,
        }
    }

    /// How messages name it.
    fn shown(&self) -> String {
        match self {
            Typed::Const { shown, .. } => shown.clone(),
            Typed::Column { name, .. } => format!("column \"{name}\""),
            Typed::Bool(_) => "a boolean expression".into(),
        }
    }
}

pub(crate) struct Binder<'c> {
    columns: &'c [Column],
    pub(crate) used: BTreeSet<usize>,
}

/// How a column of type `from` is read where the operator takes `to`; `None`
/// where Postgres' implicit cast could fail at run time on some row
/// (numeric → float8 overflows), which would make the snapshot query fail.
fn read_plan(from: SqlType, to: SqlType) -> Option<Read> {
    use SqlType::*;
    Some(match (from, to) {
        (Int2 | Int4 | Int8, Int2 | Int4 | Int8) => Read::Int,
        (Int2 | Int4 | Int8, Numeric) => Read::IntAsNumeric,
        (Int2 | Int4 | Int8, Float4) => Read::IntAsFloat4,
        (Int2 | Int4 | Int8, Float8) => Read::IntAsFloat8,
        (Numeric, Numeric) => Read::Numeric,
        (Float4, Float4 | Float8) | (Float8, Float8) => Read::Float,
        (Bool, Bool) => Read::Bool,
        (Bpchar, Text | Varchar | Bpchar) | (Text | Varchar, Bpchar) => Read::TrimmedText,
        (Text | Varchar, Text | Varchar) => Read::Text,
        (Date, Date | Timestamp | Timestamptz) => Read::Date,
        (Timestamp, Timestamp | Timestamptz) => Read::Timestamp,
        (Timestamptz, Timestamptz) => Read::Timestamptz,
        (Uuid, Uuid) => Read::Uuid,
        _ => return None,
    })
}

/// The natural read of a column (for IS NULL): its own type.
fn natural_read(ty: SqlType) -> Option<Read> {
    read_plan(ty, ty)
}

impl<'c> Binder<'c> {
    pub(crate) fn new(columns: &'c [Column]) -> Self {
        Binder { columns, used: BTreeSet::new() }
    }

    fn column(&mut self, name: &str) -> Result<Typed, PredicateError> {
        let Some(index) = self.columns.iter().position(|c| c.name == name) else {
            return Err(PredicateError::UnknownColumn { name: name.to_owned() });
        };
        let type_name = self.columns.get(index).map(|c| c.type_name.as_str()).unwrap_or_default();
        let ty = SqlType::from_typname(type_name).ok_or_else(|| PredicateError::UnsupportedType {
            column: name.to_owned(),
            type_name: type_name.to_owned(),
        })?;
        self.used.insert(index);
        Ok(Typed::Column { index, ty, name: name.to_owned() })
    }

    fn value(&mut self, e: &Expr) -> Result<Typed, PredicateError> {
        match e {
            Expr::Column(name) => self.column(name),
            Expr::Lit(lit) => Ok(Typed::Const { datum: input::literal(lit)?, shown: render::shown(lit) }),
            _ => Ok(Typed::Bool(self.boolean(e)?)),
        }
    }

    /// A condition: an expression of type bool.
    pub(crate) fn boolean(&mut self, e: &Expr) -> Result<Node, PredicateError> {
        Ok(match e {
            Expr::Column(_) | Expr::Lit(_) => match self.value(e)? {
                Typed::Column { index, ty: SqlType::Bool, .. } => Node::Column(index),
                Typed::Const { datum: Datum { ty: SqlType::Bool | SqlType::Unknown, val: None }, .. } => {
                    Node::Const(None)
                }
                Typed::Const { datum: Datum { ty: SqlType::Bool, val: Some(Scalar::Bool(b)) }, .. } => {
                    Node::Const(Some(b))
                }
                other => {
                    return Err(PredicateError::type_error(format!(
                        "{} is not a boolean condition (write a comparison, or TRUE/FALSE)",
                        other.shown()
                    )))
                }
            },
            Expr::Not(inner) => Node::Not(Box::new(self.boolean(inner)?)),
            Expr::And(v) => Node::And(v.iter().map(|e| self.boolean(e)).collect::<Result<_, _>>()?),
            Expr::Or(v) => Node::Or(v.iter().map(|e| self.boolean(e)).collect::<Result<_, _>>()?),
            Expr::Cmp { op, left, right } => {
                let (l, r) = (self.value(left)?, self.value(right)?);
                self.compare(*op, l, r, false)?
            }
            Expr::Distinct { not, left, right } => {
                let (l, r) = (self.value(left)?, self.value(right)?);
                match self.compare(CmpOp::Eq, l, r, true)? {
                    Node::Cmp { domain, left, right, .. } => Node::Distinct { not: *not, domain, left, right },
                    other => other,
                }
            }
            Expr::In { expr, list, negated } => {
                let node = self.in_list(expr, list)?;
                if *negated {
                    Node::Not(Box::new(node))
                } else {
                    node
                }
            }
            Expr::Like { expr, pattern, escape, negated, ilike } => {
                self.like(expr, pattern, escape, *negated, *ilike)?
            }
            Expr::IsNull { expr, negated } => {
                let operand = match self.value(expr)? {
                    Typed::Const { datum, .. } => Operand::Const(datum.val),
                    Typed::Column { index, ty, .. } => {
                        Operand::Column { index, read: natural_read(ty).unwrap_or(Read::Text) }
                    }
                    Typed::Bool(node) => Operand::Bool(Box::new(node)),
                };
                Node::IsNull { operand, negated: *negated }
            }
            Expr::IsBool { expr, value, negated } => {
                Node::IsBool { node: Box::new(self.boolean(expr)?), value: *value, negated: *negated }
            }
        })
    }

    /// One side of an operator taking `to`.
    fn operand(&self, t: Typed, to: SqlType, other: &str) -> Result<Operand, PredicateError> {
        let from = t.ty();
        Ok(match t {
            Typed::Const { datum, shown } => {
                let d = input::coerce(&datum, to).map_err(|why| {
                    PredicateError::type_error(format!("{other} is {} but {shown} is {why}", to.name()))
                })?;
                // bpchar comparisons ignore trailing spaces, as does the cast
                // from bpchar to text.
                let trim = to == SqlType::Bpchar || from == SqlType::Bpchar;
                Operand::Const(d.val.map(|v| match v {
                    Scalar::Text(s) if trim => Scalar::Text(s.trim_end_matches(' ').to_owned()),
                    v => v,
                }))
            }
            Typed::Column { index, ty, name } => {
                let read = read_plan(ty, to).ok_or_else(|| {
                    PredicateError::type_error(format!(
                        "column \"{name}\" is {} and would be converted to {} for each row, which can fail; \
                         compare it with a {} literal",
                        ty.name(),
                        to.name(),
                        ty.name()
                    ))
                })?;
                Operand::Column { index, read }
            }
            Typed::Bool(node) => Operand::Bool(Box::new(node)),
        })
    }

    fn compare(&mut self, op: CmpOp, l: Typed, r: Typed, distinct: bool) -> Result<Node, PredicateError> {
        let (lt, rt) = (l.ty(), r.ty());
        let shown = |t: &Typed| t.shown();
        let Some((a, b)) = resolve_cmp(lt, rt) else {
            let what = if distinct { "IS DISTINCT FROM" } else { op.sql() };
            return Err(PredicateError::type_error(format!(
                "cannot compare {} with {} (Postgres has no operator {} {what} {}{})",
                shown(&l),
                shown(&r),
                lt.name(),
                rt.name(),
                if lt == SqlType::Bool || rt == SqlType::Bool { "; write TRUE or FALSE" } else { "" }
            )));
        };
        if a.is_string() {
            if op.orders() {
                let column = match (&l, &r) {
                    (Typed::Column { name, .. }, _) | (_, Typed::Column { name, .. }) => name.clone(),
                    _ => shown(&l),
                };
                return Err(PredicateError::TextOrdering { column });
            }
            if let (Typed::Column { name: a, .. }, Typed::Column { name: b, .. }) = (&l, &r) {
                // The rendered SQL pins literals to the "C" collation; two
                // columns would compare under their own collations, which may
                // be non-deterministic (case-insensitive ICU) on the server.
                return Err(PredicateError::unsupported(format!(
                    "comparing text columns \"{a}\" and \"{b}\" (the result depends on their collations)"
                )));
            }
        }
        let (ls, rs) = (shown(&l), shown(&r));
        let left = self.operand(l, a, &rs)?;
        let right = self.operand(r, b, &ls)?;
        Ok(Node::Cmp { op, domain: Domain::of(a), left, right })
    }

    /// `e IN (list)` as Postgres transforms it: with two or more items that
    /// read no column, those are coerced to the common type of the left side
    /// and them (so `float4_col IN (1.1, 2)` reads 1.1 as a float4, while
    /// `float4_col IN (1.1)` is `float4_col = 1.1` and compares in float8);
    /// the other items are compared one by one. The result is their OR.
    fn in_list(&mut self, expr: &Expr, list: &[Expr]) -> Result<Node, PredicateError> {
        let lhs = self.value(expr)?;
        let mut items = Vec::with_capacity(list.len());
        for e in list {
            items.push((e.is_constant(), self.value(e)?));
        }
        let mut out = Vec::with_capacity(items.len());
        let constants = items.iter().filter(|(c, _)| *c).count();
        let mut common = None;
        if constants > 1 {
            let types: Vec<SqlType> =
                std::iter::once(lhs.ty()).chain(items.iter().filter(|(c, _)| *c).map(|(_, t)| t.ty())).collect();
            common = common_type(&types);
        }
        for (constant, item) in items {
            let item = match (common, constant, item) {
                (Some(c), true, Typed::Const { datum, shown }) => {
                    let datum = input::coerce(&datum, c).map_err(|why| {
                        PredicateError::type_error(format!(
                            "IN list item {shown} is {why} (the list's type is {})",
                            c.name()
                        ))
                    })?;
                    Typed::Const { datum, shown }
                }
                (_, _, item) => item,
            };
            out.push(self.compare(CmpOp::Eq, lhs.clone(), item, false)?);
        }
        Ok(if out.len() == 1 { out.remove(0) } else { Node::Or(out) })
    }

    fn like(
        &mut self,
        expr: &Expr,
        pattern: &Literal,
        escape: &Option<String>,
        negated: bool,
        ilike: bool,
    ) -> Result<Node, PredicateError> {
        let what = if ilike { "ILIKE" } else { "LIKE" };
        let operand = match self.value(expr)? {
            Typed::Column { index, ty, .. } if ty.is_string() => Operand::Column { index, read: Read::Text },
            Typed::Const { datum: Datum { ty, val }, .. } if ty.is_string() || ty == SqlType::Unknown => {
                Operand::Const(val)
            }
            other => {
                return Err(PredicateError::type_error(format!(
                    "{what} applies to text, not to {} ({})",
                    other.shown(),
                    other.ty().name()
                )))
            }
        };
        let pat = input::literal(pattern)?;
        if !(pat.ty == SqlType::Unknown || pat.ty == SqlType::Text) {
            return Err(PredicateError::type_error(format!("a {what} pattern is text, not {}", pat.ty.name())));
        }
        let escape = match escape.as_deref() {
            None => Some('\\'),
            Some(e) => {
                let mut chars = e.chars();
                match (chars.next(), chars.next()) {
                    (None, _) => None,
                    (Some(c), None) => Some(c),
                    _ => return Err(PredicateError::type_error(format!("ESCAPE '{e}' is not a single character"))),
                }
            }
        };
        let pattern = match pat.val {
            Some(Scalar::Text(p)) => {
                if ilike && p.chars().any(|c| !c.is_ascii() && (c.to_lowercase().ne([c]) || c.to_uppercase().ne([c]))) {
                    return Err(PredicateError::unsupported(format!(
                        "ILIKE pattern '{p}' with non-ASCII letters (case folding beyond ASCII depends on the \
                         server's locale; use LIKE)"
                    )));
                }
                Some(Pattern::compile(&p, escape, ilike).map_err(|PatternError::TrailingEscape| {
                    PredicateError::type_error(format!("{what} pattern '{p}' ends with its escape character"))
                })?)
            }
            _ => None,
        };
        Ok(Node::Like { operand, pattern, negated })
    }
}
