//! Target `core_executor`: the production [`Executor`](flashsync_core::exec::Executor)
//! (and through it the machine) over the memory reference store and
//! upstream, with the fuzzer choosing the schedule.
//!
//! Where `core_machine` feeds the machine arbitrary inputs, this target
//! plays a *correct but arbitrary* driver through
//! [`Harness`]: each step completes
//! whichever pending piece of work the input picks (the store step, the
//! persist, any source call, the connection, feed events,
//! acknowledgements), or makes an upstream write, a control call, a feed
//! cut, a timer or a crash. The harness checks the executor's promises after
//! every step — store steps one at a time in emission order, at most one
//! persist, no acknowledgement ahead of durability — and at the end, once a
//! well-behaved driver has brought everything to rest, that every running
//! realtime view holds exactly its upstream table.
//!
//! [`core_executor_with`] plants executor bugs, to prove the checks fail.

use arbitrary::{Arbitrary, Unstructured};
use flashsync_core::exec::harness::Harness;
use flashsync_core::exec::{Call, PlantedBugs};
use flashsync_core::memory::{MemoryUpstream, TableIdentity};
use flashsync_core::{key, row, Config, Persistence, Selector, Value, ViewDef};

/// Most steps taken from one input.
const MAX_STEPS: usize = 300;
const TABLES: [&str; 2] = ["t1", "t2"];
const ORIGIN: &str = "postgres:main";

/// The `core_executor` target body (see the [module docs](self)).
pub fn core_executor(data: &[u8]) {
    let _ = core_executor_with(data, PlantedBugs::default());
}

/// What one input exercised (so tests can tell the target does reach the
/// interesting states).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Coverage {
    /// Steps taken from the input.
    pub steps: usize,
    /// Upstream commits the machine applied to views.
    pub commits_applied: u64,
    /// Running realtime views compared with upstream at the end.
    pub views_verified: usize,
}

/// Runs `data` like [`core_executor`] with `bugs` planted in the executor.
pub fn core_executor_with(data: &[u8], bugs: PlantedBugs) -> Coverage {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else { return Coverage::default() };
    let (mut h, views) = setup.harness();
    h.plant(bugs);
    let mut steps = 0;
    while !u.is_empty() && steps < MAX_STEPS {
        let Ok(step) = Step::arbitrary(&mut u) else { break };
        step.run(&mut h, &views);
        steps += 1;
    }
    let commits_applied = h.machine().stats().commits_applied;
    h.call(Call::Resume(Selector::All));
    let views_verified = if h.settle() { h.verify_running() } else { 0 };
    Coverage { steps, commits_applied, views_verified }
}

#[derive(Arbitrary, Debug)]
struct Setup {
    apply_run: u8,
    max_ops_in_flight: u8,
    small_batches: bool,
    materialized: bool,
}

impl Setup {
    fn harness(&self) -> (Harness, Vec<ViewDef>) {
        let up = MemoryUpstream::new();
        for t in TABLES {
            up.create_table("public", t, &[("id", "int8"), ("v", "text")], TableIdentity::PrimaryKey(vec![0]));
            up.insert("public", t, row![1_i64, "one"]);
        }
        let config = Config {
            apply_run: 1 + usize::from(self.apply_run % 6),
            max_ops_in_flight: 1 + usize::from(self.max_ops_in_flight % 24),
            max_batch_ops: if self.small_batches { 2 } else { 50_000 },
            ..Config::default()
        };
        let mut views = Vec::new();
        for t in TABLES {
            views.extend(ViewDef::new("public", &format!("{t}_rt"), Persistence::Realtime, ORIGIN, "public", t));
        }
        if self.materialized {
            views.extend(ViewDef::new("public", "t1_mat", Persistence::Materialized, ORIGIN, "public", "t1"));
        }
        let mut h = Harness::new(up, config);
        for def in &views {
            h.call(Call::Define(def.clone()));
        }
        h.call(Call::Sync { selector: Selector::All, force: false });
        (h, views)
    }
}

/// One step: `kind` picks what happens (mostly: some pending work
/// completes, so inputs make progress), `a` and `b` parameterize it.
#[derive(Arbitrary, Debug)]
struct Step {
    kind: u8,
    a: u8,
    b: u8,
}

impl Step {
    fn run(&self, h: &mut Harness, views: &[ViewDef]) {
        let Step { kind, a, b } = *self;
        let view = |i: u8| Selector::view(&views[usize::from(i) % views.len()].name);
        match kind {
            0..=159 => {
                let pending = h.pending();
                if pending.is_empty() {
                    h.timer(u64::from(a) * 8);
                } else {
                    h.complete(pending[usize::from(a) % pending.len()], 1 + usize::from(b % 8));
                }
            }
            160..=209 => write(h, TABLES[usize::from(a % 2)], i64::from(b % 6), a / 2),
            210..=224 => h.timer(u64::from(a) * 16 + u64::from(b)),
            225..=234 => {
                h.call(Call::Sync { selector: Selector::All, force: a % 4 == 0 });
            }
            235..=240 => {
                h.call(Call::Stop(view(a)));
            }
            241..=246 => {
                h.call(Call::Resume(view(a)));
            }
            247..=250 => h.up.cut_feed(),
            _ => h.crash(),
        }
    }
}

/// Inserts, updates or deletes row `id` of `table`, whichever applies.
fn write(h: &mut Harness, table: &str, id: i64, kind: u8) {
    let exists = h.up.rows("public", table).iter().any(|r| r.0.first() == Some(&Value::from(id)));
    match (kind % 3, exists) {
        (0 | 1, false) => {
            h.up.insert("public", table, row![id, format!("v{kind}")]);
        }
        (0 | 1, true) => {
            h.up.update("public", table, key![id], row![id, format!("u{kind}")]);
        }
        (_, true) => {
            h.up.delete("public", table, key![id]);
        }
        (_, false) => {}
    }
}
