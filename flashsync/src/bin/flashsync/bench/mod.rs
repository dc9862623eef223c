//! `flashsync bench`: figures against the physical limits, each as a ratio
//! to a baseline measured in the same run (these machines are noisy; ratios
//! are what travels). Each prints a human summary on stderr and, as the last
//! line of stdout, one JSON object with the figures.

mod bigtxn;
mod common;
mod fanout;
mod filtered;
mod latency;
mod snapshot;
mod stream;

use clap::Subcommand;
use serde_json::Value as Json;

use crate::CliError;
use common::BenchStore;

#[derive(Subcommand)]
pub enum Which {
    /// Materialize an N-row table (mixed types) into the store vs draining
    /// `COPY … TO STDOUT` of the same table in this process.
    Snapshot {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// The store to materialize into.
        #[arg(long, value_enum, default_value_t)]
        store: BenchStore,
        /// Use this server instead of a throwaway cluster.
        #[arg(long)]
        pg: Option<String>,
        /// Bootstrap a realtime view (copied in chunks, with the feed up)
        /// instead of materializing.
        #[arg(long)]
        realtime: bool,
        /// Rows per chunk of a realtime copy (0: in one piece).
        #[arg(long, default_value_t = flashsync::Config::default().snapshot_chunk_rows)]
        chunk_rows: u64,
    },
    /// Apply N single-row update transactions already in the slot vs
    /// `pg_recvlogical` draining the same WAL from a twin slot.
    Stream {
        #[arg(long, default_value_t = 80_000)]
        txns: u64,
        /// The store to replay into.
        #[arg(long, value_enum, default_value_t)]
        store: BenchStore,
        #[arg(long)]
        pg: Option<String>,
    },
    /// Commit-to-local-visible latency (p50/p99) at a fixed commit rate.
    Latency {
        /// Commits per second.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// The engine's persist interval (ms).
        #[arg(long, default_value_t = 100)]
        persist_ms: u64,
        /// The store to make commits visible in.
        #[arg(long, value_enum, default_value_t)]
        store: BenchStore,
        #[arg(long)]
        pg: Option<String>,
        /// Meanwhile, copy a realtime view of a table of this many rows (in
        /// chunks, the default) while writers update random keys of it, and
        /// report the latency during the copy apart.
        #[arg(long)]
        during_copy: Option<u64>,
        /// Rows per chunk of that copy (0: in one piece).
        #[arg(long, default_value_t = flashsync::Config::default().snapshot_chunk_rows)]
        chunk_rows: u64,
    },
    /// One transaction of N rows: time from BEGIN until readable and peak
    /// memory, vs `pg_recvlogical` receiving the same transaction
    Bigtxn {
        #[arg(long, default_value_t = 1_000_000)]
        rows: u64,
        /// The store to stream into.
        #[arg(long, value_enum, default_value_t)]
        store: BenchStore,
        #[arg(long)]
        pg: Option<String>,
    },
    /// K filtered realtime views of one table (each 1/K of the rows) vs one
    /// unfiltered view: replay rate and walsender CPU.
    Filtered {
        #[arg(long, default_value_t = 20)]
        views: usize,
        #[arg(long, default_value_t = 100_000)]
        txns: u64,
        /// What the filters read: a column outside the key (`tenant = k`)
        /// or the key itself (`id BETWEEN a AND b`).
        #[arg(long, value_enum, default_value = "column")]
        on: filtered::FilterOn,
        /// The table's replica identity (both setups): `full` sends whole
        /// old rows, so a view decides a move-out without a lookup.
        #[arg(long, value_enum, default_value = "default")]
        identity: filtered::Identity,
        /// The store to replay into (both setups).
        #[arg(long, value_enum, default_value_t)]
        store: BenchStore,
    },
    /// Server-side decoding cost of K realtime views of one origin vs one
    /// (walsender CPU time; needs the throwaway cluster).
    Fanout {
        #[arg(long, default_value_t = 20)]
        views: usize,
        #[arg(long, default_value_t = 20_000)]
        commits: u64,
    },
}

pub async fn run(which: Which) -> Result<(), CliError> {
    let report = match which {
        Which::Snapshot { rows, store, pg, realtime, chunk_rows } => {
            let mode = if realtime { snapshot::Mode::Realtime { chunk_rows } } else { snapshot::Mode::Materialized };
            snapshot::run(rows, store, pg.as_deref(), mode).await?
        }
        Which::Stream { txns, store, pg } => stream::run(txns, store, pg.as_deref()).await?,
        Which::Latency { rate, seconds, persist_ms, store, pg, during_copy, chunk_rows } => {
            let copy = during_copy.map(|rows| latency::DuringCopy { rows, chunk_rows });
            latency::run(rate, seconds, persist_ms, store, pg.as_deref(), copy).await?
        }
        Which::Fanout { views, commits } => fanout::run(views, commits).await?,
        Which::Filtered { views, txns, on, identity, store } => filtered::run(views, txns, on, identity, store).await?,
        Which::Bigtxn { rows, store, pg } => bigtxn::run(rows, store, pg.as_deref()).await?,
    };
    println!("{report}");
    Ok(())
}

/// Adds the process's peak RSS to a report.
pub fn with_rss(mut report: Json) -> Json {
    if let (Some(obj), Some(rss)) = (report.as_object_mut(), crate::output::peak_rss_bytes()) {
        obj.insert("peak_rss_bytes".into(), rss.into());
        obj.insert("peak_rss_mib".into(), ((rss as f64 / 1048576.0 * 10.0).round() / 10.0).into());
    }
    report
}
