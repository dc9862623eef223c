//! Selectors: which views a control call applies to.
//!
//! A selector is `*` (every view) or a map from namespaces to lists of names,
//! where a name (and a namespace) may contain `*` wildcards. The string form
//! used by command lines is a comma-separated list of `namespace.name`
//! patterns — a bare `name` means `public.name`, as in Postgres' default
//! search path; a part containing `.`, `,`, `"` or spaces can be
//! double-quoted, with `""` for a literal quote:
//!
//! ```
//! use flashsync_core::{Selector, ViewName};
//! let s: Selector = "public.users_cache,public.posts_*".parse()?;
//! assert!(s.matches(&ViewName::new("public", "posts_live")?));
//! assert!(!s.matches(&ViewName::new("public", "comments")?));
//!
//! let all: Selector = "*".parse()?;
//! assert!(all.matches(&ViewName::new("anything", "at_all")?));
//!
//! let quoted: Selector = r#""my ns"."a.b""#.parse()?;
//! assert!(quoted.matches(&ViewName::new("my ns", "a.b")?));
//!
//! let bare: Selector = "users_cache".parse()?;
//! assert!(bare.matches(&ViewName::new("public", "users_cache")?));
//! assert!(!bare.matches(&ViewName::new("app", "users_cache")?));
//!
//! assert!("public.".parse::<Selector>().is_err());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::error::SelectorError;
use crate::view::ViewName;

/// Longest selector text accepted, in bytes.
pub const MAX_SELECTOR_BYTES: usize = 64 * 1024;

/// A name pattern: literal text with `*` matching any run of characters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Pattern(String);

impl Pattern {
    /// A pattern; must be non-empty. A `*` anywhere is a wildcard.
    pub fn new(p: impl Into<String>) -> Result<Self, SelectorError> {
        let p = p.into();
        if p.is_empty() {
            return Err(SelectorError::EmptyPart);
        }
        Ok(Pattern(p))
    }

    /// Whether `text` matches.
    pub fn matches(&self, text: &str) -> bool {
        glob(self.0.as_bytes(), text.as_bytes())
    }

    /// The pattern text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Iterative wildcard match with single backtrack point: linear in practice,
/// no recursion, so hostile patterns cannot blow the stack.
fn glob(p: &[u8], t: &[u8]) -> bool {
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some((pi, ti));
            pi += 1;
        } else if pi < p.len() && p[pi] == t[ti] {
            pi += 1;
            ti += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

/// Which views a call applies to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Selector {
    /// Every view.
    #[default]
    All,
    /// Views whose namespace matches a key and whose name matches one of its
    /// patterns.
    Map(BTreeMap<Pattern, Vec<Pattern>>),
    /// Exactly these views (no wildcards: a `*` in a name is literal).
    Names(BTreeSet<ViewName>),
}

impl Selector {
    /// Builds a map selector from `(namespace, [names])` pairs; each entry may
    /// use `*` wildcards. Empty strings are an error.
    ///
    /// ```
    /// use flashsync_core::Selector;
    /// let s = Selector::from_map([("public", ["users_cache", "posts_live"])])?;
    /// # Ok::<(), flashsync_core::SelectorError>(())
    /// ```
    pub fn from_map<N, I, S>(entries: impl IntoIterator<Item = (N, I)>) -> Result<Self, SelectorError>
    where
        N: Into<String>,
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut map: BTreeMap<Pattern, Vec<Pattern>> = BTreeMap::new();
        for (ns, names) in entries {
            let ns = Pattern::new(ns)?;
            let names = names.into_iter().map(|n| Pattern::new(n)).collect::<Result<Vec<_>, _>>()?;
            map.entry(ns).or_default().extend(names);
        }
        Ok(Selector::Map(map))
    }

    /// Exactly one view.
    pub fn view(name: &ViewName) -> Self {
        Selector::Names(BTreeSet::from([name.clone()]))
    }

    /// Whether `view` is selected.
    pub fn matches(&self, view: &ViewName) -> bool {
        match self {
            Selector::All => true,
            Selector::Map(map) => {
                map.iter().any(|(ns, names)| ns.matches(&view.namespace) && names.iter().any(|n| n.matches(&view.name)))
            }
            Selector::Names(names) => names.contains(view),
        }
    }

    /// Parses the string form (see the module docs).
    pub fn parse(text: &str) -> Result<Self, SelectorError> {
        text.parse()
    }
}

impl FromStr for Selector {
    type Err = SelectorError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        if text.len() > MAX_SELECTOR_BYTES {
            return Err(SelectorError::TooLong { len: text.len(), max: MAX_SELECTOR_BYTES });
        }
        let trimmed = text.trim();
        if trimmed == "*" {
            return Ok(Selector::All);
        }
        if trimmed.is_empty() {
            return Err(SelectorError::Empty);
        }
        let mut map: BTreeMap<Pattern, Vec<Pattern>> = BTreeMap::new();
        let mut lexer = Lexer { s: trimmed, pos: 0 };
        loop {
            let first = lexer.part()?;
            let (ns, name) = if lexer.peek() == Some(b'.') {
                lexer.pos += 1;
                (first, lexer.part()?)
            } else {
                // A name alone is in `public`, as in Postgres.
                ("public".to_owned(), first)
            };
            map.entry(Pattern::new(ns)?).or_default().push(Pattern::new(name)?);
            lexer.skip_spaces();
            match lexer.peek() {
                None => break,
                Some(b',') => {
                    lexer.pos += 1;
                    lexer.skip_spaces();
                }
                Some(other) => {
                    return Err(SelectorError::Unexpected {
                        at: lexer.pos,
                        found: char::from(other),
                        expected: "',' or end",
                    })
                }
            }
        }
        Ok(Selector::Map(map))
    }
}

struct Lexer<'a> {
    s: &'a str,
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn skip_spaces(&mut self) {
        while self.peek() == Some(b' ') {
            self.pos += 1;
        }
    }

    /// One namespace or name: quoted (`"..."`, `""` escapes a quote) or bare
    /// (up to the next `.`, `,` or end).
    fn part(&mut self) -> Result<String, SelectorError> {
        self.skip_spaces();
        if self.peek() == Some(b'"') {
            let start = self.pos;
            self.pos += 1;
            let mut out = String::new();
            loop {
                let rest = &self.s[self.pos..];
                let Some(q) = rest.find('"') else {
                    return Err(SelectorError::UnterminatedQuote { at: start });
                };
                out.push_str(&rest[..q]);
                self.pos += q + 1;
                if self.peek() == Some(b'"') {
                    out.push('"');
                    self.pos += 1;
                } else {
                    break;
                }
            }
            if out.is_empty() {
                return Err(SelectorError::EmptyPart);
            }
            Ok(out)
        } else {
            let rest = &self.s[self.pos..];
            let end = rest.find(['.', ',', '"']).unwrap_or(rest.len());
            let part = rest[..end].trim_end();
            if part.is_empty() {
                return Err(SelectorError::EmptyPart);
            }
            // No view name holds one, and a stray one (a NUL from a shell
            // script) reads better as an error than as a name to match.
            // (Whitespace controls are kept: quoting round-trips them.)
            if let Some((i, c)) = part.char_indices().find(|(_, c)| c.is_control() && !c.is_whitespace()) {
                return Err(SelectorError::Unexpected { at: self.pos + i, found: c, expected: "a name character" });
            }
            self.pos += end;
            Ok(part.to_owned())
        }
    }
}

impl fmt::Display for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Selector::All => f.write_str("*"),
            Selector::Map(map) => {
                let mut first = true;
                for (ns, names) in map {
                    for n in names {
                        if !first {
                            f.write_str(",")?;
                        }
                        first = false;
                        write!(f, "{}.{}", quote(ns.as_str()), quote(n.as_str()))?;
                    }
                }
                Ok(())
            }
            Selector::Names(names) => {
                let mut first = true;
                for n in names {
                    if !first {
                        f.write_str(",")?;
                    }
                    first = false;
                    write!(f, "{}.{}", quote(&n.namespace), quote(&n.name))?;
                }
                Ok(())
            }
        }
    }
}

fn quote(part: &str) -> String {
    // Parsing trims whitespace around bare parts, so any part with whitespace
    // (or a character the grammar uses) is quoted to survive a round trip.
    if part.chars().any(|c| matches!(c, '.' | ',' | '"') || c.is_whitespace()) {
        format!("\"{}\"", part.replace('"', "\"\""))
    } else {
        part.to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn v(ns: &str, n: &str) -> ViewName {
        ViewName::new(ns, n).unwrap()
    }

    #[test]
    fn parses_and_matches() {
        let s: Selector = " public.users_cache , public.posts_* ".parse().unwrap();
        assert!(s.matches(&v("public", "users_cache")));
        assert!(s.matches(&v("public", "posts_")));
        assert!(!s.matches(&v("other", "users_cache")));
        let s: Selector = "*.*".parse().unwrap();
        assert!(s.matches(&v("a", "b")));
        let s: Selector = r#""we""ird"."x,y""#.parse().unwrap();
        assert!(s.matches(&v("we\"ird", "x,y")));
    }

    #[test]
    fn rejects_malformed() {
        for bad in ["", "   ", "public.", ".x", "a.b,", "a.b c.d", "\"a.b", "a..b", "\"\".x", ",", "a.b,,c.d"] {
            assert!(bad.parse::<Selector>().is_err(), "{bad:?} parsed");
        }
        assert!(matches!("x".repeat(MAX_SELECTOR_BYTES + 1).parse::<Selector>(), Err(SelectorError::TooLong { .. })));
    }

    #[test]
    fn a_bare_name_is_in_public() {
        let s: Selector = "users_live, app.posts_*".parse().unwrap();
        assert!(s.matches(&ViewName::new("public", "users_live").unwrap()));
        assert!(!s.matches(&ViewName::new("app", "users_live").unwrap()));
        assert!(s.matches(&ViewName::new("app", "posts_live").unwrap()));
        let quoted: Selector = r#""a.b""#.parse().unwrap();
        assert!(quoted.matches(&ViewName::new("public", "a.b").unwrap()));
    }

    #[test]
    fn glob_semantics() {
        let p = Pattern::new("a*b*c").unwrap();
        assert!(p.matches("abc"));
        assert!(p.matches("aXbYc"));
        assert!(!p.matches("aXbY"));
        assert!(Pattern::new("*").unwrap().matches(""));
        // pathological pattern stays fast
        let p = Pattern::new("*a*a*a*a*a*a*a*a*b").unwrap();
        assert!(!p.matches(&"a".repeat(10_000)));
    }

    proptest! {
        #[test]
        fn display_round_trips(ns in "[a-z .,\"*]{1,6}", name in "[a-z .,\"*]{1,6}") {
            let s = Selector::from_map([(ns.clone(), [name.clone()])]).unwrap();
            let back: Selector = s.to_string().parse().unwrap();
            prop_assert_eq!(back, s);
        }

        #[test]
        fn parse_never_panics(text in ".{0,40}") {
            let _ = text.parse::<Selector>();
        }
    }
}
