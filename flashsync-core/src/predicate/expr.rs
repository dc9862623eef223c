//! The filter language's syntax tree: what a user wrote, validated and
//! normalized, before any schema is known. Literals keep their source text
//! (so rendering is faithful and the tree has exact equality); their values
//! are computed when bound.

use super::types::SqlType;

/// A filter expression.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Expr {
    /// A column, by its resolved name (unquoted identifiers folded).
    Column(String),
    /// A constant.
    Lit(Literal),
    /// `NOT e`.
    Not(Box<Expr>),
    /// `a AND b AND ...` (two or more).
    And(Vec<Expr>),
    /// `a OR b OR ...` (two or more).
    Or(Vec<Expr>),
    /// `l op r`.
    Cmp { op: CmpOp, left: Box<Expr>, right: Box<Expr> },
    /// `l IS [NOT] DISTINCT FROM r`.
    Distinct { not: bool, left: Box<Expr>, right: Box<Expr> },
    /// `e [NOT] IN (list)`.
    In { expr: Box<Expr>, list: Vec<Expr>, negated: bool },
    /// `e [NOT] [I]LIKE pattern [ESCAPE escape]`.
    Like { expr: Box<Expr>, pattern: Literal, escape: Option<String>, negated: bool, ilike: bool },
    /// `e IS [NOT] NULL`.
    IsNull { expr: Box<Expr>, negated: bool },
    /// `e IS [NOT] TRUE | FALSE | UNKNOWN` (`value` None is UNKNOWN).
    IsBool { expr: Box<Expr>, value: Option<bool>, negated: bool },
}

/// A comparison operator.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub(crate) enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl CmpOp {
    pub(crate) fn sql(self) -> &'static str {
        match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        }
    }

    /// Whether the operator orders (rather than only tests equality).
    pub(crate) fn orders(self) -> bool {
        !matches!(self, CmpOp::Eq | CmpOp::Ne)
    }

    pub(crate) fn test(self, ord: std::cmp::Ordering) -> bool {
        use std::cmp::Ordering::*;
        match self {
            CmpOp::Eq => ord == Equal,
            CmpOp::Ne => ord != Equal,
            CmpOp::Lt => ord == Less,
            CmpOp::Le => ord != Greater,
            CmpOp::Gt => ord == Greater,
            CmpOp::Ge => ord != Less,
        }
    }
}

/// A constant as written.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Literal {
    /// `NULL` (type unknown until context decides).
    Null,
    /// `TRUE` / `FALSE`.
    Bool(bool),
    /// A numeric constant as written (`42`, `1.5`, `1e3`), with a leading
    /// `-` when negated: Postgres folds a unary minus into the constant.
    /// Digits only and fitting int4 is an int4, int8 next, numeric otherwise
    /// (and always numeric with a `.` or an exponent).
    Number(String),
    /// A string constant, of unknown type until compared.
    Str(String),
    /// `inner::type` (also `CAST(inner AS type)` and `type 'text'`).
    Cast(Box<Literal>, SqlType),
    /// `-inner` where inner is a cast: Postgres negates the cast value.
    Neg(Box<Literal>),
}

impl Expr {
    /// Column names in first-appearance order (with repeats).
    pub(crate) fn visit_columns<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Expr::Column(name) => out.push(name),
            Expr::Lit(_) => {}
            Expr::Not(e) => e.visit_columns(out),
            Expr::And(v) | Expr::Or(v) => v.iter().for_each(|e| e.visit_columns(out)),
            Expr::Cmp { left, right, .. } | Expr::Distinct { left, right, .. } => {
                left.visit_columns(out);
                right.visit_columns(out);
            }
            Expr::In { expr, list, .. } => {
                expr.visit_columns(out);
                list.iter().for_each(|e| e.visit_columns(out));
            }
            Expr::Like { expr, .. } | Expr::IsNull { expr, .. } | Expr::IsBool { expr, .. } => expr.visit_columns(out),
        }
    }

    /// Whether the expression reads no column (Postgres' "non-Var" IN items).
    pub(crate) fn is_constant(&self) -> bool {
        let mut v = Vec::new();
        self.visit_columns(&mut v);
        v.is_empty()
    }
}
