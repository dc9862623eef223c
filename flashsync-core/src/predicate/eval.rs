//! The bound form of a filter and its three-valued evaluation on rows.
//!
//! Every decision that depends on types (operator, domain, how to read each
//! column, literal values) was made when binding; evaluating only reads the
//! row's values and compares. A value that is not what its column's type
//! produces (the wrong [`Value`] variant, unparseable text) makes the whole
//! verdict NULL: such a row cannot come from the source, and the verdict
//! must never be a guess.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

use super::datetime::{self, Kind};
use super::decimal::Decimal;
use super::expr::CmpOp;
use super::input;
use super::like::Pattern;
use super::scalar::{compare, Domain, Scalar, V};
use crate::value::Value;

/// A boolean expression, bound.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Node {
    Const(Option<bool>),
    /// A bool column used as a condition.
    Column(usize),
    Not(Box<Node>),
    And(Vec<Node>),
    Or(Vec<Node>),
    Cmp {
        op: CmpOp,
        domain: Domain,
        left: Operand,
        right: Operand,
    },
    /// `IS [NOT] DISTINCT FROM`: `not` is the NOT form (equal-or-both-NULL).
    Distinct {
        not: bool,
        domain: Domain,
        left: Operand,
        right: Operand,
    },
    IsNull {
        operand: Operand,
        negated: bool,
    },
    IsBool {
        node: Box<Node>,
        value: Option<bool>,
        negated: bool,
    },
    /// `pattern` None: a NULL pattern, so the result is NULL.
    Like {
        operand: Operand,
        pattern: Option<Pattern>,
        negated: bool,
    },
}

/// One side of a comparison.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) enum Operand {
    /// A constant already converted to the comparison's domain (None: NULL).
    Const(Option<Scalar>),
    /// A column, read and converted as `read` says.
    Column { index: usize, read: Read },
    /// A boolean expression compared as a bool.
    Bool(Box<Node>),
}

/// How a column's [`Value`] becomes a comparable value: the source's mapping
/// of its type, plus the implicit cast the operator applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) enum Read {
    Int,
    /// An integer column compared as numeric (exact).
    IntAsNumeric,
    /// An integer column compared as float4 (rounded as `(float4) i`).
    IntAsFloat4,
    /// An integer column compared as float8 (rounded as `(float8) i`).
    IntAsFloat8,
    /// numeric text.
    Numeric,
    /// float4 (widened by the source) or float8.
    Float,
    Bool,
    Text,
    /// bpchar compared without its trailing spaces (`bpchareq`, or the cast
    /// to text).
    TrimmedText,
    Date,
    Timestamp,
    Timestamptz,
    Uuid,
}

/// A row value that is not what its column's type produces.
pub(crate) struct Bad;

type R<T> = Result<T, Bad>;

impl Read {
    fn read<'a>(self, v: &'a Value) -> R<Option<V<'a>>> {
        let time = |kind, v: &str| datetime::parse_output(kind, v).map(V::Time).ok_or(Bad);
        Ok(Some(match (self, v) {
            (_, Value::Null) => return Ok(None),
            (Read::Int, Value::Int(i)) => V::Int(*i),
            (Read::IntAsNumeric, Value::Int(i)) => V::Num(Cow::Owned(Decimal::from_i64(*i))),
            (Read::IntAsFloat4, Value::Int(i)) => V::Float(f64::from(*i as f32)),
            (Read::IntAsFloat8, Value::Int(i)) => V::Float(*i as f64),
            (Read::Numeric, Value::Text(s)) => V::Num(Cow::Owned(Decimal::parse_output(s).ok_or(Bad)?)),
            (Read::Float, Value::Float(f)) => V::Float(*f),
            (Read::Bool, Value::Bool(b)) => V::Bool(*b),
            (Read::Text, Value::Text(s)) => V::Text(s),
            (Read::TrimmedText, Value::Text(s)) => V::Text(s.trim_end_matches(' ')),
            (Read::Date, Value::Text(s)) => time(Kind::Date, s)?,
            (Read::Timestamp, Value::Text(s)) => time(Kind::Timestamp, s)?,
            (Read::Timestamptz, Value::Text(s)) => time(Kind::Timestamptz, s)?,
            (Read::Uuid, Value::Text(s)) => V::Uuid(input::uuid(s).ok_or(Bad)?),
            _ => return Err(Bad),
        }))
    }
}

impl Operand {
    fn read<'a>(&'a self, row: &'a [Value]) -> R<Option<V<'a>>> {
        match self {
            Operand::Const(c) => Ok(c.as_ref().map(Scalar::as_v)),
            // Past the row's end reads as NULL (a row from an older, narrower
            // shape of the relation).
            Operand::Column { index, read } => row.get(*index).map_or(Ok(None), |v| read.read(v)),
            Operand::Bool(node) => Ok(node.eval(row)?.map(V::Bool)),
        }
    }
}

impl Node {
    /// Three-valued evaluation.
    pub(crate) fn eval(&self, row: &[Value]) -> R<Option<bool>> {
        Ok(match self {
            Node::Const(c) => *c,
            Node::Column(i) => match row.get(*i) {
                None | Some(Value::Null) => None,
                Some(Value::Bool(b)) => Some(*b),
                Some(_) => return Err(Bad),
            },
            Node::Not(n) => n.eval(row)?.map(|b| !b),
            Node::And(ns) => {
                // FALSE wins over NULL; NULL over TRUE.
                let mut null = false;
                for n in ns {
                    match n.eval(row)? {
                        Some(false) => return Ok(Some(false)),
                        None => null = true,
                        Some(true) => {}
                    }
                }
                (!null).then_some(true)
            }
            Node::Or(ns) => {
                // TRUE wins over NULL; NULL over FALSE.
                let mut null = false;
                for n in ns {
                    match n.eval(row)? {
                        Some(true) => return Ok(Some(true)),
                        None => null = true,
                        Some(false) => {}
                    }
                }
                if null {
                    None
                } else {
                    Some(false)
                }
            }
            Node::Cmp { op, left, right, .. } => match (left.read(row)?, right.read(row)?) {
                (Some(a), Some(b)) => Some(op.test(compare(&a, &b).ok_or(Bad)?)),
                _ => None,
            },
            Node::Distinct { not, left, right, .. } => {
                let distinct = match (left.read(row)?, right.read(row)?) {
                    (None, None) => false,
                    (Some(a), Some(b)) => compare(&a, &b).ok_or(Bad)? != std::cmp::Ordering::Equal,
                    _ => true,
                };
                Some(distinct != *not)
            }
            Node::IsNull { operand, negated } => Some(operand.read(row)?.is_none() != *negated),
            Node::IsBool { node, value, negated } => Some((node.eval(row)? == *value) != *negated),
            Node::Like { operand, pattern, negated } => match (operand.read(row)?, pattern) {
                (Some(V::Text(s)), Some(p)) => Some(p.matches(s) != *negated),
                (Some(V::Text(_)), None) | (None, _) => None,
                (Some(_), _) => return Err(Bad),
            },
        })
    }
}
