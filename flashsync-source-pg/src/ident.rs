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

/// The slot (and publication) name for an origin synced into the store
/// `store_id`: `flashsync_<sanitised origin>_<hash>_<store id>`, at most 63
/// bytes. Two stores syncing one database get different names.
pub fn store_feed_name(origin: &str, store_id: &str) -> String {
    let base = default_feed_name(origin);
    let id: String = store_id
        .chars()
        .map(|c| c.to_ascii_lowercase())
        .filter(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        .take(16)
        .collect();
    // `flashsync_` + origin + `_` + 8 hex digits, then `_` + id: shorten the
    // sanitised origin, never the hashes, to stay within 63 bytes.
    let hash = &base[base.len() - 8..];
    let origin_part = &base["flashsync_".len()..base.len() - 9];
    let room = 63 - "flashsync_".len() - 1 - 8 - 1 - id.len();
    let origin_part: String = origin_part.chars().take(room).collect();
    format!("flashsync_{origin_part}_{hash}_{id}")
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

    #[test]
    fn store_names_are_valid_and_differ_per_store() {
        let a = store_feed_name("postgres:main", "0123456789ab");
        let b = store_feed_name("postgres:main", "ba9876543210");
        assert_ne!(a, b);
        assert!(a.starts_with("flashsync_postgres_main_") && a.ends_with("_0123456789ab"), "{a}");
        let long = store_feed_name(&"X".repeat(128), "0123456789ab");
        for n in [a, b, long] {
            assert!(is_valid_slot_name(&n), "{n} ({} bytes)", n.len());
        }
    }
}
