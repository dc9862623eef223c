//! `LIKE` and `ILIKE` patterns, matched as Postgres matches them in a UTF-8
//! database: `%` is any run of characters, `_` exactly one character, the
//! escape character (default `\`) makes the next character literal, and the
//! whole text must match.
//!
//! `ILIKE` folds ASCII letters only. Postgres folds with the collation's
//! `lower()`, which for other letters depends on the server's locale (and
//! its ICU or libc version); the rendered SQL pins the pattern's collation to
//! "C", where `lower()` folds exactly ASCII, so the server does the same as
//! this matcher. Patterns with non-ASCII letters are refused when binding,
//! since a user writing `ILIKE 'é%'` expects `É` to match.

use serde::{Deserialize, Serialize};

/// One pattern element.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Tok {
    Lit(char),
    /// `_`
    One,
    /// `%`
    Any,
}

/// A compiled pattern.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Pattern {
    toks: Vec<Tok>,
    /// ILIKE: compare ASCII letters case-insensitively.
    fold: bool,
}

/// Why a pattern is refused.
pub(crate) enum PatternError {
    /// The pattern ends with the escape character: Postgres raises "LIKE
    /// pattern must not end with escape character" when it evaluates it.
    TrailingEscape,
}

impl Pattern {
    /// Compiles `pattern` with `escape` (`None` for `ESCAPE ''`: no escape
    /// character).
    pub(crate) fn compile(pattern: &str, escape: Option<char>, fold: bool) -> Result<Pattern, PatternError> {
        let mut toks = Vec::with_capacity(pattern.len());
        let mut chars = pattern.chars();
        while let Some(c) = chars.next() {
            if Some(c) == escape {
                let next = chars.next().ok_or(PatternError::TrailingEscape)?;
                toks.push(Tok::Lit(next));
            } else if c == '%' {
                // Runs of `%` match what one does.
                if toks.last() != Some(&Tok::Any) {
                    toks.push(Tok::Any);
                }
            } else if c == '_' {
                toks.push(Tok::One);
            } else {
                toks.push(Tok::Lit(c));
            }
        }
        Ok(Pattern { toks, fold })
    }

    fn lit_eq(&self, p: char, c: char) -> bool {
        if self.fold {
            p.eq_ignore_ascii_case(&c)
        } else {
            p == c
        }
    }

    /// Whether the whole of `text` matches.
    ///
    /// Greedy matching with backtracking to the last `%` only: a later `%`
    /// can absorb anything an earlier one could, so this is exact and runs in
    /// O(pattern × text) at worst.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let t: Vec<char> = text.chars().collect();
        let p = &self.toks;
        let (mut ti, mut pi) = (0usize, 0usize);
        let mut star: Option<(usize, usize)> = None;
        while ti < t.len() {
            match (p.get(pi), t.get(ti)) {
                (Some(Tok::Any), _) => {
                    star = Some((pi, ti));
                    pi += 1;
                }
                (Some(Tok::One), Some(_)) => {
                    pi += 1;
                    ti += 1;
                }
                (Some(Tok::Lit(pc)), Some(&tc)) if self.lit_eq(*pc, tc) => {
                    pi += 1;
                    ti += 1;
                }
                _ => match star {
                    Some((sp, st)) => {
                        pi = sp + 1;
                        ti = st + 1;
                        star = Some((sp, st + 1));
                    }
                    None => return false,
                },
            }
        }
        p.get(pi..).unwrap_or_default().iter().all(|tok| *tok == Tok::Any)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        Pattern::compile(p, Some('\\'), false).map(|p| p.matches(t)).unwrap_or(false)
    }

    #[test]
    fn wildcards_escapes_and_whole_text() {
        assert!(m("a%", "abc"));
        assert!(!m("a%", "bac"));
        assert!(m("%c", "abc"));
        assert!(m("a_c", "aéc"));
        assert!(!m("a_c", "ac"));
        assert!(m("%", ""));
        assert!(!m("_", ""));
        assert!(m("a\\%", "a%"));
        assert!(!m("a\\%", "ab"));
        assert!(m("%a%b%", "xxaxxbxx"));
        assert!(!m("%a%b%", "xxbxxaxx"));
        assert!(m("%%%a", "ba"));
        assert!(Pattern::compile("a\\", Some('\\'), false).is_err());
        assert!(Pattern::compile("a!", None, false).is_ok_and(|p| p.matches("a!")));
        assert!(Pattern::compile("A%", Some('\\'), true).is_ok_and(|p| p.matches("abc")));
        assert!(Pattern::compile("é", Some('\\'), true).is_ok_and(|p| !p.matches("É")));
    }
}
