//! Seed sweeps: many seeds, across scenarios and stores, on several threads,
//! with the failures grouped by the invariant they broke.
//!
//! A failure rate of 0.1% is invisible to a 300-seed check and certain in a
//! 100,000-seed sweep, so sweeps are a command rather than a loop in a shell:
//!
//! ```text
//! flashsync-sim --seeds 0..100000 --scenario all,storm,commits,churn --store memory,fjall,sqlite --jobs 2 -q
//! ```
//!
//! Every (scenario, store, seed) is one run; runs are independent, so the
//! sweep hands them out to `--jobs` worker threads and prints each run's
//! JSON line as it finishes. The summary at the end lists each broken
//! invariant with its seeds and the command that replays each one.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;

use crate::report::Report;
use crate::scenario::Scenario;
use crate::sim::{run, SimError, SimOptions};
use crate::store::StoreKind;

/// One run of a sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Case {
    /// The seed.
    pub seed: u64,
    /// The scenario.
    pub scenario: Scenario,
    /// The store.
    pub store: StoreKind,
}

/// What a sweep found.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Runs completed.
    pub runs: u64,
    /// Simulation steps over every run.
    pub steps: u64,
    /// Upstream commits over every run.
    pub commits: u64,
    /// Failed runs by invariant: (case, detail, replay command). A run that
    /// ended without converging is filed under its invariant too.
    pub failures: BTreeMap<String, Vec<(Case, String, String)>>,
}

impl Outcome {
    /// Number of failed runs.
    pub fn failed(&self) -> usize {
        self.failures.values().map(Vec::len).sum()
    }

    /// The summary: one block per broken invariant, seeds in order.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for (invariant, cases) in &self.failures {
            s.push_str(&format!("  invariant \"{invariant}\": {} run(s)\n", cases.len()));
            for (case, detail, replay) in cases {
                let detail: String = detail.chars().take(160).collect();
                s.push_str(&format!(
                    "    seed {} ({} on {}): {detail}\n      replay: {replay}\n",
                    case.seed, case.scenario, case.store
                ));
            }
        }
        s
    }
}

/// Runs every case built from `seeds × scenarios × stores` on `jobs`
/// threads. `base` gives every option but seed, scenario and store.
/// `on_report` sees each report as it completes (from a worker thread).
pub fn sweep(
    base: &SimOptions,
    seeds: std::ops::Range<u64>,
    scenarios: &[Scenario],
    stores: &[StoreKind],
    jobs: usize,
    on_report: &(dyn Fn(&Case, &Report) + Sync),
) -> Result<Outcome, SimError> {
    let mut cases = Vec::new();
    for &store in stores {
        for &scenario in scenarios {
            for seed in seeds.clone() {
                cases.push(Case { seed, scenario, store });
            }
        }
    }
    let next = AtomicUsize::new(0);
    let outcome = Mutex::new(Outcome::default());
    let error: Mutex<Option<SimError>> = Mutex::new(None);
    std::thread::scope(|scope| {
        for _ in 0..jobs.max(1) {
            scope.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(case) = cases.get(i) else { break };
                if error.lock().map_or(true, |e| e.is_some()) {
                    break;
                }
                let opts = SimOptions {
                    seed: case.seed,
                    scenario: case.scenario,
                    store: case.store,
                    verbose: false,
                    ..base.clone()
                };
                match run(&opts) {
                    Ok(report) => {
                        on_report(case, &report);
                        // A poisoned lock means another worker panicked:
                        // the scope re-raises that panic when it ends.
                        let Ok(mut o) = outcome.lock() else { break };
                        o.runs += 1;
                        o.steps += report.steps;
                        o.commits += report.upstream_commits;
                        if !report.ok() {
                            let (invariant, detail, replay) = match &report.violation {
                                Some(v) => (v.invariant.clone(), v.detail.clone(), v.replay.clone()),
                                None => (
                                    "every enabled view converges".to_owned(),
                                    "the liveness phase ended before every view converged".to_owned(),
                                    opts.replay_command(),
                                ),
                            };
                            o.failures.entry(invariant).or_default().push((*case, detail, replay));
                        }
                    }
                    Err(e) => {
                        if let Ok(mut slot) = error.lock() {
                            slot.get_or_insert(e);
                        }
                        break;
                    }
                }
            });
        }
    });
    if let Some(e) = error.into_inner().ok().flatten() {
        return Err(e);
    }
    let mut outcome = outcome.into_inner().unwrap_or_else(|e| e.into_inner());
    for cases in outcome.failures.values_mut() {
        cases.sort_by_key(|(c, _, _)| (c.store, c.scenario, c.seed));
    }
    Ok(outcome)
}
