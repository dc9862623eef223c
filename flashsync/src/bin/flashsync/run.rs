//! `flashsync run`: sync everything, keep realtime views running, serve the
//! admin endpoint, stop cleanly on Ctrl-C, SIGTERM or SIGHUP — also during
//! the first sync.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use flashsync::Engine;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};
use tokio::signal::unix::{signal, SignalKind};

use crate::config::Config;
use crate::{admin, local, output, CliError};

pub async fn run(path: &std::path::Path, resync_every: Duration) -> Result<(), CliError> {
    let loaded = Config::load(path).map_err(|e| CliError(e.to_string()))?;
    // Signals first: SIGINT or SIGTERM at any moment from here on (during a
    // long first copy too) stop cleanly, keeping what is durable.
    let watch = |kind: SignalKind, name: &str| signal(kind).map_err(|e| CliError(format!("cannot watch {name}: {e}")));
    let (mut int, mut term, mut hup) = (
        watch(SignalKind::interrupt(), "SIGINT")?,
        watch(SignalKind::terminate(), "SIGTERM")?,
        watch(SignalKind::hangup(), "SIGHUP")?,
    );
    let config = &loaded;
    // Other commands wait for this run's socket from now on, rather than
    // open the store in its way.
    let starting = crate::starting::Starting::announce(&config.admin_dir())?;
    check_origins(config).await?;
    let metrics = match config.metrics_listen {
        Some(listen) => Some(crate::metrics::bind(listen).await?),
        None => None,
    };
    let store = local::open_store_patiently(config, Duration::from_secs(10)).await?;
    let info = crate::unanswered::RunInfo { pid: std::process::id(), store_id: store.store_id() };
    let engine = local::engine(config, store, true).await?;
    let admin_dir = config.admin_dir();
    let socket = admin::serve(engine.clone(), &admin_dir).await.map_err(CliError)?;
    drop(starting);
    // For `status` when this process cannot answer (stopped, wedged).
    info.write(&admin_dir)?;
    if let Some(listener) = metrics {
        let bound = crate::metrics::serve(engine.clone(), listener)?;
        tracing::info!("metrics on http://{bound}/metrics (also /healthz, /readyz)");
    }
    tracing::info!(store = %config.store.display(), admin = %socket.display(), views = config.views.len(), "flashsync running");
    let progress = tokio::spawn(show_progress(engine.clone()));

    // SIGHUP: a terminal that went away (an interactive run) stops, as it
    // always did; under a service manager, or with stderr not a terminal,
    // it reloads the config. One during the first sync is kept for after it.
    let hup_reloads = std::env::var_os("NOTIFY_SOCKET").is_some() || !std::io::stderr().is_terminal();
    let mut reload_pending = false;
    let first = engine.sync("*");
    tokio::pin!(first);
    let stopped = loop {
        tokio::select! {
            summary = &mut first => {
                let summary = summary.map_err(|e| CliError(e.to_string()))?;
                say(&output::summary_text(&summary, true));
                break false;
            }
            _ = int.recv() => break true,
            _ = term.recv() => break true,
            _ = hup.recv() => {
                if !hup_reloads {
                    break true;
                }
                reload_pending = true;
            }
        }
    };
    if !stopped {
        crate::service::notify("READY=1");
        let mut config = loaded;
        // Syncs run beside this loop, never in it: one that copies a large
        // view takes as long as the copy, and Ctrl-C/SIGTERM must still be
        // heard at once. At most one at a time.
        let mut syncing: Option<tokio::task::JoinHandle<()>> = None;
        if reload_pending {
            let resume;
            (config, resume) = crate::service::reload(&engine, config, path).await;
            syncing = Some(background_sync(&engine, resume, "sync after the reload"));
        }
        let mut tick = tokio::time::interval(resync_every);
        tick.tick().await;
        loop {
            tokio::select! {
                _ = int.recv() => break,
                _ = term.recv() => break,
                _ = hup.recv() => {
                    if !hup_reloads {
                        break;
                    }
                    crate::service::notify("RELOADING=1");
                    let resume;
                    (config, resume) = crate::service::reload(&engine, config, path).await;
                    crate::service::notify("READY=1");
                    syncing = Some(background_sync(&engine, resume, "sync after the reload"));
                }
                _ = tick.tick() => {
                    // sync() is idempotent: a periodic call is the safety net for
                    // anything that went quiet (it also retries failed views whose
                    // back-off has passed).
                    if syncing.as_ref().is_none_or(|s| s.is_finished()) {
                        syncing = Some(background_sync(&engine, Vec::new(), "periodic sync"));
                    }
                }
            }
        }
    }
    crate::service::notify("STOPPING=1");
    say("shutting down...\n");
    progress.abort();
    engine.shutdown().await.map_err(|e| CliError(e.to_string()))?;
    let _ = std::fs::remove_file(&socket);
    crate::unanswered::RunInfo::remove(&admin_dir);
    say("stopped cleanly; everything applied is durable\n");
    Ok(())
}

/// Resumes `resume` (views a reload put back), then `sync("*")`, in a task
/// of their own; failures are logged (a shutdown ending them is not one).
fn background_sync(engine: &Engine, resume: Vec<String>, what: &'static str) -> tokio::task::JoinHandle<()> {
    let engine = engine.clone();
    tokio::spawn(async move {
        for view in resume {
            match engine.resume(view.as_str()).await {
                Ok(_) | Err(flashsync::EngineError::ShutDown) => {}
                Err(e) => tracing::warn!("{what}: resuming {view}: {e}"),
            }
        }
        match engine.sync("*").await {
            Ok(_) | Err(flashsync::EngineError::ShutDown) => {}
            Err(e) => tracing::warn!("{what}: {e}"),
        }
    })
}

/// Writes to stderr, ignoring failure: a terminal that went away must not
/// turn a clean shutdown into a panic.
fn say(text: &str) {
    use std::io::Write;
    let _ = std::io::stderr().write_all(text.as_bytes());
}

/// Fails `run` at once when no origin can work: settings that cannot be
/// used (an unset `url_env`, a bad URL) or a server that refuses us (wrong
/// password, no such role or database). Retrying those in the background
/// would only fill the log and the server's failed logins. An origin that
/// is merely unreachable may come up later: it is retried.
async fn check_origins(config: &Config) -> Result<(), CliError> {
    let mut refused = Vec::new();
    for origin in &config.origins {
        let why = match origin.source(None) {
            Err(e) => e,
            Ok(source) => match tokio::time::timeout(Duration::from_secs(10), source.check_connection()).await {
                Ok(Err(e)) if e.kind == flashsync_core::SourceErrorKind::Refused => {
                    format!("origin {}: {}", origin.id, e.message)
                }
                // Reachable, or not yet: either way the engine takes it from here.
                _ => return Ok(()),
            },
        };
        refused.push(why);
    }
    if refused.is_empty() {
        return Ok(());
    }
    Err(CliError(format!("no origin can be synced from: {}", refused.join("; "))))
}

/// Snapshot progress: bars with rows and rows/s on a terminal, log lines
/// otherwise.
pub async fn show_progress(engine: Engine) {
    use std::io::IsTerminal;
    let tty = std::io::stderr().is_terminal();
    let multi = MultiProgress::new();
    let style = ProgressStyle::with_template("{spinner} {prefix:32} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_spinner());
    let mut bars: std::collections::BTreeMap<flashsync::RelationId, ProgressBar> = Default::default();
    let mut last_log = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let running = engine.snapshots();
        let names: std::collections::BTreeMap<_, _> = engine
            .status("*")
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|s| (s.relation_id, format!("{}.{}", s.namespace, s.name)))
            .collect();
        bars.retain(|id, bar| {
            let keep = running.iter().any(|p| p.relation_id == *id);
            if !keep {
                bar.finish_and_clear();
            }
            keep
        });
        for p in &running {
            let msg = output::copy_progress(p);
            let name = names.get(&p.relation_id).cloned().unwrap_or_else(|| p.relation.to_string());
            if tty {
                let bar = bars.entry(p.relation_id).or_insert_with(|| {
                    let b = multi.add(ProgressBar::new_spinner());
                    b.set_style(style.clone());
                    b.set_prefix(format!("copying {name}"));
                    b
                });
                bar.set_message(msg);
                bar.tick();
            } else if last_log.elapsed() > Duration::from_secs(5) {
                tracing::info!("copying {name}: {msg}");
            }
        }
        if !tty && last_log.elapsed() > Duration::from_secs(5) {
            last_log = Instant::now();
        }
    }
}
