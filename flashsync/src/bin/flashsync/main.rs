//! `flashsync`: run sync as a process, inspect and steer it, try it out, and
//! measure it.
//!
//! ```text
//! flashsync demo                      # a throwaway Postgres, two views, live writes, proof
//! flashsync run                       # sync everything in flashsync.toml and keep it running
//! flashsync status [SELECTOR] [--json]
//! flashsync sync [SELECTOR] [--force]
//! flashsync stop|resume|forget SELECTOR
//! flashsync dump VIEW [--format csv|text|json] [--limit N]
//! flashsync query 'SQL' [--json]       # the SQLite mirror, read-only
//! flashsync watch [SELECTOR] [--json]  # the change feed of a running `run`
//! flashsync bench snapshot|stream|latency|fanout
//! ```

mod admin;
mod allocator;
mod bench;
mod commands;
mod config;
mod demo;
mod dump;
mod local;
mod metrics;
mod output;
mod pg;
mod pgtext;
mod query;
mod run;
mod service;
mod starting;
mod unanswered;
mod watch;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::admin::Request;
use crate::config::Config;

/// A command failed; the message says why (never with secrets).
#[derive(Debug)]
pub struct CliError(pub String);

impl std::fmt::Display for CliError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An error with its whole source chain (tokio-postgres keeps the server's
/// message in the source).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[derive(Parser)]
#[command(name = "flashsync", version, about = "Keep local copies of upstream Postgres relations exact")]
struct Cli {
    /// The configuration file.
    #[arg(long, short, global = true, env = "FLASHSYNC_CONFIG", default_value = "flashsync.toml")]
    config: PathBuf,
    /// Log filter (e.g. info, debug, flashsync=debug).
    #[arg(long, global = true, env = "FLASHSYNC_LOG", default_value = "info,fjall=warn,lsm_tree=error")]
    log: String,
    /// Log lines as text (for people) or as one JSON object per line (for
    /// log collectors: `timestamp`, `level`, `fields.message`, span fields).
    #[arg(long, global = true, env = "FLASHSYNC_LOG_FORMAT", value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Sync every configured view and keep realtime views running until
    /// Ctrl-C or SIGTERM.
    Run {
        /// Seconds between the idempotent safety-net sync() calls.
        #[arg(long, default_value_t = 60)]
        resync_secs: u64,
    },
    /// One status record per selected view.
    Status {
        /// Views, e.g. `*`, `public.users_cache`, `public.posts_*`.
        #[arg(default_value = "*")]
        selector: String,
        /// JSON records with the spec's fields.
        #[arg(long)]
        json: bool,
    },
    /// Make the selected views current (idempotent).
    Sync {
        #[arg(default_value = "*")]
        selector: String,
        /// Copy the views again (a running realtime view stays current on its
        /// old copy until the new one replaces it), and retry failed views now.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Halt and disable the selected views until resumed.
    Stop { selector: String },
    /// Re-enable the selected views, then sync them.
    Resume {
        selector: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove the selected views: definition, job, local rows and the upstream
    /// resources only they held.
    Forget { selector: String },
    /// Print a view's local rows, streamed: CSV (the default), COPY text or
    /// JSON lines.
    Dump {
        view: String,
        /// csv (Postgres's CSV: a header, NULL an unquoted empty field),
        /// text (COPY text: tabs, \N for NULL) or json (an object per row).
        #[arg(long, value_enum, default_value = "csv")]
        format: dump::Format,
        /// Short for --format json.
        #[arg(long)]
        json: bool,
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Read the SQLite mirror with SQL (`store = "sqlite:…"`), read-only,
    /// also while `flashsync run` writes: e.g.
    /// `flashsync query 'SELECT count(*) FROM "public.posts_live"'`.
    Query {
        sql: String,
        /// One JSON object per row, keyed by column name, in column order.
        #[arg(long)]
        json: bool,
    },
    /// Follow a running `flashsync run`'s change feed: a line per change, as
    /// each upstream transaction becomes visible locally, until Ctrl-C.
    Watch {
        #[arg(default_value = "*")]
        selector: String,
        /// One JSON object per upstream transaction (rows keyed by column).
        #[arg(long)]
        json: bool,
    },
    /// Start a throwaway Postgres, sync two views while writers run, and prove
    /// the mirror equals upstream.
    Demo {
        /// Seconds of live writes.
        #[arg(long, default_value_t = 5)]
        seconds: u64,
    },
    /// Benchmarks against a throwaway Postgres (or --pg URL).
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
}

fn main() -> ExitCode {
    allocator::tune();
    let cli = Cli::parse();
    let filter =
        tracing_subscriber::EnvFilter::try_new(&cli.log).unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colour only for a person at a terminal: a log file or a pipe gets
    // plain text, not escape codes.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let logs = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_target(false);
    match cli.log_format {
        LogFormat::Text => logs.with_ansi(ansi).init(),
        LogFormat::Json => logs.json().with_ansi(false).init(),
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn dispatch(cli: Cli) -> Result<(), CliError> {
    let load = || Config::load(&cli.config).map_err(|e| CliError(e.to_string()));
    match cli.command {
        Command::Run { resync_secs } => run::run(&cli.config, Duration::from_secs(resync_secs.max(1))).await,
        Command::Status { selector, json } => commands::control(&load()?, Request::Status { selector }, json).await,
        Command::Sync { selector, force, json } => {
            commands::control(&load()?, Request::Sync { selector, force }, json).await
        }
        Command::Stop { selector } => commands::control(&load()?, Request::Stop { selector }, false).await,
        Command::Resume { selector, json } => commands::control(&load()?, Request::Resume { selector }, json).await,
        Command::Forget { selector } => commands::control(&load()?, Request::Forget { selector }, false).await,
        Command::Dump { view, format, json, limit } => {
            let format = if json { dump::Format::Json } else { format };
            commands::dump(&load()?, &view, limit, format).await
        }
        Command::Query { sql, json } => query::query(&load()?, &sql, json),
        Command::Watch { selector, json } => watch::watch(&load()?, &selector, json).await,
        Command::Demo { seconds } => demo::demo(Duration::from_secs(seconds)).await,
        Command::Bench { which } => bench::run(which).await,
    }
}
