//! `[metrics] listen = "…"`: what a running `flashsync run` serves over HTTP
//! for monitoring.
//!
//! - `GET /metrics`: Prometheus text format — per origin the lag behind the
//!   server in bytes and seconds and the WAL its slot retains; per view its
//!   state, whether it is enabled and its retries; per upstream relation
//!   being copied, the rows copied so far; engine counters (commits
//!   applied, batches, snapshots, acks).
//! - `GET /healthz`: 200 while the engine answers (the process is live).
//! - `GET /readyz`: 200 once every enabled view is `synced` (materialized)
//!   or `running` (realtime); 503 with the views that are not, otherwise.
//!
//! Values are read when scraped; nothing is kept between scrapes.

use std::convert::Infallible;
use std::net::SocketAddr;

use flashsync::{Engine, JobState, Persistence};
use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Request, Response, StatusCode};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use crate::CliError;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OriginLabel {
    origin: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewLabel {
    view: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RelationLabel {
    relation: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ViewStateLabel {
    view: String,
    state: String,
}

/// Binds `listen` (first thing `run` does, so a taken port fails it before
/// it touches the store).
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, CliError> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| CliError(format!("[metrics] cannot listen on {listen}: {e}")))
}

/// Serves the endpoints on `listener` until the process ends; returns the
/// bound address (port 0 picks one).
pub fn serve(engine: Engine, listener: tokio::net::TcpListener) -> Result<SocketAddr, CliError> {
    let bound = listener.local_addr().map_err(|e| CliError(format!("[metrics] {e}")))?;
    tokio::spawn(async move {
        loop {
            let stream = match listener.accept().await {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of file descriptors, say: a retry at full speed
                    // would spin; the next connection can wait a moment.
                    tracing::warn!("accepting a connection failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            };
            let engine = engine.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| answer(engine.clone(), req));
                let io = hyper_util::rt::TokioIo::new(stream);
                if let Err(e) = hyper::server::conn::http1::Builder::new().serve_connection(io, service).await {
                    tracing::debug!("metrics connection: {e}");
                }
            });
        }
    });
    Ok(bound)
}

async fn answer(engine: Engine, req: Request<hyper::body::Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let (status, content_type, body) = match (req.method(), req.uri().path()) {
        (&hyper::Method::GET, "/metrics") => match metrics(&engine).await {
            Ok(text) => (StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", text),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{e}\n")),
        },
        (&hyper::Method::GET, "/healthz") => match engine.status("*").await {
            Ok(_) => (StatusCode::OK, "text/plain", "ok\n".into()),
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{e}\n")),
        },
        (&hyper::Method::GET, "/readyz") => match not_ready(&engine).await {
            Ok(waiting) if waiting.is_empty() => (StatusCode::OK, "text/plain", "ready\n".into()),
            Ok(waiting) => {
                (StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("not ready: {}\n", waiting.join(", ")))
            }
            Err(e) => (StatusCode::SERVICE_UNAVAILABLE, "text/plain", format!("{e}\n")),
        },
        _ => (StatusCode::NOT_FOUND, "text/plain", "try /metrics, /healthz or /readyz\n".into()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    if let Ok(v) = hyper::header::HeaderValue::from_str(content_type) {
        response.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    Ok(response)
}

/// Enabled views not yet synced (materialized) or running (realtime).
async fn not_ready(engine: &Engine) -> Result<Vec<String>, flashsync::EngineError> {
    let records = engine.status("*").await?;
    Ok(records
        .iter()
        .filter(|r| r.enabled)
        .filter(|r| {
            let want = match r.persistence {
                Persistence::Materialized => JobState::Synced,
                Persistence::Realtime => JobState::Running,
            };
            r.state != want
        })
        .map(|r| format!("{}.{} ({})", r.namespace, r.name, r.state))
        .collect())
}

async fn metrics(engine: &Engine) -> Result<String, String> {
    let mut registry = Registry::with_prefix("flashsync");

    let lag_bytes = Family::<OriginLabel, Gauge>::default();
    let lag_seconds = Family::<OriginLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let retained = Family::<OriginLabel, Gauge>::default();
    for l in engine.lag() {
        let label = OriginLabel { origin: l.origin.to_string() };
        if let (Some(b), Some(s)) = (l.lag_bytes, l.lag_seconds) {
            lag_bytes.get_or_create(&label).set(i64::try_from(b).unwrap_or(i64::MAX));
            lag_seconds.get_or_create(&label).set(s);
        }
        if let Some(r) = l.retained_bytes {
            retained.get_or_create(&label).set(i64::try_from(r).unwrap_or(i64::MAX));
        }
    }
    registry.register("origin_lag_bytes", "WAL bytes the durable mirror is behind the server", lag_bytes);
    registry.register(
        "origin_lag_seconds",
        "Seconds since the server first passed the mirror's durable position",
        lag_seconds,
    );
    registry.register(
        "origin_slot_retained_bytes",
        "WAL the origin's replication slot retains on the server",
        retained,
    );

    let state = Family::<ViewStateLabel, Gauge>::default();
    let enabled = Family::<ViewLabel, Gauge>::default();
    let retries = Family::<ViewLabel, Gauge>::default();
    for r in engine.status("*").await.map_err(|e| e.to_string())? {
        let view = format!("{}.{}", r.namespace, r.name);
        for s in [JobState::Idle, JobState::Synced, JobState::Running, JobState::Failed] {
            state
                .get_or_create(&ViewStateLabel { view: view.clone(), state: s.to_string() })
                .set(i64::from(r.state == s));
        }
        enabled.get_or_create(&ViewLabel { view: view.clone() }).set(i64::from(r.enabled));
        retries.get_or_create(&ViewLabel { view }).set(i64::from(r.retry_count));
    }
    registry.register("view_state", "1 for the view's current job state", state);
    registry.register("view_enabled", "1 if the view is enabled (not stopped)", enabled);
    registry.register("view_retries", "Consecutive failed attempts of the view's job", retries);

    let copying = Family::<RelationLabel, Gauge>::default();
    let estimated = Family::<RelationLabel, Gauge>::default();
    let eta = Family::<RelationLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
    let chunks = Family::<RelationLabel, Gauge>::default();
    let resumed = Family::<RelationLabel, Gauge>::default();
    for p in engine.snapshots() {
        let label = RelationLabel { relation: p.relation.to_string() };
        copying.get_or_create(&label).set(i64::try_from(p.rows).unwrap_or(i64::MAX));
        if p.resumed_rows > 0 {
            resumed.get_or_create(&label).set(i64::try_from(p.resumed_rows).unwrap_or(i64::MAX));
        }
        chunks.get_or_create(&label).set(i64::from(p.chunks));
        if let Some(total) = p.estimated_rows {
            estimated.get_or_create(&label).set(i64::try_from(total).unwrap_or(i64::MAX));
        }
        if let Some(left) = p.eta() {
            eta.get_or_create(&label).set(left.as_secs_f64());
        }
    }
    registry.register("snapshot_rows", "Rows copied so far by snapshots in progress (by upstream table)", copying);
    registry.register(
        "snapshot_rows_estimated",
        "About how many rows snapshots in progress will copy, from the server's statistics",
        estimated,
    );
    registry.register("snapshot_eta_seconds", "Time left for snapshots in progress at their rate so far", eta);
    registry.register("snapshot_chunks", "Chunks copied so far by snapshots in progress made in chunks", chunks);
    registry.register(
        "snapshot_rows_resumed",
        "Rows a copy in progress held from its checkpoint when this process continued it (not in snapshot_rows)",
        resumed,
    );

    let stats = engine.stats().await.map_err(|e| e.to_string())?;
    for (name, help, value) in [
        ("commits_applied", "Upstream transactions applied", stats.commits_applied),
        ("batches", "Store batches written", stats.batches),
        ("snapshots", "Snapshots taken", stats.snapshots),
        ("acks", "Positions acknowledged upstream", stats.acks),
        ("subscribes", "Feed connections opened", stats.subscribes),
    ] {
        let counter = Counter::<u64>::default();
        counter.inc_by(value);
        registry.register(name, help, counter);
    }

    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry).map_err(|e| format!("encoding metrics: {e}"))?;
    Ok(text)
}
