//! One simulation run: set up, a chaos phase, a liveness phase, a report.

use std::time::Instant;

use flashsync_core::exec::PlantedBugs;
use flashsync_core::machine::InjectedBugs;
use flashsync_core::rng::Rng;
use flashsync_core::{JobState, Persistence, Selector, StoreError, ViewName, ViewShape};

use crate::driver::{Call, Ev, World, ANY_INCARNATION};
use crate::faults::Plan;
use crate::report::{Failure, Report};
use crate::scenario::Scenario;
use crate::store::{SimStore, StoreKind};
use crate::upstream::{TableKind, Upstream};

/// What to run.
#[derive(Clone, Debug)]
pub struct SimOptions {
    /// Fixes everything.
    pub seed: u64,
    /// Which scenario.
    pub scenario: Scenario,
    /// Steps (events) in the chaos phase.
    pub steps: u64,
    /// Steps the liveness phase may take to converge.
    pub liveness_steps: u64,
    /// Which store.
    pub store: StoreKind,
    /// Deliberate machine bugs (to prove the checkers catch them).
    pub bugs: InjectedBugs,
    /// Deliberate executor bugs (likewise).
    pub exec_bugs: PlantedBugs,
    /// Progress on stderr.
    pub verbose: bool,
    /// One extra burst of this many `sync()` calls early in the run.
    pub extra_burst: Option<usize>,
    /// Views to define at the start, instead of the scenario's range.
    pub views: Option<u64>,
}

impl SimOptions {
    /// A run of `scenario` from `seed` with the defaults (2,000 chaos steps,
    /// memory store).
    pub fn new(seed: u64, scenario: Scenario) -> SimOptions {
        SimOptions {
            seed,
            scenario,
            steps: 2000,
            liveness_steps: 60_000,
            store: StoreKind::Memory,
            bugs: InjectedBugs::default(),
            exec_bugs: PlantedBugs::default(),
            verbose: false,
            extra_burst: None,
            views: None,
        }
    }

    /// The command line that replays this run.
    pub fn replay_command(&self) -> String {
        let mut cmd = format!(
            "flashsync-sim --seed {} --scenario {} --steps {} --store {}",
            self.seed, self.scenario, self.steps, self.store
        );
        for (on, name) in [
            (self.bugs.ack_before_durable, "ack_before_durable"),
            (self.bugs.skip_xid_filter, "skip_xid_filter"),
            (self.bugs.apply_while_disabled, "apply_while_disabled"),
            (self.bugs.skip_move_outs, "skip_move_outs"),
            (self.bugs.skip_move_ins, "skip_move_ins"),
            (self.bugs.keep_idle_feeds, "keep_idle_feeds"),
            (self.bugs.drop_staged_parts, "drop_staged_parts"),
            (self.bugs.keep_abandoned_parts, "keep_abandoned_parts"),
            (self.bugs.skip_chunk_filter, "skip_chunk_filter"),
            (self.bugs.drop_chunk_changes, "drop_chunk_changes"),
            (self.bugs.resume_past_gap, "resume_past_gap"),
            (self.bugs.unbounded_chunk_growth, "unbounded_chunk_growth"),
            (self.bugs.freeze_recopied_copy, "freeze_recopied_copy"),
            (self.bugs.reapply_resumed_span, "reapply_resumed_span"),
            (self.bugs.keep_unattached_running, "keep_unattached_running"),
            (self.bugs.attach_by_names, "attach_by_names"),
            (self.bugs.attach_ignoring_filter_columns, "attach_ignoring_filter_columns"),
            (self.exec_bugs.reorder_store, "reorder_store"),
            (self.exec_bugs.durable_before_persist, "durable_before_persist"),
            (self.exec_bugs.drop_captured_removals, "drop_captured_removals"),
        ] {
            if on {
                cmd.push_str(&format!(" --inject-bug {name}"));
            }
        }
        if let Some(n) = self.extra_burst {
            cmd.push_str(&format!(" --burst {n}"));
        }
        if let Some(n) = self.views {
            cmd.push_str(&format!(" --views {n}"));
        }
        cmd
    }
}

/// Why a run could not even start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    /// The store could not be opened.
    #[error("could not open the {0} store: {1}")]
    Store(StoreKind, StoreError),
}

/// A sub-seed for one purpose, so that e.g. a change to the workload does
/// not shift the fault plan of every seed.
pub(crate) fn fork(seed: u64, purpose: u64) -> u64 {
    let mut r = Rng::new(seed ^ purpose.wrapping_mul(0xA24B_AED4_963E_E407));
    r.next_u64()
}

/// Runs one simulation.
pub fn run(opts: &SimOptions) -> Result<Report, SimError> {
    let started = Instant::now();
    let mut plan = Plan::draw(opts.scenario, &mut Rng::new(fork(opts.seed, 1)));
    plan.config.bugs = opts.bugs;
    plan.exec_bugs = opts.exec_bugs;
    // Three seeds in four run with a change feed listening; the rest keep
    // the path where nobody does (a sub-seed: other draws do not move).
    plan.capture = !fork(opts.seed, 6).is_multiple_of(4) || opts.exec_bugs.drop_captured_removals;
    // Half the seeds start with two columns added to each table, which
    // views may keep and `ALTER TABLE`s drop (the others move up); the rest
    // keep tables narrow, where more copies run to their end (a sub-seed).
    let added = if fork(opts.seed, 7).is_multiple_of(2) { 2 } else { 0 };
    let up = Upstream::new(plan.first_xid, 6 + (fork(opts.seed, 2) % 10) as i64, added);
    up.send_whole_old_rows(fork(opts.seed, 5));
    let store = SimStore::open(opts.store).map_err(|e| SimError::Store(opts.store, e))?;
    // As the engine does: only a store that keeps copies across restarts
    // is asked to checkpoint them.
    plan.config.checkpoint_copies &= store.resumes_generations();
    let plan_text = plan.to_string();
    let mut w =
        World::new(opts.seed, plan, store, up, fork(opts.seed, 3)).map_err(|e| SimError::Store(opts.store, e))?;
    w.rng = Rng::new(fork(opts.seed, 4));
    // One seed in four adds dropped columns again under their names (a
    // sub-seed: the others run exactly as before such re-adds existed).
    w.readds = fork(opts.seed, 8).is_multiple_of(4).then(|| Rng::new(fork(opts.seed, 9)));
    w.scenario = opts.scenario;
    w.verbose = opts.verbose;
    if opts.verbose {
        eprintln!(
            "flashsync-sim: seed {} scenario {} store {} steps {}",
            opts.seed, opts.scenario, opts.store, opts.steps
        );
        eprintln!("  {plan_text}");
    }
    crate::workload::setup(&mut w, opts.scenario, opts.views);
    if let Some(n) = opts.extra_burst {
        // A reconnect storm: three waves of concurrent callers, the
        // connection dropping before each.
        let names: Vec<ViewName> = w.defs_used.iter().map(|d| d.name.clone()).collect();
        let waves = 3;
        for wave in 0..waves {
            let at = 150 + 150 * wave as u64;
            w.schedule(at.saturating_sub(1), Ev::FlapFeed);
            let burst = w.next_burst;
            w.next_burst += 1;
            let calls = n / waves + usize::from(wave < n % waves);
            w.burst_sizes.insert(burst, calls);
            for i in 0..calls {
                let selector = match i % 4 {
                    0 | 1 => Selector::All,
                    2 if !names.is_empty() => Selector::view(&names[i % names.len()]),
                    _ => Selector::from_map([("public", ["users_*", "posts_*"])]).unwrap_or_default(),
                };
                let call = Call::Sync { selector, force: i % 97 == 0 };
                w.schedule(at, Ev::Control { inc: ANY_INCARNATION, call, burst: Some(burst) });
            }
        }
    }

    // Chaos.
    let mut violation_at = None;
    while w.counters.steps < opts.steps {
        if !w.step() {
            break;
        }
        if w.checker.failed() {
            violation_at = Some((w.counters.steps, w.now));
            break;
        }
    }

    // Liveness: heal everything, sync, and demand convergence.
    let chaos_steps = w.counters.steps;
    let mut converged = false;
    if violation_at.is_none() {
        if opts.verbose {
            eprintln!(
                "  t={:>7.3}s chaos phase done ({} steps); healing every fault",
                w.now as f64 / 1000.0,
                chaos_steps
            );
        }
        heal(&mut w);
        let limit = chaos_steps + opts.liveness_steps;
        let mut checked_at = 0;
        while w.counters.steps < limit {
            if !w.step() {
                break;
            }
            if w.checker.failed() {
                violation_at = Some((w.counters.steps, w.now));
                break;
            }
            let quiet = !w.busy();
            if quiet || w.counters.steps - checked_at >= 200 {
                checked_at = w.counters.steps;
                if unconverged(&w).is_none() {
                    converged = true;
                    break;
                }
            }
        }
        if !converged && violation_at.is_none() {
            let why = unconverged(&w).unwrap_or_else(|| "unknown".into());
            w.checker.report("liveness", format!("not converged within {} liveness steps: {why}", opts.liveness_steps));
            violation_at = Some((w.counters.steps, w.now));
        }
        if converged {
            final_checks(&mut w);
            if w.checker.failed() {
                violation_at = Some((w.counters.steps, w.now));
                converged = false;
            }
        }
        if opts.verbose && converged {
            let (running, enabled) = w.running_views();
            eprintln!(
                "  t={:>7.3}s converged after {} liveness steps: every enabled view equals upstream \
                 ({running}/{enabled} realtime views running)",
                w.now as f64 / 1000.0,
                w.counters.steps - chaos_steps
            );
        }
    }

    let violation = w.checker.violation.clone().map(|v| {
        let (step, time_ms) = violation_at.unwrap_or((w.counters.steps, w.now));
        Failure { invariant: v.invariant.to_owned(), detail: v.detail, step, time_ms, replay: opts.replay_command() }
    });
    let wall = started.elapsed();
    let wall_ms = wall.as_millis() as u64;
    let secs = wall.as_secs_f64().max(1e-6);
    let totals = w.total_stats();
    let (passes, commits_applied, live_recopies) = (totals.passes, totals.commits_applied, totals.live_recopies);
    let upstream_commits = w.up.history().len() as u64;
    let faults_injected = w.counters.faults.values().sum();
    Ok(Report {
        seed: opts.seed,
        scenario: opts.scenario,
        store: opts.store,
        steps: w.counters.steps,
        liveness_steps: w.counters.steps - chaos_steps,
        sync_calls: w.counters.sync_calls,
        passes,
        commits_applied,
        view_commits_checked: w.checker.applied_claims,
        copy_checkpoints: w.checker.checkpointed,
        copies_resumed: w.checker.resumed,
        live_recopies,
        recopies_resumed: totals.recopies_resumed,
        upstream_commits,
        faults_injected,
        faults: w.counters.faults.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
        plan: plan_text,
        bursts: w.checker.bursts_done,
        burst_calls: w.checker.burst_calls,
        max_passes_per_burst: w.checker.max_passes_per_burst,
        crashes: w.counters.crashes,
        snapshots: w.counters.snapshots,
        views: w.machine().status(&Selector::All).len(),
        violations: u64::from(violation.is_some()),
        violation,
        converged,
        trace_hash: format!("{:016x}", w.trace.hash()),
        virtual_ms: w.now,
        wall_ms,
        steps_per_sec: (w.counters.steps as f64 / secs) as u64,
        commits_per_sec: (upstream_commits as f64 / secs) as u64,
    })
}

/// Ends every fault, finishes every upstream transaction, and asks for a
/// sync (forced for materialized views, so they copy the final state).
fn heal(w: &mut World) {
    w.liveness = true;
    w.trace.add("heal", &w.now);
    w.up.db.set_offline(false);
    w.offline_until = None;
    w.fail_next_apply = false;
    for t in w.up.open_ids() {
        if let Err(e) = w.up.commit(t, true) {
            w.checker.report("upstream model: commits", e.to_string());
        }
    }
    for xid in w.up.invisible_xids() {
        w.up.make_visible(xid);
    }
    w.kick();
    if w.down {
        // Restart now rather than wait for the scheduled restart.
        w.schedule(0, Ev::Restart);
    }
    // The calls go to whichever incarnation is up by then.
    w.schedule(1, Ev::LivenessSync);
}

/// Why the run has not converged yet, if it has not.
pub(crate) fn unconverged(w: &World) -> Option<String> {
    if w.down {
        return Some("the process is down".into());
    }
    if w.exec.waiting() > 0 {
        let busy: Vec<String> = w
            .machine()
            .status(&Selector::All)
            .iter()
            .filter_map(|j| {
                let phase = w.machine().phase(j.relation_id)?;
                (!matches!(phase, flashsync_core::machine::ViewPhase::Idle | flashsync_core::machine::ViewPhase::Live))
                    .then(|| format!("{}: {phase:?}", j.view_name()))
            })
            .collect();
        return Some(format!("{} control calls unanswered (views at work: {busy:?})", w.exec.waiting()));
    }
    if !w.store_idle() {
        return Some("store actions pending".into());
    }
    for job in w.machine().status(&Selector::All) {
        if !job.enabled {
            continue;
        }
        let Some(def) = w.machine().definitions(&Selector::view(&job.view_name())).into_iter().next() else {
            continue;
        };
        let table = def.def.upstream.table.as_str();
        let kind = w.up.kind(table)?;
        let name = job.view_name();
        if def.def.persistence == Persistence::Realtime && kind == TableKind::NoIdentity {
            let clear = job.last_error.as_deref().is_some_and(|e| e.contains("REPLICA IDENTITY"));
            if job.state != JobState::Failed || !clear {
                return Some(format!("{name} (no replica identity) should fail clearly, is {job:?}"));
            }
            continue;
        }
        // A view keeping, or filtered by, a column the workload dropped no
        // longer fits its table: it must fail, saying which column, and stay
        // failed.
        let columns = w.up.db.describe(crate::upstream::SCHEMA, table).map(|s| s.columns).unwrap_or_default();
        let kept = def.def.columns.iter().flatten().map(String::as_str);
        let read = def.def.filter.iter().flat_map(|f| f.columns());
        if let Some(gone) = kept.chain(read).find(|c| !columns.iter().any(|have| have.name == *c)) {
            let clear = job.last_error.as_deref().is_some_and(|e| e.contains(&format!("\"{gone}\"")));
            if job.state != JobState::Failed || !clear {
                return Some(format!("{name} (reading the dropped column {gone}) should fail clearly, is {job:?}"));
            }
            continue;
        }
        let want = match def.def.persistence {
            Persistence::Realtime => JobState::Running,
            Persistence::Materialized => JobState::Synced,
        };
        if job.state != want {
            return Some(format!("{name} is {} ({:?}), want {want}", job.state, job.last_error));
        }
        if def.def.persistence == Persistence::Realtime
            && w.machine().phase(def.relation_id) != Some(flashsync_core::machine::ViewPhase::Live)
        {
            return Some(format!("{name} is running but {:?}", w.machine().phase(def.relation_id)));
        }
        let rows = match w.store.rows(def.relation_id) {
            Ok(Some(rows)) => rows,
            Ok(None) => return Some(format!("{name} has no copy")),
            Err(e) => return Some(format!("{name}: {e}")),
        };
        let truth = w.up.state(table)?;
        let Some(shape) =
            w.up.db.describe(crate::upstream::SCHEMA, table).and_then(|s| ViewShape::new(&def.def, s).ok())
        else {
            return Some(format!("{name}: its definition does not fit {table}"));
        };
        if !w.checker.equals_upstream(&shape, &rows, truth) {
            let (extra, missing) = w.checker.upstream_difference(&shape, &rows, truth);
            return Some(format!(
                "{name}: {} local rows, upstream {table} has {}; only local: {extra:?}; only upstream: {missing:?}",
                rows.len(),
                truth.len()
            ));
        }
    }
    None
}

/// Checks that only make sense once everything has settled.
fn final_checks(w: &mut World) {
    let stats = w.up.db.stats();
    // A walsender costs the server a process and holds the slot's WAL: with
    // every realtime view stopped or gone, the feed must be closed.
    let realtime_enabled = w
        .checker
        .defs()
        .iter()
        .any(|(id, d)| d.persistence == flashsync_core::Persistence::Realtime && !w.checker.is_disabled(*id));
    if !realtime_enabled && w.up.db.feed_connected() {
        w.checker.report(
            "no feed without realtime views",
            "every realtime view is stopped or forgotten, yet the feed is open".into(),
        );
    }
    if stats.refused_subscriptions > 0 {
        w.checker.report(
            "one feed at a time",
            format!("the origin refused {} subscriptions: two feeds at once", stats.refused_subscriptions),
        );
    }
    if let Some(durable) = w.checker.durable_ever() {
        if stats.max_ack > durable {
            w.checker.report(
                "ack <= durable",
                format!("the origin saw an ack of {} but the store reported durable only {durable}", stats.max_ack),
            );
        }
    } else if stats.max_ack.0 > 0 {
        w.checker
            .report("ack <= durable", format!("the origin saw an ack of {} but nothing is durable", stats.max_ack));
    }
}
