//! `status`, `sync`, `stop`, `resume`, `forget`, `dump`: through the admin
//! endpoint of a running `flashsync run`, or on the store directly.

use serde_json::Value as Json;

use crate::admin::{self, Request};
use crate::config::Config;
use crate::dump::{Format, Printer, Source};
use crate::output;
use crate::{local, unanswered, CliError};

/// Runs a control request and prints its result.
pub async fn control(config: &Config, request: Request, json: bool) -> Result<(), CliError> {
    let conn = admin::connect(&config.admin_dir()).await;
    // Without `run`, a view stored as running is not being kept up to date
    // by anyone: status says so rather than let "running" mislead.
    let process = conn.is_some();
    // The origins' lag and the copies in progress, from the running
    // process (none without one). A process that does not answer status
    // (stopped, wedged) must not hang the command: status then reports
    // what the config and servers say.
    let (lag, copies) = match (&request, process) {
        (Request::Status { selector }, true) => {
            let answers = match ask(config, &Request::Lag).await {
                Ok(lag) => ask(config, &Request::Copies).await.map(|copies| (lag, copies)),
                Err(e) => Err(e),
            };
            match answers {
                Ok(answers) => answers,
                Err(Unanswered) => return unanswered::status(config, selector, json).await,
            }
        }
        _ => (None, None),
    };
    let result = match conn {
        Some(conn) => admin::call(conn, &request).await.map_err(CliError)?.remove(0)["result"].take(),
        None => {
            let store = local::open_store(config)?;
            // The config's views are what the user asks about: status
            // shows them (idle) even before the first run or sync.
            let define = matches!(request, Request::Sync { .. } | Request::Resume { .. } | Request::Status { .. });
            let engine = local::engine(config, store, define).await?;
            let r = admin::execute(&engine, request.clone()).await;
            engine.shutdown().await.map_err(|e| CliError(e.to_string()))?;
            r.map_err(CliError)?
        }
    };
    if json {
        let result = match request {
            Request::Status { .. } => {
                let records: Vec<flashsync::JobRecord> =
                    serde_json::from_value(result).map_err(|e| CliError(e.to_string()))?;
                let mut out = output::status_json(&records);
                for (r, record) in out.as_array_mut().into_iter().flatten().zip(&records) {
                    r["process_running"] = Json::Bool(process);
                    r["process_responding"] = Json::Bool(process);
                    // Each record carries its origin's lag (null when unknown).
                    let origin = config
                        .views
                        .iter()
                        .find(|v| v.name.namespace == record.namespace && v.name.name == record.name)
                        .map(|v| v.origin.to_string());
                    let of = lag.as_ref().and_then(|l| {
                        l.as_array()?.iter().find(|o| origin.as_deref().is_some_and(|x| o["origin"] == x)).cloned()
                    });
                    r["lag_bytes"] = of.as_ref().map_or(Json::Null, |o| o["lag_bytes"].clone());
                    r["lag_seconds"] = of.as_ref().map_or(Json::Null, |o| o["lag_seconds"].clone());
                    // A copy in progress for this view: rows, estimate, ETA.
                    r["copy"] = copies
                        .as_ref()
                        .and_then(|c| c.as_array()?.iter().find(|c| c["relation_id"] == record.relation_id.0).cloned())
                        .unwrap_or(Json::Null);
                }
                out
            }
            _ => result,
        };
        println!("{result}");
        return Ok(());
    }
    match request {
        Request::Status { .. } => {
            let records: Vec<flashsync::JobRecord> =
                serde_json::from_value(result).map_err(|e| CliError(e.to_string()))?;
            if !process && !records.is_empty() {
                println!("(no `flashsync run` holds this store: states are as last stored, nothing is being synced)");
            }
            print!("{}", output::status_table(&records));
            if let Some(lag) = &lag {
                print!("{}", output::lag_lines(lag));
            }
            if let Some(copies) = &copies {
                print!("{}", output::copies_lines(copies));
            }
        }
        Request::Sync { .. } | Request::Resume { .. } => {
            let s: flashsync::SyncSummary = serde_json::from_value(result).map_err(|e| CliError(e.to_string()))?;
            print!("{}", output::summary_text(&s, process));
            if !s.failed.is_empty() {
                return Err(CliError(format!("{} view(s) failed", s.failed.len())));
            }
        }
        Request::Stop { selector } => print_names("stopped", &result, &selector)?,
        Request::Forget { selector } => {
            print_names("forgot", &result["views"], &selector)?;
            for w in result["warnings"].as_array().into_iter().flatten() {
                eprintln!("warning: {}", w.as_str().unwrap_or_default());
            }
        }
        Request::Dump { .. } | Request::Watch { .. } | Request::Lag | Request::Copies => {}
    }
    Ok(())
}

/// The running process did not answer in time.
struct Unanswered;

/// One request to the running `run`, answered within
/// [`unanswered::ANSWER_TIMEOUT`]; `Ok(None)` if no process serves the
/// store or it refused the request.
async fn ask(config: &Config, request: &Request) -> Result<Option<Json>, Unanswered> {
    let Some(conn) = admin::connect(&config.admin_dir()).await else { return Ok(None) };
    match tokio::time::timeout(unanswered::ANSWER_TIMEOUT, admin::call(conn, request)).await {
        Err(_) => Err(Unanswered),
        Ok(answer) => Ok(answer.ok().and_then(|mut l| l.pop()).map(|mut l| l["result"].take())),
    }
}

/// Prints the views a `stop` or `forget` acted on; a selector that matched
/// none is an error (a typo must not look like success in a script).
fn print_names(verb: &str, names: &Json, selector: &str) -> Result<(), CliError> {
    let names: Vec<String> = names
        .as_array()
        .into_iter()
        .flatten()
        .map(|n| format!("{}.{}", n["namespace"].as_str().unwrap_or(""), n["name"].as_str().unwrap_or("")))
        .collect();
    if names.is_empty() {
        return Err(CliError(format!("no views match {selector:?}")));
    }
    println!("{verb}: {}", names.join(", "));
    Ok(())
}

/// `flashsync dump VIEW`: the local copy's rows, streamed as they are read.
pub async fn dump(config: &Config, view: &str, limit: Option<usize>, format: Format) -> Result<(), CliError> {
    let written = match admin::connect(&config.admin_dir()).await {
        Some(conn) => {
            let mut printer: Option<Printer> = None;
            let request = Request::Dump { view: view.into(), limit };
            let streamed = admin::stream(conn, &request, |line| {
                if line.get("ok").is_some() {
                    let names = |field: &str| -> Vec<String> {
                        let list = line[field].as_array().into_iter().flatten();
                        list.map(|c| c.as_str().unwrap_or("").to_owned()).collect()
                    };
                    printer = Some(Printer::new(format, names("columns"), names("types"))?);
                    return Ok(());
                }
                match printer.as_mut() {
                    Some(p) => p.row(&line),
                    None => Err(std::io::Error::other("the running process sent rows before their columns")),
                }
            })
            .await;
            streamed?;
            printer.map_or(Ok(()), Printer::finish)
        }
        None => {
            let store = local::open_store(config)?;
            let engine = local::engine(config, store, false).await?;
            let r = dump_local(&engine, view, limit, format).await;
            engine.shutdown().await.map_err(|e| CliError(e.to_string()))?;
            r?
        }
    };
    match written {
        Ok(()) => Ok(()),
        // The reader has gone (`flashsync dump … | head`): it has what it
        // wanted, so this is the end of the output, not a failure.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(CliError(format!("writing the rows: {e}"))),
    }
}

/// Dumps from an engine in this process. The outer error is a read failure;
/// the inner one a write failure (a closed pipe is fine).
async fn dump_local(
    engine: &flashsync::Engine,
    view: &str,
    limit: Option<usize>,
    format: Format,
) -> Result<std::io::Result<()>, CliError> {
    let mut rows = Source::open(engine, view, limit).await.map_err(CliError)?;
    let mut printer = match Printer::new(format, rows.columns.clone(), rows.types.clone()) {
        Ok(p) => p,
        Err(e) => return Ok(Err(e)),
    };
    while let Some(row) = rows.next().await {
        if let Err(e) = printer.row(&row.map_err(CliError)?) {
            return Ok(Err(e));
        }
    }
    Ok(printer.finish())
}
