//! The configuration file: where the store lives, which origins exist, which
//! views to sync.
//!
//! ```toml
//! store = "./flashsync-data"          # relative to this file: db/ holds the data, admin/ the socket
//! # store = "sqlite:./mirror.db"      # or a SQLite database any process can query (admin: mirror.db-admin/)
//!
//! [origins."postgres:main"]
//! url_env = "DATABASE_URL"            # or: url = "postgres://app@db/main?sslmode=verify-full"
//!
//! [[views]]
//! name = "users_cache"                # namespace defaults to "public"
//! persistence = "materialized"
//! origin = "postgres:main"
//! upstream = "public.users"
//!
//! [[views]]
//! namespace = "public"
//! name = "posts_live"
//! persistence = "realtime"
//! origin = "postgres:main"
//! upstream = "public.posts"
//!
//! [[views]]
//! name = "my_tickets"                 # a partial view: some rows, some columns
//! persistence = "realtime"
//! origin = "postgres:main"
//! upstream = "public.tickets"
//! where = "tenant_id = 42 AND status <> 'archived'"
//! columns = ["id", "title", "status"]  # must include the primary key
//!
//! [metrics]
//! listen = "127.0.0.1:9187"           # Prometheus /metrics, /healthz, /readyz (off without this)
//!
//! [copy]
//! chunk_rows = 1000000                # most rows per chunk of a realtime copy (0: in one piece)
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use flashsync::postgres::{ConnInfo, PgSource, PgSourceConfig};
use flashsync::{Persistence, ViewDef};
use flashsync_core::OriginId;
use serde::Deserialize;

/// The config file did not load.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path} is not valid: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Raw {
    store: PathBuf,
    #[serde(default)]
    origins: BTreeMap<String, RawOrigin>,
    #[serde(default)]
    views: Vec<RawView>,
    metrics: Option<RawMetrics>,
    copy: Option<RawCopy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCopy {
    chunk_rows: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMetrics {
    listen: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOrigin {
    url: Option<String>,
    url_env: Option<String>,
    slot: Option<String>,
    publication: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawView {
    #[serde(default = "public")]
    namespace: String,
    name: String,
    persistence: String,
    origin: String,
    upstream: String,
    #[serde(rename = "where")]
    filter: Option<String>,
    columns: Option<Vec<String>>,
}

fn public() -> String {
    "public".into()
}

/// How to reach one origin.
pub struct Origin {
    pub id: OriginId,
    conn: Result<ConnInfo, String>,
    slot: Option<String>,
    publication: Option<String>,
}

impl Origin {
    /// Whether `other` reaches the same server the same way (connection
    /// settings compared whole, password included).
    pub fn same_as(&self, other: &Origin) -> bool {
        self.id == other.id
            && self.slot == other.slot
            && self.publication == other.publication
            && self.conn == other.conn
    }

    /// The Postgres source for this origin, syncing into the store with id
    /// `store_id` (its slot and publication are named after the store unless
    /// the config names them); fails only when the connection settings are
    /// missing or invalid (nothing connects yet).
    pub fn source(&self, store_id: Option<&str>) -> Result<PgSource, String> {
        let conn = self.conn.clone()?;
        let mut cfg = PgSourceConfig::for_store(&self.id, conn, store_id);
        if let Some(s) = &self.slot {
            cfg.slot_name = s.clone();
        }
        if let Some(p) = &self.publication {
            cfg.publication_name = p.clone();
        }
        PgSource::new(cfg).map_err(|e| format!("origin {}: {e}", self.id))
    }
}

/// Which store the mirror lives in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreKind {
    /// A fjall directory (`store = "./dir"`): fastest; read through the
    /// engine, or through a running `flashsync run`.
    Fjall,
    /// A SQLite database file (`store = "sqlite:./mirror.db"`): any
    /// process can query it with SQL while sync runs.
    Sqlite,
}

/// A loaded, validated configuration.
pub struct Config {
    /// The fjall store's directory, or the SQLite database file.
    pub store: PathBuf,
    pub store_kind: StoreKind,
    pub origins: Vec<Origin>,
    pub views: Vec<ViewDef>,
    /// Where `run` serves `/metrics`, `/healthz` and `/readyz`, if anywhere.
    pub metrics_listen: Option<std::net::SocketAddr>,
    /// The most rows a chunk of a realtime view's copy asks for (`[copy] chunk_rows`), if
    /// not the engine's default.
    pub chunk_rows: Option<u64>,
}

impl Config {
    /// Where `run` serves its admin socket: `<dir>/admin` for fjall, a
    /// `<file>-admin` directory beside a SQLite database (SQLite readers
    /// want the database's own directory left to its files).
    pub fn admin_dir(&self) -> PathBuf {
        match self.store_kind {
            StoreKind::Fjall => self.store.join("admin"),
            StoreKind::Sqlite => {
                let mut name = self.store.file_name().unwrap_or_default().to_owned();
                name.push("-admin");
                self.store.with_file_name(name)
            }
        }
    }

    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Self::parse(path, &text)
    }

    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let invalid = |message: String| ConfigError::Invalid { path: path.into(), message };
        let raw: Raw =
            toml::from_str(text).map_err(|e| ConfigError::Parse { path: path.into(), message: e.to_string() })?;
        let base = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        let (store_kind, raw_store) = match raw.store.to_str().and_then(|s| s.strip_prefix("sqlite:")) {
            Some("") => return Err(invalid("store = \"sqlite:\" needs a file name".into())),
            Some(file) => (StoreKind::Sqlite, PathBuf::from(file)),
            None => (StoreKind::Fjall, raw.store),
        };
        let store = if raw_store.is_absolute() { raw_store } else { base.join(raw_store) };
        let mut origins = Vec::new();
        for (id, o) in raw.origins {
            let id = OriginId::new(&id).map_err(|e| invalid(format!("origin {id:?}: {e}")))?;
            let conn = match (o.url, o.url_env) {
                (Some(_), Some(_)) => return Err(invalid(format!("origin {id}: give url or url_env, not both"))),
                (None, None) => return Err(invalid(format!("origin {id}: needs url or url_env"))),
                (Some(url), None) => url.parse::<ConnInfo>().map_err(|e| format!("origin {id}: {e}")),
                (None, Some(var)) => match std::env::var(&var) {
                    Ok(url) => url.parse::<ConnInfo>().map_err(|e| format!("origin {id} (from ${var}): {e}")),
                    Err(_) => Err(format!("origin {id}: environment variable {var} is not set")),
                },
            };
            origins.push(Origin { id, conn, slot: o.slot, publication: o.publication });
        }
        let mut views = Vec::new();
        for v in raw.views {
            let persistence: Persistence =
                v.persistence.parse().map_err(|e| invalid(format!("view {}.{}: {e}", v.namespace, v.name)))?;
            let (schema, table) = split_relation(&v.upstream).ok_or_else(|| {
                invalid(format!("view {}.{}: upstream {:?} must be schema.table", v.namespace, v.name, v.upstream))
            })?;
            let named = |e: flashsync_core::DefinitionError| invalid(format!("view {}.{}: {e}", v.namespace, v.name));
            let mut def =
                ViewDef::new(&v.namespace, &v.name, persistence, &v.origin, &schema, &table).map_err(named)?;
            if let Some(filter) = &v.filter {
                def = def.with_filter(filter).map_err(named)?;
            }
            if let Some(columns) = v.columns {
                def = def.with_columns(columns).map_err(named)?;
            }
            if !origins.iter().any(|o| o.id == def.origin) {
                return Err(invalid(format!(
                    "view {}: origin {} is not configured under [origins]",
                    def.name, def.origin
                )));
            }
            if views.iter().any(|d: &ViewDef| d.name == def.name) {
                return Err(invalid(format!("view {} is defined twice", def.name)));
            }
            views.push(def);
        }
        let metrics_listen = match raw.metrics {
            Some(m) => Some(m.listen.parse().map_err(|e| {
                invalid(format!(
                    "[metrics] listen = {:?}: {e} (want an address and port, e.g. 127.0.0.1:9187)",
                    m.listen
                ))
            })?),
            None => None,
        };
        let chunk_rows = raw.copy.and_then(|c| c.chunk_rows);
        Ok(Config { store, store_kind, origins, views, metrics_listen, chunk_rows })
    }
}

/// Splits `schema.table`; either part may be double-quoted (`""` escapes a quote).
pub fn split_relation(text: &str) -> Option<(String, String)> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut chars = text.trim().chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted {
        return None;
    }
    parts.push(cur);
    match parts.as_slice() {
        [s, t] if !s.is_empty() && !t.is_empty() => Some((s.clone(), t.clone())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_config_and_rejects_mistakes() {
        let text = r#"
store = "data"
[origins."postgres:main"]
url = "postgres://app:s3cret@localhost:5432/main"
[[views]]
name = "users_cache"
persistence = "materialized"
origin = "postgres:main"
upstream = 'public."Odd.Name"'
"#;
        let c = Config::parse(Path::new("/etc/fs/flashsync.toml"), text).unwrap();
        assert_eq!(c.store, Path::new("/etc/fs/data"));
        assert_eq!(c.views[0].upstream.table, "Odd.Name");
        assert!(c.origins[0].source(Some("0123456789ab")).is_ok());

        let bad_origin = text.replace("origin = \"postgres:main\"\nupstream", "origin = \"postgres:other\"\nupstream");
        assert!(matches!(Config::parse(Path::new("x.toml"), &bad_origin), Err(ConfigError::Invalid { .. })));
        let typo = text.replace("persistence = \"materialized\"", "persistance = \"materialized\"");
        assert!(matches!(Config::parse(Path::new("x.toml"), &typo), Err(ConfigError::Parse { .. })));
        let e = Config::parse(Path::new("x.toml"), &text.replace("s3cret@localhost:5432", "s3cret@:notaport"))
            .map(|c| c.origins[0].source(None).err());
        assert!(!format!("{e:?}").contains("s3cret"), "secrets never appear in errors");
    }

    #[test]
    fn partial_views_are_parsed_and_bad_filters_refused_naming_the_view() {
        let text = r#"
store = "data"
[origins."postgres:main"]
url = "postgres://app@localhost/main"
[[views]]
name = "mine"
persistence = "realtime"
origin = "postgres:main"
upstream = "public.tickets"
where = "tenant_id = 42 AND status <> 'archived'"
columns = ["id", "title", "status"]
"#;
        let c = Config::parse(Path::new("x.toml"), text).unwrap();
        let def = &c.views[0];
        assert_eq!(def.filter.as_ref().map(|f| f.text()), Some("tenant_id = 42 AND status <> 'archived'"));
        assert_eq!(def.columns.as_deref(), Some(&["id".to_string(), "title".into(), "status".into()][..]));
        for (bad, says) in
            [("1=1; DROP TABLE t", "`;`"), ("lower(title) = 'x'", "lower()"), ("id IN (SELECT 1)", "subquery")]
        {
            let text = text.replace("tenant_id = 42 AND status <> 'archived'", bad);
            let e = Config::parse(Path::new("x.toml"), &text).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("public.mine") && e.contains(says), "{bad}: {e}");
        }
        let dup = text.replace(r#"["id", "title", "status"]"#, r#"["id", "id"]"#);
        assert!(Config::parse(Path::new("x.toml"), &dup).is_err());
    }

    #[test]
    fn splits_relations() {
        assert_eq!(split_relation("public.users"), Some(("public".into(), "users".into())));
        assert_eq!(split_relation(r#""a.b"."c""d""#), Some(("a.b".into(), "c\"d".into())));
        assert_eq!(split_relation("users"), None);
        assert_eq!(split_relation("a.b.c"), None);
        assert_eq!(split_relation("\"a.b"), None);
    }
}
