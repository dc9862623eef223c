//! Quoting for identifiers and literals, and the names flashsync gives its
//! replication slot and publication.

/// Quotes an identifier for SQL: always double-quoted, inner quotes doubled,
/// so any text — quotes, spaces, unicode, SQL — is one identifier.
///
/// ```
/// use flashsync_source_pg::ident::quote_ident;
/// assert_eq!(quote_ident(r#"a"b; DROP"#), r#""a""b; DROP""#);
/// ```
pub fn quote_ident(ident: &str) -> String {
    let mut out = String::with_capacity(ident.len() + 2);
    out.push('"');
    for c in ident.chars() {
        if c == '"' {
            out.push('"');
        }
        out.push(c);
    }
    out.push('"');
    out
}

/// `"schema"."table"`.
pub fn qualified(schema: &str, table: &str) -> String {
    format!("{}.{}", quote_ident(schema), quote_ident(table))
}

/// Quotes a string literal (`standard_conforming_strings` on, as since
/// Postgres 9.1): single quotes doubled.
pub fn quote_literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// Whether `name` is acceptable as a replication slot name (Postgres allows
/// only lower-case letters, digits and underscores, at most 63 bytes).
pub fn is_valid_slot_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// The default slot (and publication) name for an origin:
/// `flashsync_<sanitised origin>_<hash>`. Sanitising maps every character
/// outside `[a-z0-9_]` to `_`; the FNV-1a hash of the exact origin id keeps
/// origins that sanitise alike (`a:b`, `a.b`) apart. At most 63 bytes.
pub fn default_feed_name(origin: &str) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for b in origin.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    let sanitised: String = origin
        .chars()
        .map(|c| {
            let c = c.to_ascii_lowercase();
            if c.is_ascii_lowercase() || c.is_ascii_digit() {
                c
            } else {
                '_'
            }
        })
        .take(40)
        .collect();
    format!("flashsync_{sanitised}_{hash:08x}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_distinct() {
        let a = default_feed_name("postgres:main");
        let b = default_feed_name("postgres.main");
        assert_ne!(a, b);
        assert!(a.starts_with("flashsync_postgres_main_"));
        for n in [a, b, default_feed_name(&"X".repeat(128))] {
            assert!(is_valid_slot_name(&n), "{n}");
        }
        assert!(!is_valid_slot_name("Bad"));
        assert_eq!(quote_literal("it's"), "'it''s'");
        assert_eq!(qualified("s", "t\""), "\"s\".\"t\"\"\"");
    }
}
