//! The `flashsync-sim` command line.
//!
//! ```text
//! flashsync-sim [--seed N | --seeds A..B] [--scenario storm,commits,churn,all]
//!               [--steps N] [--store memory,fjall,sqlite] [--jobs N]
//!               [--check-determinism] [--fail-fast] [--quiet]
//! ```
//!
//! Without arguments: a short `all` run on a fresh random seed (printed) over
//! the fjall store, with progress on stderr. Every run prints one JSON line
//! on stdout ([`Report`]); for `--seeds A..B` (end exclusive)
//! that is one line per seed, in order, and a summary on stderr. A violation
//! prints the seed, the step, the invariant and the command that replays it;
//! the exit code is 1 if any run failed.
//!
//! **Sweeps.** `--scenario` and `--store` take comma-separated lists; with
//! `--jobs N` (or with more than one scenario or store) every combination of
//! seed, scenario and store runs on `N` threads ([`crate::sweep`]), the JSON
//! lines come in completion order, and the summary groups the failing runs by
//! the invariant they broke, each with its replay command:
//!
//! ```text
//! flashsync-sim --seeds 0..100000 --scenario all --store memory --jobs 2 -q
//! ```

use std::hash::{BuildHasher, Hasher};
use std::process::ExitCode;

use clap::Parser;
use flashsync_core::exec::PlantedBugs;
use flashsync_core::machine::InjectedBugs;

use crate::report::Report;
use crate::scenario::Scenario;
use crate::sim::{run, SimError, SimOptions};
use crate::store::StoreKind;

/// Deterministic simulator for flashsync: drives the production sync machine
/// in virtual time against a simulated Postgres, with faults, and checks its
/// invariants after every step.
#[derive(Debug, Parser)]
#[command(name = "flashsync-sim", version)]
pub struct Args {
    /// Run this seed (default: a fresh random one, printed).
    #[arg(long, conflicts_with = "seeds")]
    pub seed: Option<u64>,
    /// Run every seed in A..B (end exclusive).
    #[arg(long, value_name = "A..B")]
    pub seeds: Option<String>,
    /// Which scenarios (comma-separated).
    #[arg(long, default_value = "all", value_delimiter = ',')]
    pub scenario: Vec<Scenario>,
    /// Steps (events) in the chaos phase; the liveness phase follows.
    #[arg(long, default_value_t = 2000)]
    pub steps: u64,
    /// Steps the liveness phase may take to converge.
    #[arg(long, default_value_t = 60_000)]
    pub liveness_steps: u64,
    /// Which stores (comma-separated): the in-memory reference store,
    /// fjall in a temp dir or SQLite in a temp file.
    #[arg(long, default_value = "fjall", value_delimiter = ',')]
    pub store: Vec<StoreKind>,
    /// Sweep on this many threads (see the module docs).
    #[arg(long)]
    pub jobs: Option<usize>,
    /// Run every seed twice and require identical trace hashes.
    #[arg(long)]
    pub check_determinism: bool,
    /// Stop at the first failing seed.
    #[arg(long)]
    pub fail_fast: bool,
    /// No progress on stderr (the JSON line still goes to stdout).
    #[arg(long, short)]
    pub quiet: bool,
    /// Define this many views at the start.
    #[arg(long)]
    pub views: Option<u64>,
    /// One extra burst of this many concurrent sync() calls early on.
    #[arg(long)]
    pub burst: Option<usize>,
    /// Switch on a deliberate bug (to see the checkers catch it): in the
    /// machine ack_before_durable, skip_xid_filter, apply_while_disabled or
    /// skip_move_outs, skip_move_ins, keep_idle_feeds, drop_staged_parts,
    /// keep_abandoned_parts;
    /// in the executor reorder_store, durable_before_persist or
    /// drop_captured_removals.
    #[arg(long, hide = true)]
    pub inject_bug: Vec<String>,
}

/// Why the command failed before running anything.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--seeds` was not `A..B`.
    #[error("--seeds must look like A..B with A < B (end exclusive), got {0:?}")]
    Seeds(String),
    /// An unknown `--inject-bug`.
    #[error(
        "unknown bug {0:?} (ack_before_durable, skip_xid_filter, apply_while_disabled, skip_move_outs, skip_move_ins, \
         keep_idle_feeds, drop_staged_parts, keep_abandoned_parts, skip_chunk_filter, drop_chunk_changes, \
         resume_past_gap, unbounded_chunk_growth, freeze_recopied_copy, reapply_resumed_span, keep_unattached_running, attach_by_names, attach_ignoring_filter_columns, reorder_store, drop_captured_removals, durable_before_persist)"
    )]
    Bug(String),
    /// A run could not start.
    #[error(transparent)]
    Sim(#[from] SimError),
    /// `--scenario` or `--store` was given an empty list.
    #[error("--scenario and --store need at least one value")]
    Empty,
    /// A flag that needs runs in order was given to a sweep.
    #[error("--check-determinism and --fail-fast run seeds one by one: not with --jobs or several scenarios/stores")]
    SweepFlags,
}

fn parse_seeds(s: &str) -> Result<std::ops::Range<u64>, CliError> {
    let err = || CliError::Seeds(s.chars().take(64).collect());
    let (a, b) = s.split_once("..").ok_or_else(err)?;
    let a: u64 = a.trim().parse().map_err(|_| err())?;
    let b: u64 = b.trim().parse().map_err(|_| err())?;
    if a >= b {
        return Err(err());
    }
    Ok(a..b)
}

fn parse_bugs(names: &[String]) -> Result<(InjectedBugs, PlantedBugs), CliError> {
    let mut bugs = InjectedBugs::default();
    let mut exec = PlantedBugs::default();
    for n in names {
        match n.as_str() {
            "reorder_store" => exec.reorder_store = true,
            "durable_before_persist" => exec.durable_before_persist = true,
            "drop_captured_removals" => exec.drop_captured_removals = true,
            "ack_before_durable" => bugs.ack_before_durable = true,
            "skip_xid_filter" => bugs.skip_xid_filter = true,
            "apply_while_disabled" => bugs.apply_while_disabled = true,
            "skip_move_outs" => bugs.skip_move_outs = true,
            "skip_move_ins" => bugs.skip_move_ins = true,
            "keep_idle_feeds" => bugs.keep_idle_feeds = true,
            "drop_staged_parts" => bugs.drop_staged_parts = true,
            "keep_abandoned_parts" => bugs.keep_abandoned_parts = true,
            "skip_chunk_filter" => bugs.skip_chunk_filter = true,
            "drop_chunk_changes" => bugs.drop_chunk_changes = true,
            "resume_past_gap" => bugs.resume_past_gap = true,
            "unbounded_chunk_growth" => bugs.unbounded_chunk_growth = true,
            "freeze_recopied_copy" => bugs.freeze_recopied_copy = true,
            "reapply_resumed_span" => bugs.reapply_resumed_span = true,
            "keep_unattached_running" => bugs.keep_unattached_running = true,
            "attach_by_names" => bugs.attach_by_names = true,
            "attach_ignoring_filter_columns" => bugs.attach_ignoring_filter_columns = true,
            other => return Err(CliError::Bug(other.chars().take(64).collect())),
        }
    }
    Ok((bugs, exec))
}

fn random_seed() -> u64 {
    // Only the choice of seed is random; the run itself is not.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(std::process::id().into());
    h.finish()
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    let args = Args::parse();
    match execute(&args) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("flashsync-sim: {e}");
            ExitCode::from(2)
        }
    }
}

/// Runs what `args` ask for; `Ok(false)` when some run failed.
pub fn execute(args: &Args) -> Result<bool, CliError> {
    let (bugs, exec_bugs) = parse_bugs(&args.inject_bug)?;
    let (seeds, single) = match (&args.seeds, args.seed) {
        (Some(s), _) => (parse_seeds(s)?, false),
        (None, Some(seed)) => (seed..seed.saturating_add(1), true),
        (None, None) => {
            let seed = random_seed();
            eprintln!("flashsync-sim: fresh random seed {seed}");
            (seed..seed.saturating_add(1), true)
        }
    };
    // The bare command (the README's): make sure the run shows a storm.
    let burst = args.burst.or((args.seed.is_none() && args.seeds.is_none()).then_some(600));
    let (Some(&scenario), Some(&store)) = (args.scenario.first(), args.store.first()) else {
        return Err(CliError::Empty);
    };
    let base = SimOptions {
        seed: seeds.start,
        scenario,
        steps: args.steps,
        liveness_steps: args.liveness_steps,
        store,
        bugs,
        exec_bugs,
        verbose: single && !args.quiet,
        extra_burst: burst,
        views: args.views,
    };
    if args.jobs.is_some() || args.scenario.len() > 1 || args.store.len() > 1 {
        if args.check_determinism || args.fail_fast {
            return Err(CliError::SweepFlags);
        }
        return run_sweep(args, &base, seeds);
    }
    let started = std::time::Instant::now();
    let (mut runs, mut failed, mut steps, mut commits) = (0u64, Vec::new(), 0u64, 0u64);
    for seed in seeds.clone() {
        let opts = SimOptions { seed, ..base.clone() };
        let report = run(&opts)?;
        let mut ok = report.ok();
        let mut deterministic = None;
        if args.check_determinism {
            let again = run(&SimOptions { verbose: false, ..opts.clone() })?;
            let same = again.trace_hash == report.trace_hash;
            deterministic = Some(same);
            if !same {
                ok = false;
                eprintln!(
                    "NON-DETERMINISM seed={seed}: trace hash {} then {}\nreplay: {} --check-determinism",
                    report.trace_hash,
                    again.trace_hash,
                    opts.replay_command()
                );
            }
        }
        print_run(&report, deterministic);
        runs += 1;
        steps += report.steps;
        commits += report.upstream_commits;
        if !single && !args.quiet {
            eprintln!(
                "seed {seed}: {} ({} steps, {} commits, {} faults, {} ms)",
                if ok { "ok" } else { "FAILED" },
                report.steps,
                report.upstream_commits,
                report.faults_injected,
                report.wall_ms
            );
        }
        if !ok {
            failed.push(seed);
            if args.fail_fast {
                break;
            }
        }
    }
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    if !single || !args.quiet {
        eprintln!(
            "flashsync-sim: {runs} run(s), {} failed{}; {:.1}s wall, {:.0} steps/s, {:.0} upstream commits/s",
            failed.len(),
            if failed.is_empty() { String::new() } else { format!(" (seeds {failed:?})") },
            secs,
            steps as f64 / secs,
            commits as f64 / secs
        );
    }
    Ok(failed.is_empty())
}

/// Runs a sweep ([`crate::sweep`]) and prints its summary.
fn run_sweep(args: &Args, base: &SimOptions, seeds: std::ops::Range<u64>) -> Result<bool, CliError> {
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let started = std::time::Instant::now();
    let total = (seeds.end - seeds.start) as usize * args.scenario.len() * args.store.len();
    let done = std::sync::atomic::AtomicUsize::new(0);
    let quiet = args.quiet;
    let outcome = crate::sweep::sweep(base, seeds, &args.scenario, &args.store, jobs, &|case, report| {
        print_run(report, None);
        let n = done.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        if !quiet && (n.is_multiple_of(1000) || !report.ok()) {
            eprintln!(
                "{n}/{total} runs; seed {} ({} on {}): {}",
                case.seed,
                case.scenario,
                case.store,
                if report.ok() { "ok" } else { "FAILED" }
            );
        }
    })?;
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    eprintln!(
        "flashsync-sim sweep: {} run(s) ({} seed(s) x scenarios {} x stores {}) on {jobs} thread(s), {} failed; \
         {secs:.1}s wall, {:.0} steps/s, {:.0} upstream commits/s",
        outcome.runs,
        total / (args.scenario.len() * args.store.len()).max(1),
        join(&args.scenario),
        join(&args.store),
        outcome.failed(),
        outcome.steps as f64 / secs,
        outcome.commits as f64 / secs,
    );
    eprint!("{}", outcome.summary());
    Ok(outcome.failed() == 0)
}

fn join<T: std::fmt::Display>(items: &[T]) -> String {
    items.iter().map(ToString::to_string).collect::<Vec<_>>().join(",")
}

fn print_run(report: &Report, deterministic: Option<bool>) {
    if let Some(v) = &report.violation {
        eprintln!(
            "VIOLATION seed={} step={} t={}ms invariant=\"{}\"\n  {}\n  replay: {}",
            report.seed, v.step, v.time_ms, v.invariant, v.detail, v.replay
        );
    }
    let mut json = report.to_json();
    if let Some(d) = deterministic {
        // Splice the determinism verdict into the object.
        json.pop();
        json.push_str(&format!(",\"deterministic\":{d}}}"));
    }
    println!("{json}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_ranges_parse_or_explain() {
        assert_eq!(parse_seeds("3..7").ok(), Some(3..7));
        assert!(matches!(parse_seeds("7..3"), Err(CliError::Seeds(_))));
        assert!(matches!(parse_seeds("x..3"), Err(CliError::Seeds(_))));
        assert!(matches!(parse_seeds("12"), Err(CliError::Seeds(_))));
        assert!(parse_bugs(&["skip_xid_filter".into()]).is_ok_and(|b| b.0.skip_xid_filter));
        assert!(parse_bugs(&["reorder_store".into()]).is_ok_and(|b| b.1.reorder_store));
        assert!(matches!(parse_bugs(&["nope".into()]), Err(CliError::Bug(_))));
    }
}
