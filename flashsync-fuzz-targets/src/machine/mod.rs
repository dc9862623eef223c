//! Target `core_machine`: the sans-IO sync [`Machine`] under arbitrary input
//! sequences.
//!
//! The input is decoded (with [`arbitrary`]) into a `Setup` — tunables and
//! a stored state to start from — and a sequence of `Step`s: control calls
//! with arbitrary selectors and definitions (valid or not), feed events in
//! any order (whole transactions, or single events that may break the
//! protocol), lost feeds, subscription results of every kind, results for the
//! operations the machine emitted in any order, more than once, or for
//! operations it never emitted, `Applied`/`Durable` for any sequence number,
//! and timers with time moving forward. A `Harness` plays the driver: it
//! feeds each input, drains the outputs (at most [`MAX_OUTPUTS`] per input),
//! remembers what is in flight, and checks after every input:
//!
//! - **no panic** anywhere in the machine;
//! - every `StateChanged` event is legal ([`JobState::is_legal`]) for the
//!   view's persistence, starts from the state the previous event (or the
//!   stored job) left, and `status()` agrees with the events: no state change
//!   goes unreported;
//! - an `Ack` never exceeds the highest end LSN of a `Progress::Commit` batch
//!   of that origin reported durable (or the stored progress), and acks of
//!   one feed epoch strictly increase;
//! - at most one pass in flight: a new pass's store `Fence` is only emitted
//!   once the previous pass's fence has been answered, and never after
//!   shutdown; `Apply` batch numbers strictly increase; subscription epochs
//!   strictly increase;
//! - per view, transactions recorded as applied ([`AuditRecord::Applied`])
//!   have strictly increasing end LSNs between two publications of a copy
//!   (no commit applied twice);
//! - no more views copy at once than `max_concurrent_snapshots`;
//! - every request is answered at most once, and only requests that were
//!   made are answered;
//! - **no busy loop**: after an `Input::Timer` at or past
//!   [`Machine::poll_timeout`], the deadline is gone or in the future;
//! - after shutdown, no new work (snapshots, subscriptions, batches, acks,
//!   fences) is emitted.
//!
//! At the end, the harness plays a well-behaved driver — answering
//! everything in flight successfully, closing open transactions, firing due
//! timers (but sending no keepalives: the machine must not need them to make
//! progress) — and requires the machine to become quiescent
//! ([`Machine::is_quiescent`]) with every request answered, whatever came
//! before (results of the wrong kind, repeated results, protocol
//! violations); then it shuts the machine down and requires every request to
//! have exactly one reply.
//!
//! [`Machine`]: flashsync_core::Machine
//! [`Machine::poll_timeout`]: flashsync_core::Machine::poll_timeout
//! [`Machine::is_quiescent`]: flashsync_core::Machine::is_quiescent
//! [`JobState::is_legal`]: flashsync_core::JobState::is_legal
//! [`AuditRecord::Applied`]: flashsync_core::machine::AuditRecord::Applied

mod answer;
mod checks;
mod harness;
mod inputs;
mod interpret;
mod settle;
mod step;

use std::collections::BTreeSet;

use arbitrary::{Arbitrary, Unstructured};

use self::harness::Harness;
use self::inputs::{Setup, Step};

/// Most outputs one input may produce before the harness calls it runaway.
pub const MAX_OUTPUTS: usize = 4096;
/// Most steps taken from one input.
const MAX_STEPS: usize = 400;
/// Rounds the well-behaved driver gets to bring the machine to rest.
const SETTLE_ROUNDS: usize = 300;

const NAMESPACES: [&str; 2] = ["public", "app"];
const NAMES: [&str; 3] = ["a", "b", "c"];
const ORIGINS: [&str; 2] = ["pg:one", "pg:two"];
const TABLES: [(&str, &str); 3] = [("public", "t1"), ("public", "t2"), ("s", "t3")];

/// The `core_machine` target body (see the [module docs](self)).
pub fn core_machine(data: &[u8]) {
    run(data);
}

/// Runs `data` like [`core_machine`] and returns the milestones its steps
/// reached before the final settling (e.g. `running`, `replay`, `race`,
/// `ack`, `paused`): used to pick seed inputs that each show the machine
/// doing something distinct.
pub fn milestones(data: &[u8]) -> BTreeSet<&'static str> {
    run(data)
}

/// Whether `FLASHSYNC_FUZZ_TRACE` is set: print every step and output.
fn trace() -> bool {
    static TRACE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *TRACE.get_or_init(|| std::env::var_os("FLASHSYNC_FUZZ_TRACE").is_some())
}

fn run(data: &[u8]) -> BTreeSet<&'static str> {
    let mut u = Unstructured::new(data);
    let Ok(setup) = Setup::arbitrary(&mut u) else { return BTreeSet::new() };
    let mut h = Harness::new(&setup);
    let mut steps = 0;
    while !u.is_empty() && steps < MAX_STEPS {
        let Ok(step) = Step::arbitrary(&mut u) else { break };
        if trace() {
            eprintln!("step {steps}: {step:?}");
        }
        h.step(step);
        steps += 1;
    }
    let mut seen = std::mem::take(&mut h.seen);
    let stats = h.m.stats();
    for (hit, name) in [
        (stats.filtered > 0, "filtered"),
        (stats.duplicates_skipped > 0, "duplicate"),
        (stats.snapshot_races > 0, "race"),
        (stats.acks > 0, "ack"),
        (stats.commits_applied > 0, "commit"),
    ] {
        if hit {
            seen.insert(name);
        }
    }
    h.finish();
    seen
}
