//! The simulated process's life: faults on the local side, crashes,
//! clean shutdowns and restarts.

use std::collections::{BTreeMap, BTreeSet};

use flashsync_core::memory::FailPoint;
use flashsync_core::{RelationId, Selector, ViewDef};

use super::{executor, Call, Ev, World};
use crate::faults::Fault;

impl World {
    /// Counts an injected fault.
    pub fn count_fault(&mut self, f: Fault) {
        *self.counters.faults.entry(f.name()).or_default() += 1;
    }

    /// The local process dies: the executor, the machine and everything in
    /// flight are gone; the store keeps what was durable (or, with `lose`
    /// false, happens to keep everything). It restarts after `downtime`.
    pub fn crash(&mut self, lose: bool, downtime: u64) {
        self.trace.add("crash", &lose);
        self.shutting_down = None;
        self.counters.crashes += 1;
        self.accumulate_stats();
        self.inc += 1;
        self.down = true;
        self.store_step = None;
        self.timer_at = None;
        self.snap_generations.clear();
        self.snaps.clear();
        // The connection dies with the process.
        self.feed = None;
        self.feed_txn_open = false;
        self.counters.lost_requests += self.exec.waiting() as u64;
        self.bursts.clear();
        // The executor dies with the process, and with it the store
        // generations it kept (they hold the store open): an idle stand-in
        // takes its place until the restart.
        self.exec = executor(&self.plan, self.seed, flashsync_core::StoredState::default(), self.now);
        // The store says whether the crash lost what was not durable (a
        // fjall journal rotated since its last fsync loses nothing).
        self.followed.clear();
        let lost = match self.store.crash(lose) {
            Ok(lost) => lost,
            Err(e) => {
                self.checker.report("store works", format!("crash and reopen failed: {e}"));
                lose
            }
        };
        self.checker.on_crash(lost);
        self.schedule(downtime, Ev::Restart);
    }

    pub(super) fn accumulate_stats(&mut self) {
        let s = self.exec.machine().stats();
        self.dead_stats.passes += s.passes;
        self.dead_stats.commits_applied += s.commits_applied;
        self.dead_stats.live_recopies += s.live_recopies;
        self.dead_stats.recopies_resumed += s.recopies_resumed;
    }

    /// The machine's counters the report shows, over every incarnation
    /// (the others stay zero).
    pub fn total_stats(&self) -> flashsync_core::machine::Stats {
        let s = self.machine().stats();
        flashsync_core::machine::Stats {
            passes: self.dead_stats.passes + s.passes,
            commits_applied: self.dead_stats.commits_applied + s.commits_applied,
            live_recopies: self.dead_stats.live_recopies + s.live_recopies,
            recopies_resumed: self.dead_stats.recopies_resumed + s.recopies_resumed,
            ..Default::default()
        }
    }

    /// A clean shutdown: the executor drains the store and persists; once it
    /// answers, the process stops (losing whatever was not durable: nothing
    /// should be) and restarts after `downtime`.
    pub fn clean_restart(&mut self, downtime: u64) {
        if self.down || self.shutting_down.is_some() {
            return;
        }
        self.shutting_down = Some(downtime);
        self.deliver_call(Call::Shutdown, None);
    }

    pub(super) fn restart(&mut self) {
        if !self.down {
            return;
        }
        let state = match self.store.load() {
            Ok(s) => s,
            Err(e) => {
                self.checker.report("store works", format!("load after restart failed: {e}"));
                return;
            }
        };
        let disabled: BTreeSet<RelationId> = state.jobs.iter().filter(|j| !j.enabled).map(|j| j.relation_id).collect();
        let defs: BTreeMap<RelationId, ViewDef> = state.views.iter().map(|v| (v.relation_id, v.def.clone())).collect();
        self.trace.add("restart", &state);
        for p in &state.origins {
            self.checker.on_loaded_progress(p.applied);
        }
        let seed = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15).wrapping_add(self.inc);
        self.exec = executor(&self.plan, seed, state, self.now);
        // The new process has a source of its own: its feed expects the
        // relations as it describes them, not as the last one knew them.
        self.source = self.up.db.source();
        self.checker.on_start(self.exec.machine());
        self.pass_base = 0;
        self.down = false;
        self.checker.on_restart(disabled, defs);
        // Crash consistency: every copy is what was durable.
        for id in self.checker.mirrored() {
            let rows = self.store.rows(id);
            self.check_copy_rows(id, rows, "after restart");
        }
        self.after_input();
        // The application calls sync() on startup.
        self.deliver_call(Call::Sync { selector: Selector::All, force: false }, None);
    }

    /// Makes the next `n` calls of `point` fail.
    pub fn fail_calls(&mut self, point: FailPoint, n: u32) {
        self.up.db.fail_next(point, n);
    }
}
