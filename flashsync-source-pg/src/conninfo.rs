//! Connection settings: libpq-style URL or keyword/value strings, parsed
//! without ever echoing the input (it may hold a password).
//!
//! ```
//! use flashsync_source_pg::ConnInfo;
//! let a: ConnInfo = "postgres://app:s3cret@db.example:6432/main?sslmode=verify-full".parse()?;
//! let b: ConnInfo = "host=db.example port=6432 user=app password='s3cret' dbname=main sslmode=verify-full".parse()?;
//! assert_eq!(a, b);
//! assert!(!format!("{a:?} {a}").contains("s3cret"));
//! # Ok::<(), flashsync_source_pg::ConnInfoError>(())
//! ```
//!
//! Supported keys: `host` (a name, an IP address, or a directory holding the
//! Unix socket), `hostaddr`, `port`, `user`, `password`, `dbname`, `sslmode`
//! (`disable`, `prefer` — the default —, `require`, `verify-ca`,
//! `verify-full`), `sslrootcert`, `sslcert`, `sslkey`, `application_name`,
//! `connect_timeout` (seconds) and `options` (e.g. `-c wal_sender_timeout=5s`).
//! Environment variables are not consulted: what you pass is what is used.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// How hard to insist on TLS, as libpq's `sslmode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SslMode {
    /// Never use TLS.
    Disable,
    /// Use TLS if the server offers it; do not verify the certificate.
    #[default]
    Prefer,
    /// Require TLS; verify the certificate chain only if `sslrootcert` is
    /// given (as libpq does).
    Require,
    /// Require TLS and a certificate chain to `sslrootcert`.
    VerifyCa,
    /// Like `VerifyCa`, and the certificate must name the host.
    VerifyFull,
}

impl SslMode {
    /// The libpq spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    /// Whether a server without TLS must be refused.
    pub fn requires_tls(self) -> bool {
        matches!(self, SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull)
    }
}

/// Where the server listens.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Host {
    /// A host name or IP address (TCP).
    Tcp(String),
    /// A directory holding the server's Unix socket `.s.PGSQL.<port>`.
    Unix(PathBuf),
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Tcp(h) => f.write_str(h),
            Host::Unix(p) => write!(f, "{}", p.display()),
        }
    }
}

/// A password. Its `Debug` and `Display` never show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a password.
    pub fn new(s: impl Into<String>) -> Self {
        Secret(s.into())
    }

    /// The password itself, for authentication only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

/// Parsed connection settings. `Debug` and `Display` redact the password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnInfo {
    /// Server address.
    pub host: Host,
    /// Server port.
    pub port: u16,
    /// Role to connect as.
    pub user: String,
    /// Password, if the server asks for one.
    pub password: Option<Secret>,
    /// Database.
    pub dbname: String,
    /// TLS policy.
    pub sslmode: SslMode,
    /// PEM file of trusted CA certificates.
    pub sslrootcert: Option<PathBuf>,
    /// PEM client certificate (chain).
    pub sslcert: Option<PathBuf>,
    /// PEM client private key.
    pub sslkey: Option<PathBuf>,
    /// `application_name` shown in `pg_stat_activity`; the source adds its
    /// own when unset.
    pub application_name: Option<String>,
    /// How long to wait for the TCP connection and handshake.
    pub connect_timeout: Option<Duration>,
    /// Extra startup `options` (command-line style `-c name=value`).
    pub options: Option<String>,
}

impl fmt::Display for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "host={} port={} user={} dbname={} sslmode={}",
            self.host,
            self.port,
            self.user,
            self.dbname,
            self.sslmode.as_str()
        )?;
        if self.password.is_some() {
            f.write_str(" password=<redacted>")?;
        }
        Ok(())
    }
}

/// A connection string that cannot be used. Never contains the string
/// itself, only the offending key or a description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConnInfoError {
    /// A key libpq would not accept either (or flashsync does not support).
    #[error("unknown connection option {0:?}")]
    UnknownKey(String),
    /// A value that does not fit its key.
    #[error("invalid value for connection option {key:?}: {reason}")]
    InvalidValue {
        /// The key.
        key: String,
        /// Why (without the value, which may be secret).
        reason: &'static str,
    },
    /// The string does not follow the URL or keyword/value syntax.
    #[error("malformed connection string: {0}")]
    Syntax(&'static str),
}

#[derive(Default)]
struct Builder {
    host: Option<String>,
    port: Option<String>,
    user: Option<String>,
    password: Option<String>,
    dbname: Option<String>,
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
    application_name: Option<String>,
    connect_timeout: Option<String>,
    options: Option<String>,
}

impl Builder {
    fn set(&mut self, key: &str, value: String) -> Result<(), ConnInfoError> {
        let slot = match key {
            "host" | "hostaddr" => &mut self.host,
            "port" => &mut self.port,
            "user" => &mut self.user,
            "password" => &mut self.password,
            "dbname" => &mut self.dbname,
            "sslmode" => &mut self.sslmode,
            "sslrootcert" => &mut self.sslrootcert,
            "sslcert" => &mut self.sslcert,
            "sslkey" => &mut self.sslkey,
            "application_name" => &mut self.application_name,
            "connect_timeout" => &mut self.connect_timeout,
            "options" => &mut self.options,
            "client_encoding" => {
                // Values are decoded as UTF-8; any other encoding would
                // corrupt them.
                if value.eq_ignore_ascii_case("utf8") || value.eq_ignore_ascii_case("utf-8") {
                    return Ok(());
                }
                return Err(ConnInfoError::InvalidValue { key: key.into(), reason: "only UTF8 is supported" });
            }
            other => return Err(ConnInfoError::UnknownKey(other.chars().take(64).collect())),
        };
        *slot = Some(value);
        Ok(())
    }

    fn build(self) -> Result<ConnInfo, ConnInfoError> {
        let invalid = |key: &str, reason| ConnInfoError::InvalidValue { key: key.into(), reason };
        let port = match self.port.as_deref() {
            None | Some("") => 5432,
            Some(p) => p
                .parse::<u16>()
                .ok()
                .filter(|&p| p != 0)
                .ok_or_else(|| invalid("port", "expected a number from 1 to 65535"))?,
        };
        let host = match self.host.as_deref() {
            None | Some("") => Host::Tcp("localhost".into()),
            Some(h) if h.contains(',') => return Err(invalid("host", "multiple hosts are not supported")),
            Some(h) if h.starts_with('/') => Host::Unix(PathBuf::from(h)),
            Some(h) => Host::Tcp(h.to_owned()),
        };
        let sslmode = match self.sslmode.as_deref() {
            None | Some("") => SslMode::Prefer,
            Some("disable") => SslMode::Disable,
            Some("allow") | Some("prefer") => SslMode::Prefer,
            Some("require") => SslMode::Require,
            Some("verify-ca") => SslMode::VerifyCa,
            Some("verify-full") => SslMode::VerifyFull,
            Some(_) => return Err(invalid("sslmode", "expected disable, prefer, require, verify-ca or verify-full")),
        };
        let connect_timeout = match self.connect_timeout.as_deref() {
            None | Some("") | Some("0") => None,
            Some(s) => Some(Duration::from_secs(
                s.parse::<u64>().map_err(|_| invalid("connect_timeout", "expected whole seconds"))?,
            )),
        };
        let user = match self.user {
            Some(u) if !u.is_empty() => u,
            _ => std::env::var("USER").unwrap_or_else(|_| "postgres".into()),
        };
        let dbname = match self.dbname {
            Some(d) if !d.is_empty() => d,
            _ => user.clone(),
        };
        let path = |v: Option<String>| v.filter(|s| !s.is_empty()).map(PathBuf::from);
        Ok(ConnInfo {
            host,
            port,
            user,
            password: self.password.map(Secret),
            dbname,
            sslmode,
            sslrootcert: path(self.sslrootcert),
            sslcert: path(self.sslcert),
            sslkey: path(self.sslkey),
            application_name: self.application_name.filter(|s| !s.is_empty()),
            connect_timeout,
            options: self.options.filter(|s| !s.is_empty()),
        })
    }
}

impl FromStr for ConnInfo {
    type Err = ConnInfoError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut b = Builder::default();
        if let Some(rest) = s.strip_prefix("postgresql://").or_else(|| s.strip_prefix("postgres://")) {
            parse_url(rest, &mut b)?;
        } else {
            parse_keywords(s, &mut b)?;
        }
        b.build()
    }
}

fn percent_decode(s: &str, key: &str) -> Result<String, ConnInfoError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&c) = bytes.get(i) {
        if c == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| ConnInfoError::InvalidValue { key: key.into(), reason: "bad percent-encoding" })?;
            out.push(hex);
            i += 3;
        } else {
            out.push(c);
            i += 1;
        }
    }
    String::from_utf8(out)
        .map_err(|_| ConnInfoError::InvalidValue { key: key.into(), reason: "not valid UTF-8 after percent-decoding" })
}

fn parse_url(rest: &str, b: &mut Builder) -> Result<(), ConnInfoError> {
    let (main, query) = match rest.split_once('?') {
        Some((m, q)) => (m, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match main.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (main, None),
    };
    // The password may contain '@' only percent-encoded; the last '@'
    // separates credentials from the host.
    let (creds, hostport) = match authority.rsplit_once('@') {
        Some((c, h)) => (Some(c), h),
        None => (None, authority),
    };
    if let Some(c) = creds {
        let (user, pass) = match c.split_once(':') {
            Some((u, p)) => (u, Some(p)),
            None => (c, None),
        };
        if !user.is_empty() {
            b.set("user", percent_decode(user, "user")?)?;
        }
        if let Some(p) = pass {
            b.set("password", percent_decode(p, "password")?)?;
        }
    }
    if !hostport.is_empty() {
        let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
            let (h, after) = v6.split_once(']').ok_or(ConnInfoError::Syntax("unterminated IPv6 address in URL"))?;
            let port = match after.strip_prefix(':') {
                Some(p) => Some(p),
                None if after.is_empty() => None,
                None => return Err(ConnInfoError::Syntax("unexpected text after IPv6 address")),
            };
            (h.to_owned(), port)
        } else {
            match hostport.rsplit_once(':') {
                Some((h, p)) => (percent_decode(h, "host")?, Some(p)),
                None => (percent_decode(hostport, "host")?, None),
            }
        };
        if !host.is_empty() {
            b.set("host", host)?;
        }
        if let Some(p) = port {
            b.set("port", p.to_owned())?;
        }
    }
    if let Some(p) = path.filter(|p| !p.is_empty()) {
        b.set("dbname", percent_decode(p, "dbname")?)?;
    }
    for pair in query.unwrap_or_default().split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').ok_or(ConnInfoError::Syntax("URL parameter without '='"))?;
        let k = percent_decode(k, "parameter name")?;
        let v = percent_decode(v, &k)?;
        b.set(&k, v)?;
    }
    Ok(())
}

fn parse_keywords(s: &str, b: &mut Builder) -> Result<(), ConnInfoError> {
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(());
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(ConnInfoError::Syntax("expected key=value"));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => return Err(ConnInfoError::Syntax("unterminated quoted value")),
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some(c) => value.push(c),
                        None => return Err(ConnInfoError::Syntax("unterminated quoted value")),
                    },
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    match chars.next() {
                        Some(e) => value.push(e),
                        None => return Err(ConnInfoError::Syntax("dangling backslash")),
                    }
                } else {
                    value.push(c);
                }
            }
        }
        b.set(&key, value)?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let c: ConnInfo =
            "postgresql://u%40x:p%3Aw@[::1]:6000/d%20b?sslmode=require&application_name=a".parse().unwrap();
        assert_eq!(c.user, "u@x");
        assert_eq!(c.password.as_ref().map(Secret::expose), Some("p:w"));
        assert_eq!(c.host, Host::Tcp("::1".into()));
        assert_eq!(c.port, 6000);
        assert_eq!(c.dbname, "d b");
        assert_eq!(c.sslmode, SslMode::Require);
        assert_eq!(c.application_name.as_deref(), Some("a"));
        let u: ConnInfo = "postgres://%2Ftmp%2Fsock/db?user=x".parse().unwrap();
        assert_eq!(u.host, Host::Unix("/tmp/sock".into()));
        assert_eq!(u.port, 5432);
        assert_eq!(u.user, "x");
    }

    #[test]
    fn parses_keywords_with_quotes() {
        let c: ConnInfo =
            r"host=h port = 7 user=u password='it\'s a \\secret' dbname=x options='-c a=b'".parse().unwrap();
        assert_eq!(c.password.as_ref().map(Secret::expose), Some(r"it's a \secret"));
        assert_eq!(c.port, 7);
        assert_eq!(c.options.as_deref(), Some("-c a=b"));
        assert_eq!(c.sslmode, SslMode::Prefer);
    }

    #[test]
    fn errors_never_echo_secrets() {
        for bad in [
            "host=h password=hunter2 sslmode=bogus",
            "host=h password='hunter2",
            "postgres://u:hunter2@h:notaport/db",
            "postgres://u:hunter2%zz@h/db",
            "host=h hunter2",
            "password=hunter2 nosuchkey=1",
        ] {
            let err = bad.parse::<ConnInfo>().unwrap_err();
            let text = format!("{err} {err:?}");
            assert!(!text.contains("hunter2"), "{bad:?} leaked into {text}");
        }
        let ok: ConnInfo = "host=h password=hunter2".parse().unwrap();
        let text = format!("{ok} {ok:?}");
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"));
    }
}
