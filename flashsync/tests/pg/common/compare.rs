//! Comparing local copies with upstream tables, as text rows.

use super::*;

/// A row as comparable text: `None` is NULL. Floats are normalised to their
/// exact binary value, everything else is Postgres' text output (pinned
/// session settings: ISO dates, UTC, hex bytea).
pub type TextRow = Vec<Option<String>>;

fn float_text(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else {
        format!("{v:?}")
    }
}

/// A local value as text, comparable with the upstream `::text` form.
pub fn local_text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Int(i) => Some(i.to_string()),
        Value::Float(f) => Some(float_text(*f)),
        Value::Text(s) => Some(s.clone()),
        Value::Bytes(b) => Some(format!("\\x{}", b.iter().map(|x| format!("{x:02x}")).collect::<String>())),
    }
}

fn upstream_text(type_name: &str, text: Option<String>) -> Option<String> {
    let text = text?;
    Some(match type_name {
        "float4" => float_text(f64::from(text.parse::<f32>().unwrap_or_else(|e| panic!("float4 {text:?}: {e}")))),
        "float8" => float_text(text.parse::<f64>().unwrap_or_else(|e| panic!("float8 {text:?}: {e}"))),
        _ => text,
    })
}

/// The local rows of `view`, as sorted text rows.
pub fn local_text_rows(rows: &[Row]) -> Vec<TextRow> {
    let mut out: Vec<TextRow> = rows.iter().map(|r| r.0.iter().map(local_text).collect()).collect();
    out.sort();
    out
}

/// Every row of upstream `schema.table`, the columns of `columns` cast to
/// text, sorted.
pub async fn upstream_text_rows(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
    columns: &[flashsync_core::Column],
) -> Vec<TextRow> {
    upstream_text_rows_where(client, schema, table, columns, None).await
}

/// Like [`upstream_text_rows`], only the rows for which the SQL boolean
/// expression `filter` holds (what a partial view must keep).
pub async fn upstream_text_rows_where(
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
    columns: &[flashsync_core::Column],
    filter: Option<&str>,
) -> Vec<TextRow> {
    let cols = if columns.is_empty() {
        "1".to_owned()
    } else {
        columns
            .iter()
            .map(|c| {
                let col = flashsync_source_pg::ident::quote_ident(&c.name);
                // `::text` trims char(n)'s padding; its output form keeps it.
                if c.type_name == "bpchar" {
                    format!("CASE WHEN {col} IS NULL THEN NULL ELSE concat({col}) END")
                } else {
                    format!("{col}::text")
                }
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let rows = client
        .query(
            &format!(
                "SELECT {cols} FROM {}{}",
                qualified(schema, table),
                filter.map(|f| format!(" WHERE {f}")).unwrap_or_default()
            ),
            &[],
        )
        .await
        .unwrap_or_else(|e| panic!("reading upstream {schema}.{table}: {e}"));
    let mut out: Vec<TextRow> = rows
        .iter()
        .map(|r| columns.iter().enumerate().map(|(i, c)| upstream_text(&c.type_name, r.get(i))).collect())
        .collect();
    out.sort();
    out
}

/// A short description of how two sorted row multisets differ.
pub fn diff(local: &[TextRow], upstream: &[TextRow]) -> String {
    let mut count: BTreeMap<&TextRow, i64> = BTreeMap::new();
    for r in upstream {
        *count.entry(r).or_default() += 1;
    }
    for r in local {
        *count.entry(r).or_default() -= 1;
    }
    let show = |r: &TextRow, n: i64| {
        let cells: Vec<String> = r
            .iter()
            .map(|c| match c {
                None => "NULL".to_owned(),
                Some(t) if t.chars().count() > 80 => format!("{:?}…", t.chars().take(80).collect::<String>()),
                Some(t) => format!("{t:?}"),
            })
            .collect();
        format!("({}) x{}", cells.join(", "), n.abs())
    };
    let missing: Vec<_> = count.iter().filter(|(_, n)| **n > 0).take(5).map(|(r, n)| show(r, *n)).collect();
    let extra: Vec<_> = count.iter().filter(|(_, n)| **n < 0).take(5).map(|(r, n)| show(r, *n)).collect();
    let (nm, ne): (i64, i64) = count.values().fold((0, 0), |(m, e), n| if *n > 0 { (m + n, e) } else { (m, e - n) });
    format!(
        "local has {} rows, upstream {}; {nm} upstream rows missing locally (first: {missing:?}), \
         {ne} local rows not upstream (first: {extra:?})",
        local.len(),
        upstream.len()
    )
}

/// Waits until the local copy of view `name` equals upstream `schema.table`
/// exactly (as a multiset: doubled rows count). Upstream must be quiet.
pub async fn assert_converges(
    engine: &Engine,
    name: &str,
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
    timeout: Duration,
) -> Vec<TextRow> {
    assert_converges_where(engine, name, client, schema, table, None, timeout).await
}

/// Waits until the local copy of view `name` equals `SELECT <its columns>
/// FROM schema.table WHERE filter` exactly. Upstream must be quiet.
pub async fn assert_converges_where(
    engine: &Engine,
    name: &str,
    client: &tokio_postgres::Client,
    schema: &str,
    table: &str,
    filter: Option<&str>,
    timeout: Duration,
) -> Vec<TextRow> {
    let cols = engine.schema(name).await.unwrap_or_else(|e| panic!("schema of {name}: {e}")).columns;
    let upstream = upstream_text_rows_where(client, schema, table, &cols, filter).await;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let local = local_text_rows(&engine.scan_all(name).await.unwrap_or_else(|e| panic!("scan {name}: {e}")));
        if local == upstream {
            return upstream;
        }
        if tokio::time::Instant::now() >= deadline {
            let status = engine.status(name).await.ok();
            panic!(
                "view {name} did not converge to upstream {schema}.{table} within {timeout:?}: {}\nstatus: {status:#?}",
                diff(&local, &upstream)
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The status record of one view.
pub async fn status(engine: &Engine, name: &str) -> JobRecord {
    let mut s = engine.status(name).await.unwrap();
    assert_eq!(s.len(), 1, "status of {name}: {s:?}");
    s.remove(0)
}

/// Waits until view `name` is in `state`.
pub async fn wait_state(engine: &Engine, name: &str, state: flashsync::JobState) -> JobRecord {
    let e = engine.clone();
    wait_for(&format!("{name} to be {state}"), WAIT, move || {
        let e = e.clone();
        async move {
            let s = status(&e, name).await;
            (s.state == state).then_some(s)
        }
    })
    .await
}

/// Collects engine events in the background.
pub struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    /// Starts collecting `engine`'s events.
    pub fn collect(engine: &Engine) -> Events {
        let mut rx = engine.events();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => s.lock().unwrap().push(e),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                }
            }
        });
        Events(seen)
    }

    /// Error messages seen so far.
    pub fn errors(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Error { message } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    /// Conflict messages seen so far.
    pub fn conflicts(&self) -> Vec<String> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter_map(|e| match &e.kind {
                EventKind::Conflict { message } => Some(message.clone()),
                _ => None,
            })
            .collect()
    }

    /// Waits for an error event containing `text`.
    pub async fn wait_error(&self, text: &str) -> String {
        let me = self;
        wait_for(&format!("an error event containing {text:?}"), WAIT, move || async move {
            me.errors().into_iter().find(|m| m.contains(text))
        })
        .await
    }
}
