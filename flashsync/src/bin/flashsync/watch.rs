//! `flashsync watch`: the change feed of a running `flashsync run`, as
//! lines: one per upstream transaction (or replaced copy), as text or JSON.
//!
//! The running process serves it on its admin socket ([`crate::admin`]):
//! a `watch` request is answered by a header line, then one JSON line per
//! feed item, until the client goes or the engine stops (`{"end":true}`).
//! A watcher that falls behind gets an error line and the connection ends:
//! sync never waits for a slow terminal.

use std::collections::HashMap;

use flashsync::{ChangeFeed, Engine, FeedItem, Position, RowChange, ViewName};
use serde_json::{json, Map, Value as Json};
use tokio::io::AsyncWriteExt;

use crate::admin::{self, Request};
use crate::config::Config;
use crate::output::value_json;
use crate::CliError;

/// Column names and types of a view, for rendering its rows.
struct Shape {
    names: Vec<String>,
    types: Vec<String>,
}

/// Renders feed items as JSON, with rows as objects keyed by column name.
pub struct Renderer {
    engine: Engine,
    shapes: HashMap<ViewName, Shape>,
}

impl Renderer {
    pub fn new(engine: Engine) -> Renderer {
        Renderer { engine, shapes: HashMap::new() }
    }

    async fn shape(&mut self, view: &ViewName) -> &Shape {
        if !self.shapes.contains_key(view) {
            let shape = match self.engine.schema(&view.to_string()).await {
                Ok(s) => Shape {
                    names: s.columns.iter().map(|c| c.name.clone()).collect(),
                    types: s.columns.iter().map(|c| c.type_name.clone()).collect(),
                },
                Err(_) => Shape { names: Vec::new(), types: Vec::new() },
            };
            self.shapes.insert(view.clone(), shape);
        }
        &self.shapes[view]
    }

    async fn object(&mut self, view: &ViewName, values: &[flashsync::Value]) -> Json {
        let shape = self.shape(view).await;
        let mut obj = Map::new();
        for (i, v) in values.iter().enumerate() {
            let name = shape.names.get(i).cloned().unwrap_or_else(|| format!("column{i}"));
            obj.insert(name, value_json(v, shape.types.get(i).map_or("", String::as_str)));
        }
        Json::Object(obj)
    }

    fn key(key: &flashsync::Key) -> Json {
        Json::Array(key.0.iter().map(|v| value_json(v, "")).collect())
    }

    /// One feed item as a JSON line's value.
    pub async fn render(&mut self, item: &FeedItem) -> Json {
        if let FeedItem::Replaced { view, .. } | FeedItem::Forgotten { view } = item {
            // A new copy may have other columns (a redefinition).
            self.shapes.remove(view);
        }
        match item {
            FeedItem::Changes(c) => {
                let mut views = Vec::new();
                for v in &c.views {
                    let mut changes = Vec::new();
                    for change in &v.changes {
                        changes.push(match change {
                            RowChange::Insert { row, .. } => {
                                json!({"op": "insert", "row": self.object(&v.view, &row.0).await})
                            }
                            RowChange::Update { row, .. } => {
                                json!({"op": "update", "row": self.object(&v.view, &row.0).await})
                            }
                            RowChange::Delete { key } => json!({"op": "delete", "key": Self::key(key)}),
                            RowChange::Truncate => json!({"op": "truncate"}),
                        });
                    }
                    views.push(json!({"view": v.view.to_string(), "changes": changes}));
                }
                let (kind, lsn, time) = match &c.position {
                    Position::Commit { lsn, time } => {
                        ("commit", Json::from(lsn.to_string()), time.map_or(Json::Null, |t| json!(t.to_string())))
                    }
                    Position::Replay => ("replay", Json::Null, Json::Null),
                };
                json!({"kind": kind, "origin": c.origin.to_string(), "lsn": lsn, "commit_time": time, "views": views})
            }
            FeedItem::Replaced { view, rows } => {
                json!({"kind": "replaced", "view": view.to_string(), "rows": rows.len()})
            }
            FeedItem::Forgotten { view } => json!({"kind": "forgotten", "view": view.to_string()}),
        }
    }
}

/// Serves a `watch` request: the feed's items as JSON lines on `out`, until
/// the client goes (`gone` resolves, or a write fails) or the feed ends.
/// Until then the engine captures changes for it, so a client that left
/// must not linger.
pub async fn serve(
    engine: &Engine,
    selector: &str,
    out: &mut (impl AsyncWriteExt + Unpin),
    gone: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    tokio::pin!(gone);
    let mut feed: ChangeFeed = match engine.changes(selector).await {
        Ok(f) => f,
        Err(e) => return admin::send(out, &json!({"ok": false, "error": e.to_string()})).await,
    };
    admin::send(out, &json!({"ok": true})).await?;
    let mut renderer = Renderer::new(engine.clone());
    loop {
        // `next` is cancel-safe: losing the race to `gone` loses nothing.
        let next = tokio::select! {
            () = &mut gone => return Ok(()),
            next = feed.next() => next,
        };
        let line = match next {
            Some(Ok(item)) => renderer.render(&item).await,
            Some(Err(e)) => return admin::send(out, &json!({"ok": false, "error": e.to_string()})).await,
            None => return admin::send(out, &json!({"end": true})).await,
        };
        admin::send(out, &line).await?;
    }
}

/// `flashsync watch SELECTOR`: prints the running process's change feed.
pub async fn watch(config: &Config, selector: &str, as_json: bool) -> Result<(), CliError> {
    let dir = config.admin_dir();
    let Some(conn) = admin::connect(&dir).await else {
        return Err(CliError(format!(
            "flashsync watch follows a running `flashsync run`, and none serves at {}",
            admin::socket_path(&dir).display()
        )));
    };
    let request = Request::Watch { selector: selector.to_owned() };
    admin::stream(conn, &request, |line| {
        if line.get("ok").is_some() {
            // Subscribed: from here on nothing is missed. Said on stderr so
            // stdout stays the feed alone.
            eprintln!("watching {selector}: a line per change once it is visible locally (Ctrl-C to stop)");
            return Ok(());
        }
        let text = if as_json { line.to_string() } else { text_line(&line) };
        use std::io::Write;
        let mut out = std::io::stdout().lock();
        writeln!(out, "{text}").and_then(|()| out.flush())
    })
    .await
}

/// One item for people: `LSN time view op row`, a line per change.
fn text_line(item: &Json) -> String {
    let kind = item["kind"].as_str().unwrap_or("?");
    match kind {
        "replaced" => {
            format!("{} replaced by a new copy ({} rows)", item["view"].as_str().unwrap_or("?"), item["rows"])
        }
        "forgotten" => format!("{} forgotten", item["view"].as_str().unwrap_or("?")),
        _ => {
            let at = match (item["lsn"].as_str(), item["commit_time"].as_str()) {
                (Some(lsn), Some(t)) => format!("{lsn} {t}"),
                (Some(lsn), None) => lsn.to_owned(),
                _ => kind.to_owned(),
            };
            let mut lines = Vec::new();
            for v in item["views"].as_array().into_iter().flatten() {
                let view = v["view"].as_str().unwrap_or("?");
                for c in v["changes"].as_array().into_iter().flatten() {
                    let op = c["op"].as_str().unwrap_or("?");
                    let what = c.get("row").or_else(|| c.get("key")).map(Json::to_string).unwrap_or_default();
                    lines.push(format!("{at} {view} {op} {what}").trim_end().to_owned());
                }
            }
            lines.join("\n")
        }
    }
}
