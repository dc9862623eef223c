//! Regressions for the exactness holes that sweeps over unseen seeds found
//! (lost and doubled commits, holes, hangs). Each test replays the seed that
//! showed one class, on the code before its fix, as a violation; the comment
//! names the root cause. (Later changes to the machine may steer a seed
//! elsewhere; the class stays covered by the checkers and the sweeps.) `flashsync-sim --seed N --scenario all --store
//! memory` replays any of them by hand, `FLASHSYNC_SIM_TRACE=1` with a trace.

use flashsync_sim::{run, Report, Scenario, SimOptions, StoreKind};

fn replay(seed: u64) -> Report {
    let mut o = SimOptions::new(seed, Scenario::All);
    o.store = StoreKind::Memory;
    run(&o).expect("run starts")
}

fn must_pass(seeds: &[u64]) {
    for &seed in seeds {
        let r = replay(seed);
        assert!(r.ok(), "seed {seed} failed: {:?} (converged: {})", r.violation, r.converged);
    }
}

/// A gap after a slot loss: the feed's new start position was stored before
/// the views whose copies do not reach it were demoted; a crash in between
/// left a job stored `running` beside a position past its copy.
#[test]
fn a_slot_loss_demotes_the_views_before_the_new_position_is_stored() {
    must_pass(&[5002128, 5002771]);
}

/// A gap after a crash: a job was stored `running` (job records are durable
/// at once) while the hand-off batch holding the transactions delivered
/// during its copy was not yet durable, and the crash lost that batch.
#[test]
fn a_job_is_stored_running_only_once_its_hand_off_is_durable() {
    must_pass(&[5005687]);
}

/// A commit applied twice (xid 4294967153, across the 2^32 boundary): the
/// stored job lost its hand-off filter as soon as the feed passed the
/// snapshot, before a position past it was durable; a crash took the store
/// back before the snapshot and the replay re-applied what the copy held.
#[test]
fn the_stored_hand_off_filter_outlives_any_crash_that_could_need_it() {
    must_pass(&[6004292]);
}

/// A copy with a hole: batches emitted before the machine learnt that an
/// earlier one failed were applied over it (and could be persisted so).
/// Drivers now refuse them by chain (`BatchGate`).
#[test]
fn batches_queued_behind_a_failed_one_are_refused() {
    must_pass(&[5003463, 5004179]);
}

/// A gap after a restart: a snapshot listed as in progress a transaction
/// whose commit the feed had delivered before the restart, so neither the
/// copy nor the stream after it held it. Sources must not report such a
/// snapshot (the Postgres source retakes it; the memory source now fails
/// it, and the machine retries).
#[test]
fn a_snapshot_never_misses_a_commit_delivered_before_a_restart() {
    must_pass(&[5012021]);
}

/// An acknowledgement of a position the store no longer held: forgetting an
/// origin's last realtime view made the store forget its position, but the
/// machine kept believing the store applied it; when the re-recorded start
/// position then failed to apply, it was still acknowledged once a later
/// batch was durable. Forgetting now resets the origin whole.
#[test]
fn a_forgotten_origin_acknowledges_nothing_the_store_does_not_hold() {
    must_pass(&[6035999]);
}

/// A gap after a crash: forgetting a view released its table from the
/// publication before the store had forgotten the view; the crash lost the
/// store's deletion, the view came back and resumed over the commits made
/// while its table was out of the feed. Releases now wait for the store.
#[test]
fn upstream_resources_are_released_only_once_the_store_forgot_the_view() {
    must_pass(&[7036991]);
}

/// A gap after a re-definition (churn): a view forgotten and defined again
/// at once was prepared (its table put in the feed) before the forget's
/// deferred release took the table out again. Releases a view still needs
/// are skipped, and a view set up while a release of its table was in
/// flight is copied again.
#[test]
fn a_view_defined_again_keeps_its_table_in_the_feed() {
    for seed in [8001189, 8006021] {
        let mut o = SimOptions::new(seed, Scenario::Churn);
        o.store = StoreKind::Memory;
        let r = run(&o).expect("run starts");
        assert!(r.ok(), "seed {seed} failed: {:?} (converged: {})", r.violation, r.converged);
    }
}

/// Hangs: every sync() unanswered. (1) A view stopped while deciding whether
/// to re-attach left its origin's feed unopened, and every realtime copy
/// waited for it. (2) A feed paused mid-transaction for held-back changes
/// whose views had gone live or been cancelled never resumed.
#[test]
fn passes_always_finish() {
    must_pass(&[1277, 5014323, 6003591]);
}

/// The checker's own hole: a definition a shut-down (draining) machine
/// refused was taken as the view's new one, so the old definition's last
/// events looked illegal. Only definitions the machine holds count now.
#[test]
fn a_refused_definition_does_not_change_what_the_checker_expects() {
    must_pass(&[20087191]);
}

/// A checkpointed copy continued after its view was redefined: the filter
/// had changed (the schema had not), so the continued copy kept rows the
/// new definition excludes. A redefinition now drops the checkpoint.
#[test]
fn a_redefined_view_does_not_continue_the_old_definitions_copy() {
    must_pass(&[90047109]);
}

/// Liveness: a copy resumed from a checkpoint had all its chunks in and
/// waited for the feed to deliver what it lacked, while its own hold-back
/// kept the feed paused — for ever. A draining copy's hold-back no longer
/// counts toward the pause.
#[test]
fn a_draining_resumed_copy_never_keeps_the_feed_paused() {
    must_pass(&[93054805]);
}

/// Copies kept current while a new one is made (forced, or following a
/// column added), each on the code before its fix: a held share applied
/// twice after a publish in the middle of a transaction (168); a held share
/// dropped when the force came in the middle of one (768); a store failure
/// that left a view describing its relation afresh running on a copy with
/// a hole (120005590 and its like); the transaction of a column's addition
/// never credited to a view that went live during it (120009504); parts
/// staged for the old copy applied to the new one, published before the
/// transaction's commit (120009149, a keyless view).
#[test]
fn a_copy_kept_current_gets_every_commit_once() {
    must_pass(&[168, 768, 120003703, 120005590, 120008777, 120009149, 120009504, 120016237, 120020473]);
}

/// A copy read through the wrong columns after a restart: the table was
/// described as it is now (a column dropped, the one after it moved up)
/// while the feed replayed rows of the old shape, read by the new
/// positions. The memory source now announces the shape a replayed row
/// has, as the Postgres source does with every `Relation` message.
#[test]
fn a_replay_after_a_dropped_column_is_read_by_its_own_shape() {
    must_pass(&[220007110]);
}

/// A gap after two restarts: the first found the relation changed (a
/// column added), so the view could not re-attach, but its job stayed
/// stored as running while the feed moved on; the second found the
/// relation as the copy knew it again (the column dropped) and attached
/// the stale copy over the commits it had missed. The job is now stored
/// as not running before the feed starts.
#[test]
fn a_copy_that_could_not_attach_never_attaches_later() {
    must_pass(&[240016383]);
}

/// A mirror with another column's values: a copy of (id, likes, extra2)
/// made on a relation with extra1 before extra2; extra1 dropped; a
/// `prepare` for another view described the relation anew, and the feed's
/// replay of older rows was matched to that description, `extra2` at the
/// position of the copy's `extra1`. Followed by position, the copy read
/// `extra3` as `extra2`. Positions whose names disagree with the copy's
/// shape are no longer followed (`RelationSchema::after_change`).
#[test]
fn a_copy_follows_no_positions_counted_in_another_shape() {
    must_pass(&[280038364]);
}

/// A false alarm, kept so it stays away: a checkpointed copy of (a, b, n)
/// continued after a restart that found a column added, and after another
/// that found it dropped again; the checker kept the chunk copied in
/// between as upstream rows of four columns and compared them, at the
/// publish, with a copy of three. The checker's chunks now follow the
/// table's shape by name, as the view reads them.
///
/// The first version of that fix laid the chunks back over the shape of
/// every transaction amended into them, and a replayed transaction older
/// than a column added since cost the chunks that column's values (seed
/// 281 of `commits`, caught by CI's sweep): a commit's rows are now laid
/// over the chunks' shape, never the other way round.
#[test]
fn chunks_copied_across_a_change_of_shape_are_compared_by_name() {
    must_pass(&[290031511]);
    let mut o = SimOptions::new(281, Scenario::Commits);
    o.store = StoreKind::Memory;
    let r = run(&o).expect("run starts");
    assert!(r.ok(), "seed 281 (commits) failed: {:?} (converged: {})", r.violation, r.converged);
}

/// A column dropped while a view copied in chunks was still sifting the
/// feed range by range, its ranges' snapshots on both sides of the drop:
/// the checker took the drop (recorded as the table's new content) for a
/// truncate that some ranges hold and others do not, and raised a false
/// alarm (seed 310052747, one in a 60,000-seed sweep). A change of shape
/// changes no value the view keeps.
#[test]
fn a_change_of_shape_during_a_hand_off_in_chunks_is_no_truncate() {
    must_pass(&[310052747]);
}

/// Checker false alarms once the memory feed became as silent as
/// `pgoutput`: it says nothing of a change of shape no row ever had (a
/// column dropped, then added again under its name before any row of the
/// table changed; seed 240026105, a feed's replay reaching both), and
/// nothing of one that a restart's description already shows and that
/// changes nothing a copy keeps (seed 5538: a column added while the engine
/// was down, under a view of other columns). The no-gap check took both
/// commits for missing. A copy need not take such a commit: the next
/// change of shape is judged instead, or there is nothing to take.
#[test]
fn changes_of_shape_the_feed_never_shows_are_no_gap() {
    must_pass(&[240026105, 5538]);
}

/// A feed that stayed silent on a dropped column: its slot was lost while
/// the column was added, so the feed never announced it, and the views
/// were copied again from descriptions that had it; the feed still
/// expected the relation as it was before (a description never replaces
/// an expected shape), and when the column was dropped again the relation
/// read as expected (seed 10050, found while making the memory feed as
/// silent as `pgoutput`). A description that differs from the expected
/// shape now makes the next announcement a change, in the memory source
/// as in the Postgres one.
#[test]
fn a_relation_described_otherwise_is_announced_next_time() {
    must_pass(&[10050]);
}

/// A checker false alarm from the upstream model: a change of shape
/// committed while a crashed process's feed was still registered was
/// judged for that dead feed, so the shapes it expected moved on, and the
/// next process's feed replayed it in silence to a view that had attached
/// to the old shape (seed 430003540, one in a 50,000-seed sweep). Only a
/// feed someone reads takes a change now.
#[test]
fn a_dead_feed_takes_no_change_of_shape() {
    must_pass(&[430003540]);
}

/// Checker false alarms (two in a 100,000-seed sweep, 500000000..500100000):
/// a view of every column took a column added by keeping the columns it had
/// while it was copied again. In seed 500007781 the feed was cut, and
/// meanwhile that column was dropped and added again. The replay judged
/// the relation's first row against the catalog as it is now, so it
/// announced the new column's number there, and said nothing when it
/// reached the drop and the add, as Postgres would. In seed 500066750 the
/// engine crashed and the added column was dropped while it was down; the
/// restart's description already lacked it. Either way the checker wanted
/// the old copy to take a change of a column it does not keep (the copy
/// under way has it): it now judges such a copy by the columns it keeps.
#[test]
fn a_copy_keeping_its_columns_while_copied_again_need_not_take_a_change_of_another() {
    must_pass(&[500007781, 500066750]);
}
