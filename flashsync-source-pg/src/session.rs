//! Session settings pinned on every connection (snapshot, control and
//! replication), so text output is identical on both paths (DESIGN §4.6).

/// `(name, value)` pairs applied with `SET` right after connecting.
pub const PINNED_SETTINGS: &[(&str, &str)] = &[
    ("TimeZone", "UTC"),
    ("DateStyle", "ISO"),
    ("IntervalStyle", "postgres"),
    ("extra_float_digits", "3"),
    ("bytea_output", "hex"),
    ("client_encoding", "UTF8"),
];

/// One simple-query string that applies [`PINNED_SETTINGS`].
pub fn set_statement() -> String {
    PINNED_SETTINGS.iter().map(|(k, v)| format!("SET {k} = '{v}';")).collect::<Vec<_>>().join(" ")
}
