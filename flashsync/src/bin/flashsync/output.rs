//! Rendering for people (tables, summaries) and for programs (JSON).

use flashsync::{JobRecord, Row, SyncSummary, Value};
use serde_json::{json, Value as Json};

/// A value as JSON; `type_name` is its column's upstream type.
pub fn value_json(v: &Value, type_name: &str) -> Json {
    match v {
        Value::Null => Json::Null,
        Value::Bool(b) => json!(b),
        Value::Int(i) => json!(i),
        // A `real` is held widened to 64 bits: printed as the 32-bit float
        // it is (`1.1`, not `1.100000023841858`). Its shortest decimal form
        // has at most 9 digits, so the f64 parsed from it prints the same.
        Value::Float(x) if x.is_finite() && type_name == "float4" => {
            let shortest = (*x as f32).to_string().parse::<f64>().unwrap_or(*x);
            json!(shortest)
        }
        Value::Float(x) if x.is_finite() => json!(x),
        Value::Float(x) if x.is_nan() => json!("NaN"),
        Value::Float(x) => json!(if *x > 0.0 { "Infinity" } else { "-Infinity" }),
        Value::Text(s) => json!(s),
        Value::Bytes(b) => json!(hex(b)),
    }
}

/// A row as a JSON array; `types` are its columns' upstream types.
pub fn row_json(row: &Row, types: &[&str]) -> Json {
    Json::Array(row.0.iter().enumerate().map(|(i, v)| value_json(v, types.get(i).copied().unwrap_or(""))).collect())
}

/// Bytes as Postgres prints bytea: `\x` and hex digits.
pub fn hex(b: &[u8]) -> String {
    let mut s = String::with_capacity(2 + 2 * b.len());
    s.push_str("\\x");
    for byte in b {
        s.push_str(&format!("{byte:02x}"));
    }
    s
}

fn cell(s: &str, width: usize) -> String {
    let shown: String = s.chars().take(width).collect();
    format!("{shown:<width$}")
}

/// The status table.
pub fn status_table(records: &[JobRecord]) -> String {
    if records.is_empty() {
        return "no views match\n".into();
    }
    let name_w = records.iter().map(|r| r.namespace.len() + r.name.len() + 1).max().unwrap_or(4).clamp(4, 40);
    let mut out = format!(
        "{}  {:<12}  {:<7}  {:<7}  {:<18}  {:>7}  {}\n",
        cell("VIEW", name_w),
        "MODE",
        "ENABLED",
        "STATE",
        "LAST COMMIT",
        "RETRIES",
        "LAST ERROR"
    );
    for r in records {
        out.push_str(&format!(
            "{}  {:<12}  {:<7}  {:<7}  {:<18}  {:>7}  {}\n",
            cell(&format!("{}.{}", r.namespace, r.name), name_w),
            r.mode.to_string(),
            if r.enabled { "yes" } else { "no" },
            r.state.to_string(),
            r.last_seen_commit.map(|l| l.to_string()).unwrap_or_else(|| "-".into()),
            r.retry_count,
            // The whole error, on this line: its end is often the fix it
            // suggests (e.g. `ALTER TABLE … REPLICA IDENTITY FULL`). Without
            // one, why the view was last copied again, if it ever was (the
            // error usually says so while it is being copied).
            match (&r.last_error, &r.last_recopy) {
                (Some(e), _) => e.replace(['\n', '\r'], " "),
                (None, Some(recopy)) => format!("last re-copy: {recopy}").replace(['\n', '\r'], " "),
                (None, None) => String::new(),
            },
        ));
    }
    out
}

/// `status --json`: the records as the engine gives them, but with LSNs as
/// Postgres writes them (`16/B374D848`) and times as ISO-8601 UTC strings,
/// so they can be compared with what the server says and read by people.
pub fn status_json(records: &[JobRecord]) -> Json {
    let lsn = |v: &mut Json| {
        if let Some(n) = v.as_u64() {
            *v = json!(flashsync::Lsn(n).to_string());
        }
    };
    let time = |v: &mut Json| {
        if let Some(ms) = v.as_u64() {
            // `Timestamp` displays as ISO-8601 UTC, to the millisecond.
            *v = json!(flashsync_core::Timestamp(ms).to_string());
        }
    };
    let mut out = serde_json::to_value(records).unwrap_or(Json::Null);
    for r in out.as_array_mut().into_iter().flatten() {
        lsn(&mut r["last_seen_commit"]);
        for segment in r["handoff"]["segments"].as_array_mut().into_iter().flatten() {
            if segment["point"].is_object() {
                lsn(&mut segment["point"]["lsn"]);
            }
        }
        for field in ["updated_at", "next_retry_at", "last_success_at"] {
            time(&mut r[field]);
        }
        if r["last_recopy"].is_object() {
            time(&mut r["last_recopy"]["at"]);
        }
    }
    out
}

/// Copies in progress as JSON objects.
pub fn copies_json(copies: &[flashsync::SnapshotProgress]) -> Json {
    Json::Array(
        copies
            .iter()
            .map(|p| {
                json!({
                    "relation_id": p.relation_id.0,
                    "upstream": p.relation.to_string(),
                    "rows": p.rows,
                    "resumed_rows": p.resumed_rows,
                    "estimated_rows": p.estimated_rows,
                    "chunks": p.chunks,
                    "rows_per_second": p.rate().round(),
                    "eta_seconds": p.eta().map(|d| d.as_secs()),
                })
            })
            .collect(),
    )
}

/// One copy's progress for people: rows so far, of about how many, rate,
/// time left.
pub fn copy_progress(p: &flashsync::SnapshotProgress) -> String {
    copy_progress_line(p.rows, p.resumed_rows, p.estimated_rows, p.chunks, p.rate(), p.eta().map(|d| d.as_secs()))
}

fn copy_progress_line(
    rows: u64,
    resumed: u64,
    estimated: Option<u64>,
    chunks: u32,
    rate: f64,
    eta: Option<u64>,
) -> String {
    let done = rows.saturating_add(resumed);
    let mut out = match estimated {
        Some(total) if total > 0 => {
            format!("{done} of ~{total} rows ({}%)", (done.saturating_mul(100) / total).min(100))
        }
        _ => format!("{done} rows"),
    };
    if resumed > 0 {
        out.push_str(&format!(" (continued from a checkpoint at {resumed})"));
    }
    if chunks > 0 {
        out.push_str(&format!(" in {chunks} chunk{}", if chunks == 1 { "" } else { "s" }));
    }
    out.push_str(&format!("  {rate:.0} rows/s"));
    if let Some(eta) = eta {
        out.push_str(&format!("  ETA {eta} s"));
    }
    out
}

/// Copies in progress, from [`copies_json`], one line each.
pub fn copies_lines(copies: &Json) -> String {
    let mut out = String::new();
    for c in copies.as_array().into_iter().flatten() {
        let line = copy_progress_line(
            c["rows"].as_u64().unwrap_or(0),
            c["resumed_rows"].as_u64().unwrap_or(0),
            c["estimated_rows"].as_u64(),
            c["chunks"].as_u64().and_then(|n| u32::try_from(n).ok()).unwrap_or(0),
            c["rows_per_second"].as_f64().unwrap_or(0.0),
            c["eta_seconds"].as_u64(),
        );
        out.push_str(&format!("copying {}: {line}\n", c["upstream"].as_str().unwrap_or("?")));
    }
    out
}

/// Each origin's lag as JSON objects (LSNs as `X/Y`).
pub fn lag_json(lags: &[flashsync::OriginLag]) -> Json {
    Json::Array(
        lags.iter()
            .map(|l| {
                json!({
                    "origin": l.origin.to_string(),
                    "server_lsn": l.server.map(|x| x.to_string()),
                    "durable_lsn": l.durable.map(|x| x.to_string()),
                    "lag_bytes": l.lag_bytes,
                    "lag_seconds": l.lag_seconds,
                    "retained_bytes": l.retained_bytes,
                    "error": l.error,
                })
            })
            .collect(),
    )
}

/// One line per origin for the status table: how far behind it is.
pub fn lag_lines(lags: &Json) -> String {
    let mut out = String::new();
    for l in lags.as_array().into_iter().flatten() {
        let origin = l["origin"].as_str().unwrap_or("?");
        match (l["lag_bytes"].as_u64(), l["lag_seconds"].as_f64(), l["error"].as_str()) {
            (_, _, Some(e)) => out.push_str(&format!("{origin}: lag unknown ({e})\n")),
            (Some(b), Some(s), None) => {
                let retained =
                    l["retained_bytes"].as_u64().map(|r| format!(", slot retains {r} bytes")).unwrap_or_default();
                out.push_str(&format!("{origin}: {b} bytes ({s:.1} s) behind the server{retained}\n"));
            }
            _ => out.push_str(&format!("{origin}: nothing streamed yet\n")),
        }
    }
    out
}

/// A sync's outcome for people. `kept_running`: a process goes on
/// following the realtime views (`run`); a one-shot command that exits
/// right after must not call them running.
pub fn summary_text(s: &SyncSummary, kept_running: bool) -> String {
    let list = |v: &[flashsync::ViewName]| v.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ");
    let mut out = String::new();
    if !s.materialized.is_empty() {
        out.push_str(&format!("synced (materialized): {}\n", list(&s.materialized)));
    }
    if !s.realtime.is_empty() && kept_running {
        out.push_str(&format!("running (realtime):    {}\n", list(&s.realtime)));
    } else if !s.realtime.is_empty() {
        out.push_str(&format!(
            "copied (realtime):     {} — not kept current: this command exits; `flashsync run` keeps realtime views \
             running\n",
            list(&s.realtime)
        ));
    }
    if !s.disabled.is_empty() {
        out.push_str(&format!("disabled (stopped):    {}\n", list(&s.disabled)));
    }
    for (v, e) in &s.failed {
        out.push_str(&format!("failed:                {v}: {e}\n"));
    }
    if out.is_empty() {
        out.push_str("no views match\n");
    }
    out
}

/// Peak resident memory of this process, in bytes (Linux `VmHWM`).
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flashsync::{Persistence, ViewName};

    #[test]
    fn the_status_table_shows_the_whole_error_on_one_line() {
        let name = ViewName::new("public", "t_live").expect("name");
        let mut job = JobRecord::new(flashsync_core::RelationId(1), &name, Persistence::Realtime, Default::default());
        let fix = "ALTER TABLE public.t REPLICA IDENTITY FULL";
        job.last_error = Some(format!("{}\nthe table has no replica identity; run {fix}", "x".repeat(120)));
        let table = status_table(&[job]);
        assert!(table.contains(fix), "{table}");
        assert_eq!(table.lines().count(), 2, "{table}");
    }

    #[test]
    fn copy_progress_gives_a_share_and_time_left_only_when_known() {
        assert_eq!(
            copy_progress_line(250, 0, Some(1000), 0, 50.0, Some(15)),
            "250 of ~1000 rows (25%)  50 rows/s  ETA 15 s"
        );
        assert_eq!(copy_progress_line(250, 0, None, 0, 50.0, None), "250 rows  50 rows/s");
        // A stale estimate the copy has passed reads 100%, never more.
        assert_eq!(
            copy_progress_line(1500, 0, Some(1000), 0, 50.0, Some(0)),
            "1500 of ~1000 rows (100%)  50 rows/s  ETA 0 s"
        );
        // An empty table's estimate of 0 gives no share.
        assert_eq!(copy_progress_line(3, 0, Some(0), 0, 1.0, Some(0)), "3 rows  1 rows/s  ETA 0 s");
        assert_eq!(
            copy_progress_line(4000, 0, Some(10000), 2, 100.0, Some(60)),
            "4000 of ~10000 rows (40%) in 2 chunks  100 rows/s  ETA 60 s"
        );
        // A copy continued after a restart counts what its checkpoint held.
        assert_eq!(
            copy_progress_line(2000, 6000, Some(10000), 1, 100.0, Some(20)),
            "8000 of ~10000 rows (80%) (continued from a checkpoint at 6000) in 1 chunk  100 rows/s  ETA 20 s"
        );
    }

    #[test]
    fn status_json_writes_lsns_and_times_for_people() {
        let mut r = JobRecord::new(
            flashsync::RelationId(1),
            &ViewName::new("public", "t").unwrap(),
            Persistence::Realtime,
            flashsync_core::Timestamp(1_735_689_600_123),
        );
        r.last_seen_commit = Some(flashsync::Lsn(0x16_B374_D848));
        let j = status_json(&[r]);
        assert_eq!(j[0]["last_seen_commit"], "16/B374D848");
        assert_eq!(j[0]["updated_at"], "2025-01-01T00:00:00.123Z");
        assert_eq!(j[0]["next_retry_at"], Json::Null);
        assert!(j[0].get("last_recopy").is_none(), "{j}");
    }

    #[test]
    fn status_shows_why_a_view_was_last_copied_again() {
        use flashsync_core::job::{Recopy, RecopyReason};
        let name = ViewName::new("public", "t").expect("name");
        let mut r = JobRecord::new(flashsync::RelationId(1), &name, Persistence::Realtime, Default::default());
        r.last_recopy = Some(Recopy {
            reason: RecopyReason::SlotLost { detail: "replication slot s was re-created".into() },
            at: flashsync_core::Timestamp(1_735_689_600_123),
        });
        let j = status_json(std::slice::from_ref(&r));
        assert_eq!(
            j[0]["last_recopy"],
            json!({
                "reason": "slot_lost",
                "detail": "replication slot s was re-created",
                "at": "2025-01-01T00:00:00.123Z",
            })
        );
        let table = status_table(std::slice::from_ref(&r));
        assert!(
            table.contains(
                "last re-copy: replication slot lost (replication slot s was re-created) at 2025-01-01T00:00:00.123Z"
            ),
            "{table}"
        );
        // An error says more about now than the history does.
        r.last_error = Some("lost the feed".into());
        let table = status_table(&[r]);
        assert!(table.contains("lost the feed") && !table.contains("re-copy"), "{table}");
    }
}
