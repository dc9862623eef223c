//! Text → [`Expr`]: sqlparser's Postgres dialect reads the SQL, and only the
//! constructs of the filter language are kept; everything else is refused
//! with its name.

use sqlparser::ast::{
    BinaryOperator, CastKind, DataType, ExactNumberInfo, Expr as Sql, Ident, InTarget, ObjectNamePart, TimezoneInfo,
    UnaryOperator, Value,
};
use sqlparser::dialect::PostgreSqlDialect;
use sqlparser::keywords::Keyword;
use sqlparser::parser::Parser;
use sqlparser::tokenizer::{Token, Tokenizer};

use super::expr::{CmpOp, Expr, Literal};
use super::input;
use super::render;
use super::types::SqlType;
use super::PredicateError;

/// Longest filter text accepted, in bytes (the filter's SQL too).
pub(crate) const MAX_TEXT_BYTES: usize = 64 * 1024;
/// Most tokens accepted (the filter's SQL too). Bounds the depth of the trees
/// sqlparser builds iteratively for left-associative chains (`a = b = c …`)
/// but drops recursively: 8192 levels stay well inside a 2 MiB stack.
const MAX_TOKENS: usize = 16 * 1024;
/// Deepest nesting of the filter's own tree (parentheses, and AND/OR chains,
/// which are flattened, do not count). The rendered SQL nests a few levels of
/// parentheses per level, well inside [`SQLPARSER_DEPTH`].
const MAX_DEPTH: usize = 32;
/// Longest run of prefix tokens (`NOT`, `-`, `+`, `(`) accepted: sqlparser
/// does not count `NOT` against its recursion limit.
const MAX_PREFIX_RUN: usize = 128;
/// sqlparser's recursion limit. Its `recursive-protection` grows the stack on
/// the heap, so this only bounds work; the default (50) would refuse the
/// parentheses of some accepted filters' own SQL.
const SQLPARSER_DEPTH: usize = 256;
/// Postgres truncates longer identifiers (NAMEDATALEN - 1).
const MAX_IDENT_BYTES: usize = 63;

/// SQL value functions Postgres reads from these bare keywords: a filter must
/// not depend on when or by whom it is evaluated.
const VALUE_FUNCTIONS: &[&str] = &[
    "current_date",
    "current_time",
    "current_timestamp",
    "localtime",
    "localtimestamp",
    "current_user",
    "current_role",
    "session_user",
    "user",
    "current_catalog",
    "current_schema",
    "system_user",
];

/// Parses filter text (already trimmed).
pub(crate) fn parse(text: &str) -> Result<Expr, PredicateError> {
    if text.len() > MAX_TEXT_BYTES {
        return Err(PredicateError::unsupported(format!("a filter longer than {MAX_TEXT_BYTES} bytes")));
    }
    if text.contains('\0') {
        return Err(PredicateError::syntax("the filter contains a NUL character"));
    }
    let dialect = PostgreSqlDialect {};
    let tokens = Tokenizer::new(&dialect, text).tokenize().map_err(|e| PredicateError::syntax(e.to_string()))?;
    let significant = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))).count();
    if significant == 0 {
        return Err(PredicateError::Empty);
    }
    // sqlparser bounds most nesting, but not chains of NOT (nor do the
    // other prefix operators cost it much): refuse long runs before parsing.
    let mut run = 0usize;
    for t in tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_))) {
        let prefix = match t {
            Token::Minus | Token::Plus | Token::LParen => true,
            Token::Word(w) => w.keyword == Keyword::NOT,
            _ => false,
        };
        run = if prefix { run + 1 } else { 0 };
        if run > MAX_PREFIX_RUN {
            return Err(PredicateError::unsupported(format!("nesting deeper than {MAX_PREFIX_RUN} levels")));
        }
    }
    if significant > MAX_TOKENS {
        return Err(PredicateError::unsupported(format!("a filter of more than {MAX_TOKENS} tokens")));
    }
    let mut parser = Parser::new(&dialect).with_recursion_limit(SQLPARSER_DEPTH).with_tokens(tokens);
    let sql = parser.parse_expr().map_err(|e| {
        let msg = e.to_string();
        PredicateError::syntax(msg.strip_prefix("sql parser error: ").unwrap_or(&msg).to_owned())
    })?;
    match parser.peek_token().token {
        Token::EOF => {}
        Token::SemiColon => return Err(PredicateError::unsupported("`;`")),
        other => return Err(PredicateError::syntax(format!("unexpected `{other}` after the expression"))),
    }
    let expr = Conv { depth: 0 }.expr(&sql)?;
    // The filter's SQL must parse within the same limits: it is what a
    // stored definition could be rebuilt from, and what tests compare.
    let mut rendered = String::new();
    render::expr(&mut rendered, &expr);
    if rendered.len() > MAX_TEXT_BYTES {
        return Err(PredicateError::unsupported(format!("a filter whose SQL is longer than {MAX_TEXT_BYTES} bytes")));
    }
    let rendered_tokens = Tokenizer::new(&dialect, &rendered)
        .tokenize()
        .map_or(usize::MAX, |t| t.iter().filter(|t| !matches!(t, Token::Whitespace(_))).count());
    if rendered_tokens > MAX_TOKENS {
        return Err(PredicateError::unsupported(format!("a filter whose SQL has more than {MAX_TOKENS} tokens")));
    }
    Ok(expr)
}

/// `e` without its enclosing parentheses, unwrapped without recursing (they
/// may nest as deep as sqlparser allows).
fn unparenthesized(mut e: &Sql) -> &Sql {
    while let Sql::Nested(inner) = e {
        e = inner;
    }
    e
}

struct Conv {
    depth: usize,
}

fn ident(id: &Ident) -> Result<String, PredicateError> {
    let name = match id.quote_style {
        // Postgres folds unquoted identifiers to lower case, ASCII only in a
        // multi-byte encoding.
        None => {
            let lower = id.value.to_ascii_lowercase();
            if VALUE_FUNCTIONS.contains(&lower.as_str()) {
                return Err(PredicateError::unsupported(format!("{lower} (its value depends on the session)")));
            }
            lower
        }
        Some('"') => id.value.clone(),
        Some(q) => return Err(PredicateError::unsupported(format!("identifier quoted with {q}"))),
    };
    if name.is_empty() {
        return Err(PredicateError::syntax("zero-length quoted identifier"));
    }
    if name.len() > MAX_IDENT_BYTES {
        return Err(PredicateError::unsupported(format!(
            "identifier \"{name}\" (longer than {MAX_IDENT_BYTES} bytes: Postgres would truncate it)"
        )));
    }
    Ok(name)
}

/// Decimal notation only: digits with an optional point and exponent.
fn number_ok(s: &str) -> bool {
    let (mantissa, exp) = match s.find(['e', 'E']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut parts = mantissa.splitn(2, '.');
    let int = parts.next().unwrap_or("");
    let frac = parts.next();
    let digits = |p: &str| p.bytes().all(|b| b.is_ascii_digit());
    let mantissa_ok =
        digits(int) && frac.is_none_or(digits) && (!int.is_empty() || frac.is_some_and(|f| !f.is_empty()));
    let exp_ok = exp.is_none_or(|e| {
        let e = e.strip_prefix(['+', '-']).unwrap_or(e);
        !e.is_empty() && digits(e)
    });
    mantissa_ok && exp_ok
}

fn cast_type(dt: &DataType) -> Result<SqlType, PredicateError> {
    Ok(match dt {
        DataType::SmallInt(None) | DataType::Int2(None) => SqlType::Int2,
        DataType::Int(None) | DataType::Integer(None) | DataType::Int4(None) => SqlType::Int4,
        DataType::BigInt(None) | DataType::Int8(None) => SqlType::Int8,
        DataType::Numeric(ExactNumberInfo::None)
        | DataType::Decimal(ExactNumberInfo::None)
        | DataType::Dec(ExactNumberInfo::None) => SqlType::Numeric,
        DataType::Real | DataType::Float4 => SqlType::Float4,
        DataType::DoublePrecision | DataType::Float8 | DataType::Float(ExactNumberInfo::None) => SqlType::Float8,
        DataType::Bool | DataType::Boolean => SqlType::Bool,
        DataType::Text => SqlType::Text,
        DataType::Date => SqlType::Date,
        DataType::Timestamp(None, TimezoneInfo::None | TimezoneInfo::WithoutTimeZone) => SqlType::Timestamp,
        DataType::Timestamp(None, TimezoneInfo::WithTimeZone | TimezoneInfo::Tz) => SqlType::Timestamptz,
        DataType::Uuid => SqlType::Uuid,
        // Types that nest are not displayed: their `Display` recurses.
        DataType::Array(_) => return Err(PredicateError::unsupported("a cast to an array type")),
        DataType::Custom(name, _) => return Err(PredicateError::unsupported(format!("a cast to {name}"))),
        DataType::Map(..)
        | DataType::Tuple(_)
        | DataType::Nested(_)
        | DataType::Struct(..)
        | DataType::Union(_)
        | DataType::Nullable(_)
        | DataType::LowCardinality(_)
        | DataType::Collate(..)
        | DataType::Zerofill(_)
        | DataType::Table(_)
        | DataType::NamedTable { .. } => return Err(PredicateError::unsupported("a cast to a composite type")),
        other => return Err(PredicateError::unsupported(format!("a cast to {other}"))),
    })
}

/// What a refused expression is. Never its `Display`: that recurses
/// through the whole tree, which may be thousands of levels deep.
fn describe(e: &Sql) -> &'static str {
    match e {
        Sql::Identifier(_) | Sql::CompoundIdentifier(_) => "a column",
        Sql::Value(_) | Sql::TypedString(_) => "a literal",
        Sql::BinaryOp { .. } => "an operator expression",
        Sql::UnaryOp { .. } => "a unary operator expression",
        Sql::Cast { .. } => "a cast",
        Sql::Nested(_) => "a parenthesized expression",
        Sql::Function(_) => "a function call",
        Sql::In { .. } => "an IN expression",
        Sql::Like { .. } | Sql::ILike { .. } => "a LIKE expression",
        Sql::Between { .. } => "a BETWEEN expression",
        Sql::Collate { .. } => "a COLLATE expression",
        Sql::JsonAccess { .. } | Sql::CompoundFieldAccess { .. } => "a field access",
        Sql::Extract { .. } => "EXTRACT",
        Sql::Substring { .. } => "SUBSTRING",
        Sql::Trim { .. } => "TRIM",
        Sql::Position { .. } => "POSITION",
        Sql::Overlay { .. } => "OVERLAY",
        Sql::Ceil { .. } => "CEIL",
        Sql::Floor { .. } => "FLOOR",
        Sql::Convert { .. } => "CONVERT",
        Sql::Struct { .. } | Sql::Named { .. } | Sql::Dictionary(_) | Sql::Map(_) => "a composite value",
        Sql::Wildcard(_) | Sql::QualifiedWildcard(..) => "`*`",
        Sql::MatchAgainst { .. } => "MATCH AGAINST",
        Sql::Lambda(_) => "a lambda",
        _ => "this kind of expression",
    }
}

fn cmp_op(op: &BinaryOperator) -> Option<CmpOp> {
    Some(match op {
        BinaryOperator::Eq => CmpOp::Eq,
        BinaryOperator::NotEq => CmpOp::Ne,
        BinaryOperator::Lt => CmpOp::Lt,
        BinaryOperator::LtEq => CmpOp::Le,
        BinaryOperator::Gt => CmpOp::Gt,
        BinaryOperator::GtEq => CmpOp::Ge,
        _ => return None,
    })
}

impl Conv {
    fn expr(&mut self, e: &Sql) -> Result<Expr, PredicateError> {
        let e = unparenthesized(e);
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(PredicateError::unsupported(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let out = self.expr_inner(e);
        self.depth -= 1;
        out
    }

    fn boxed(&mut self, e: &Sql) -> Result<Box<Expr>, PredicateError> {
        self.expr(e).map(Box::new)
    }

    /// The operands of a chain of `op` (`a AND b AND c`), left to right,
    /// without recursing down the chain.
    fn chain<'e>(e: &'e Sql, op: &BinaryOperator) -> Vec<&'e Sql> {
        let mut leaves = Vec::new();
        let mut stack = vec![e];
        while let Some(x) = stack.pop() {
            match x {
                Sql::BinaryOp { left, op: o, right } if o == op => {
                    stack.push(right);
                    stack.push(left);
                }
                other => leaves.push(other),
            }
        }
        leaves
    }

    fn expr_inner(&mut self, e: &Sql) -> Result<Expr, PredicateError> {
        use PredicateError as E;
        Ok(match e {
            Sql::Identifier(id) => Expr::Column(ident(id)?),
            Sql::CompoundIdentifier(parts) => {
                let shown: Vec<&str> = parts.iter().map(|p| p.value.as_str()).collect();
                return Err(E::unsupported(format!("qualified name {} (write the column alone)", shown.join("."))));
            }
            Sql::Nested(inner) => self.expr(inner)?, // (not reached: unwrapped above)
            Sql::Value(_)
            | Sql::TypedString(_)
            | Sql::Cast { .. }
            | Sql::Collate { .. }
            | Sql::UnaryOp { op: UnaryOperator::Minus | UnaryOperator::Plus, .. } => Expr::Lit(self.literal(e)?),
            Sql::UnaryOp { op: UnaryOperator::Not, expr } => Expr::Not(self.boxed(expr)?),
            Sql::UnaryOp { op, .. } => return Err(E::unsupported(format!("operator {op}"))),
            Sql::BinaryOp { op: op @ (BinaryOperator::And | BinaryOperator::Or), .. } => {
                let parts = Self::chain(e, op).into_iter().map(|p| self.expr(p)).collect::<Result<Vec<_>, _>>()?;
                if *op == BinaryOperator::And {
                    Expr::And(parts)
                } else {
                    Expr::Or(parts)
                }
            }
            Sql::BinaryOp { left, op, right } => match cmp_op(op) {
                Some(op) => Expr::Cmp { op, left: self.boxed(left)?, right: self.boxed(right)? },
                None => return Err(E::unsupported(format!("operator {op}"))),
            },
            Sql::IsNull(x) => Expr::IsNull { expr: self.boxed(x)?, negated: false },
            Sql::IsNotNull(x) => Expr::IsNull { expr: self.boxed(x)?, negated: true },
            Sql::IsTrue(x) => Expr::IsBool { expr: self.boxed(x)?, value: Some(true), negated: false },
            Sql::IsNotTrue(x) => Expr::IsBool { expr: self.boxed(x)?, value: Some(true), negated: true },
            Sql::IsFalse(x) => Expr::IsBool { expr: self.boxed(x)?, value: Some(false), negated: false },
            Sql::IsNotFalse(x) => Expr::IsBool { expr: self.boxed(x)?, value: Some(false), negated: true },
            Sql::IsUnknown(x) => Expr::IsBool { expr: self.boxed(x)?, value: None, negated: false },
            Sql::IsNotUnknown(x) => Expr::IsBool { expr: self.boxed(x)?, value: None, negated: true },
            Sql::IsDistinctFrom(l, r) => Expr::Distinct { not: false, left: self.boxed(l)?, right: self.boxed(r)? },
            Sql::IsNotDistinctFrom(l, r) => Expr::Distinct { not: true, left: self.boxed(l)?, right: self.boxed(r)? },
            Sql::In { expr, target, negated, global } => {
                let list = match target {
                    InTarget::List(list) if !global => list,
                    InTarget::Subquery(_) => return Err(E::unsupported("subquery")),
                    _ => return Err(E::unsupported("IN with something other than a list")),
                };
                let expr = self.boxed(expr)?;
                let list = list.iter().map(|x| self.expr(x)).collect::<Result<Vec<_>, _>>()?;
                Expr::In { expr, list, negated: *negated }
            }
            Sql::Between { expr, negated, low, high } => {
                // Postgres rewrites BETWEEN this way itself.
                let (x, lo, hi) = (self.expr(expr)?, self.expr(low)?, self.expr(high)?);
                let cmp = |op, l: &Expr, r: Expr| Expr::Cmp { op, left: Box::new(l.clone()), right: Box::new(r) };
                if *negated {
                    Expr::Or(vec![cmp(CmpOp::Lt, &x, lo), cmp(CmpOp::Gt, &x, hi)])
                } else {
                    Expr::And(vec![cmp(CmpOp::Ge, &x, lo), cmp(CmpOp::Le, &x, hi)])
                }
            }
            Sql::Like { negated, any, expr, pattern, escape_char }
            | Sql::ILike { negated, any, expr, pattern, escape_char } => {
                let ilike = matches!(e, Sql::ILike { .. });
                if *any {
                    return Err(E::unsupported("LIKE ANY"));
                }
                let pattern = self.literal(pattern)?;
                if !matches!(&pattern, Literal::Str(_) | Literal::Null | Literal::Cast(_, SqlType::Text)) {
                    return Err(E::unsupported("a LIKE pattern that is not a string literal"));
                }
                let escape = match escape_char.as_deref() {
                    None => None,
                    Some(Sql::Value(v)) => match &v.value {
                        Value::SingleQuotedString(s) => Some(s.clone()),
                        Value::DollarQuotedString(d) => Some(d.value.clone()),
                        _ => return Err(E::unsupported("an ESCAPE that is not a string literal")),
                    },
                    Some(_) => return Err(E::unsupported("an ESCAPE that is not a string literal")),
                };
                Expr::Like { expr: self.boxed(expr)?, pattern, escape, negated: *negated, ilike }
            }
            Sql::SimilarTo { .. } => return Err(E::unsupported("SIMILAR TO")),
            Sql::RLike { .. } => return Err(E::unsupported("regular expression match")),
            Sql::Function(f) => return Err(E::unsupported(format!("function call {}()", f.name))),
            Sql::Subquery(_) | Sql::Exists { .. } => return Err(E::unsupported("subquery")),
            Sql::Case { .. } => return Err(E::unsupported("CASE")),
            Sql::Array(_) => return Err(E::unsupported("array")),
            Sql::AnyOp { .. } | Sql::AllOp { .. } => return Err(E::unsupported("ANY/ALL")),
            Sql::Interval(_) => return Err(E::unsupported("interval")),
            Sql::AtTimeZone { .. } => return Err(E::unsupported("AT TIME ZONE")),
            Sql::Tuple(_) => return Err(E::unsupported("row value")),
            Sql::Extract { .. }
            | Sql::Substring { .. }
            | Sql::Trim { .. }
            | Sql::Position { .. }
            | Sql::Overlay { .. }
            | Sql::Ceil { .. }
            | Sql::Floor { .. } => return Err(E::unsupported(format!("function call {}()", describe(e)))),
            other => return Err(E::unsupported(describe(other))),
        })
    }

    /// A constant: a literal, possibly cast, negated or given `COLLATE "C"`.
    fn literal(&mut self, e: &Sql) -> Result<Literal, PredicateError> {
        use PredicateError as E;
        let e = unparenthesized(e);
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(E::unsupported(format!("nesting deeper than {MAX_DEPTH} levels")));
        }
        let out = self.literal_inner(e);
        self.depth -= 1;
        let lit = out?;
        // Typed constants are checked now (`'abc'::int4` is an error in
        // Postgres before any row is read); unknown strings when bound.
        input::literal(&lit)?;
        Ok(lit)
    }

    fn literal_inner(&mut self, e: &Sql) -> Result<Literal, PredicateError> {
        use PredicateError as E;
        Ok(match e {
            Sql::Nested(inner) => self.literal(inner)?, // (not reached: unwrapped above)
            Sql::Value(v) => match &v.value {
                Value::Number(s, false) if number_ok(s) => Literal::Number(s.clone()),
                Value::Number(s, _) => return Err(E::unsupported(format!("number {s} (use decimal notation)"))),
                Value::SingleQuotedString(s) => Literal::Str(s.clone()),
                Value::DollarQuotedString(d) => Literal::Str(d.value.clone()),
                Value::Boolean(b) => Literal::Bool(*b),
                Value::Null => Literal::Null,
                Value::EscapedStringLiteral(_) => {
                    return Err(E::unsupported("E'' string (write the character itself in a plain '…' string)"))
                }
                Value::Placeholder(p) => return Err(E::unsupported(format!("parameter {p}"))),
                other => return Err(E::unsupported(format!("literal {other}"))),
            },
            Sql::TypedString(ts) => {
                let ty = cast_type(&ts.data_type)?;
                match &ts.value.value {
                    Value::SingleQuotedString(s) if !ts.uses_odbc_syntax => {
                        Literal::Cast(Box::new(Literal::Str(s.clone())), ty)
                    }
                    _ => return Err(E::unsupported("this form of typed literal")),
                }
            }
            Sql::Cast { kind: CastKind::Cast | CastKind::DoubleColon, expr, data_type, format: None } => {
                let ty = cast_type(data_type)?;
                match self.literal(expr)? {
                    inner @ (Literal::Null | Literal::Bool(_) | Literal::Number(_) | Literal::Str(_)) => {
                        Literal::Cast(Box::new(inner), ty)
                    }
                    _ => return Err(E::unsupported("a cast of a cast or of a negation")),
                }
            }
            Sql::UnaryOp { op: UnaryOperator::Minus, expr } => match self.literal(expr)? {
                // Postgres folds a minus into a numeric constant (doNegate).
                Literal::Number(s) => Literal::Number(match s.strip_prefix('-') {
                    Some(pos) => pos.to_owned(),
                    None => format!("-{s}"),
                }),
                inner @ (Literal::Cast(..) | Literal::Neg(_)) => Literal::Neg(Box::new(inner)),
                _ => return Err(E::unsupported(format!("unary minus on {}", describe(expr)))),
            },
            // Unary plus leaves a numeric value and its type as they are.
            Sql::UnaryOp { op: UnaryOperator::Plus, expr } => {
                let inner = self.literal(expr)?;
                let numeric = matches!(inner, Literal::Number(_) | Literal::Cast(..) | Literal::Neg(_))
                    && input::literal(&inner)?.ty.is_numeric_family();
                if !numeric {
                    return Err(E::unsupported(format!("unary plus on {}", describe(expr))));
                }
                inner
            }
            Sql::Collate { expr, collation } => {
                // Rendered filters pin string literals to "C" (see render.rs);
                // accepting exactly that keeps them parseable. Any other
                // collation would change what = and LIKE mean.
                let is_c = matches!(collation.0.as_slice(),
                    [ObjectNamePart::Identifier(id)] if id.quote_style == Some('"') && id.value == "C");
                if !is_c {
                    return Err(E::unsupported(format!("COLLATE {collation}")));
                }
                match self.literal(expr)? {
                    lit @ (Literal::Str(_) | Literal::Cast(_, SqlType::Text)) => lit,
                    _ => return Err(E::unsupported("COLLATE on something other than a string literal")),
                }
            }
            Sql::Identifier(id) => {
                return Err(E::unsupported(format!("an operator or cast applied to column \"{}\"", id.value)))
            }
            other => return Err(E::unsupported(format!("{} where a constant belongs", describe(other)))),
        })
    }
}
