//! Ordinary (non-replication) connections via tokio-postgres, for catalog
//! queries, publication and slot management, and snapshots.

use std::time::Duration;

use flashsync_core::{SourceError, SourceErrorKind};
use tokio_postgres::config::SslMode as PgSslMode;
use tokio_postgres::{Client, NoTls};

use crate::conninfo::{ConnInfo, Host, SslMode};
use crate::error;
use crate::session;
use crate::tls::{self, MakeRustls};

/// Default for how long to wait to connect when the settings do not say.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Opens a connection with the pinned session settings applied. The
/// connection's I/O runs on a spawned task that ends with the [`Client`].
pub(crate) async fn connect(info: &ConnInfo, application_name: &str) -> Result<Client, SourceError> {
    // tokio-postgres's connect timeout covers only the TCP connect: a server
    // that accepts and then says nothing would hang the handshake forever.
    // One deadline covers everything up to a usable session.
    let limit = info.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    match tokio::time::timeout(limit, connect_unbounded(info, application_name)).await {
        Ok(result) => result,
        Err(_) => Err(SourceError::connection(format!(
            "connecting to {}:{} as {}: no usable session within {limit:?} (the server accepted the connection but did not complete the handshake)",
            info.host, info.port, info.user
        ))),
    }
}

async fn connect_unbounded(info: &ConnInfo, application_name: &str) -> Result<Client, SourceError> {
    let mut cfg = tokio_postgres::Config::new();
    match &info.host {
        Host::Tcp(h) => cfg.host(h),
        Host::Unix(p) => cfg.host_path(p),
    };
    cfg.port(info.port)
        .user(&info.user)
        .dbname(&info.dbname)
        .application_name(info.application_name.as_deref().unwrap_or(application_name))
        .connect_timeout(info.connect_timeout.unwrap_or(DEFAULT_CONNECT_TIMEOUT));
    if let Some(p) = &info.password {
        cfg.password(p.expose());
    }
    if let Some(o) = &info.options {
        cfg.options(o);
    }
    let what = format!("connecting to {}:{} as {}", info.host, info.port, info.user);
    let tls = match &info.host {
        // Postgres never offers TLS on Unix sockets.
        Host::Unix(_) => None,
        Host::Tcp(_) => {
            tls::client_config(info).map_err(|e| SourceError::new(SourceErrorKind::Refused, format!("{what}: {e}")))?
        }
    };
    let client = match tls {
        None => {
            cfg.ssl_mode(PgSslMode::Disable);
            let (client, conn) = cfg.connect(NoTls).await.map_err(|e| error::pg(&what, &e))?;
            tokio::spawn(async move {
                // The error, if any, surfaces on the client's next call.
                let _ = conn.await;
            });
            client
        }
        Some(config) => {
            cfg.ssl_mode(match info.sslmode {
                SslMode::Prefer | SslMode::Disable => PgSslMode::Prefer,
                _ => PgSslMode::Require,
            });
            let (client, conn) = cfg.connect(MakeRustls { config }).await.map_err(|e| error::pg(&what, &e))?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            client
        }
    };
    client.batch_execute(&session::set_statement()).await.map_err(|e| error::pg("pinning session settings", &e))?;
    Ok(client)
}

/// One cached control connection, shared by a source and its feeds'
/// relation watch, reconnected when it breaks.
#[derive(Clone)]
pub(crate) struct SharedControl {
    info: ConnInfo,
    application_name: String,
    client: std::sync::Arc<tokio::sync::Mutex<Option<Client>>>,
}

impl std::fmt::Debug for SharedControl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedControl").field("conn", &self.info.to_string()).finish_non_exhaustive()
    }
}

impl SharedControl {
    /// Connects lazily with these settings.
    pub(crate) fn new(info: ConnInfo, application_name: String) -> Self {
        SharedControl { info, application_name, client: std::sync::Arc::default() }
    }

    /// A new connection of its own (not the shared one).
    pub(crate) async fn connect_new(&self) -> Result<Client, SourceError> {
        connect(&self.info, &self.application_name).await
    }

    /// Runs `f` with the shared connection, reconnecting if needed. Hold it
    /// briefly: every control operation of the origin waits for it.
    pub(crate) async fn with<T>(
        &self,
        f: impl for<'c> FnOnce(&'c Client) -> futures::future::BoxFuture<'c, Result<T, SourceError>>,
    ) -> Result<T, SourceError> {
        let mut guard = self.client.lock().await;
        // A cached connection may have died with the server (restart,
        // failover) without noticing yet: probe it before use.
        let cached = match guard.take() {
            Some(c) if !c.is_closed() && c.batch_execute("").await.is_ok() => Some(c),
            _ => None,
        };
        let client = match cached {
            Some(c) => c,
            None => self.connect_new().await?,
        };
        let out = f(&client).await;
        // Keep the connection unless it broke.
        if !client.is_closed() && !matches!(&out, Err(e) if e.kind == SourceErrorKind::Connection) {
            *guard = Some(client);
        }
        out
    }
}
