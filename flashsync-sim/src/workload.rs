//! What happens to the system, tick by tick: upstream writes, callers'
//! control calls, and faults, chosen by the scenario and the fault plan.

use flashsync_core::memory::FailPoint;
use flashsync_core::predicate::Predicate;
use flashsync_core::{Persistence, Selector, ViewDef, ViewName};

use crate::driver::{Call, Ev, World};
use crate::faults::Fault;
use crate::scenario::Scenario;
use crate::upstream::{Altered, TableKind, TxnId, SCHEMA, TABLES};

/// Defines the initial views and asks for the first sync.
pub(crate) fn setup(w: &mut World, scenario: Scenario, views: Option<u64>) {
    let (lo, hi) = scenario.views();
    let n = views.unwrap_or_else(|| lo + w.rng.below(hi - lo + 1));
    for i in 0..n {
        let def = random_def(w, i);
        w.defs_used.push(def.clone());
        w.deliver_call(Call::Define(def), None);
    }
    if matches!(scenario, Scenario::All | Scenario::Churn) && w.rng.chance(0.4) {
        // A realtime view of a table without replica identity: must fail
        // loudly, forever.
        if let Ok(def) = ViewDef::new(SCHEMA, "logs_rt_noid", Persistence::Realtime, crate::ORIGIN, SCHEMA, "logs") {
            w.defs_used.push(def.clone());
            w.deliver_call(Call::Define(def), None);
        }
    }
    w.deliver_call(Call::Sync { selector: Selector::All, force: false }, None);
    let d = 1 + w.jitter(w.plan.timing.tick_ms);
    w.schedule(d, Ev::Tick);
    let d = w.jitter(w.plan.timing.keepalive_ms);
    w.schedule(d, Ev::Keepalive);
}

fn random_def(w: &mut World, i: u64) -> ViewDef {
    loop {
        let (table, kind) = TABLES[w.rng.below(TABLES.len() as u64) as usize];
        let realtime = kind != TableKind::NoIdentity && w.rng.chance(0.65);
        let (mode, tag) = if realtime { (Persistence::Realtime, "rt") } else { (Persistence::Materialized, "mat") };
        if let Ok(def) = ViewDef::new(SCHEMA, &format!("{table}_{tag}{i}"), mode, crate::ORIGIN, SCHEMA, table) {
            return partial(w, table, def);
        }
    }
}

/// Makes a view partial about half the time: a filter, a column list, or
/// both, chosen so the workload's updates move rows in and out (key changes,
/// unchanged TOAST values, filters on key columns only, on a column the view
/// does not keep, NULL verdicts).
fn partial(w: &mut World, table: &str, mut def: ViewDef) -> ViewDef {
    def.filter = None;
    def.columns = None;
    if !w.rng.chance(0.5) {
        return def;
    }
    let (filters, columns): (&[&str], &[&[&str]]) = match table {
        "users" => (
            &[
                "score < 50",
                "name IN ('u1', 'u2') OR score >= 90",
                "id < 8",
                "NOT (name = 'u3') AND score IS NOT NULL",
                "score BETWEEN 20 AND 60",
            ],
            &[&["id", "score"], &["score", "id", "name"]],
        ),
        "tags" => {
            (&["n > 4", "b <> 'y'", "a BETWEEN 1 AND 2 AND n < 8", "a IN (0, 3)"], &[&["b", "a"], &["a", "b", "n"]])
        }
        "posts" => (
            &["likes >= 25", "body LIKE 'post body 1%'", "likes < 10 OR body LIKE '%2 lorem%'"],
            &[&["id", "likes"], &["likes", "body", "id"]],
        ),
        "events" => (&["n >= 1", "kind = 'a'"], &[]),
        "logs" => (&["at < 3", "msg <> 'm1'"], &[]),
        _ => (&[], &[]),
    };
    let with_filter = !filters.is_empty() && (columns.is_empty() || w.rng.chance(0.7));
    if with_filter {
        let f = filters[w.rng.below(filters.len() as u64) as usize];
        def.filter = Predicate::parse(f).ok();
    }
    if !columns.is_empty() && (!with_filter || w.rng.chance(0.5)) {
        let c = columns[w.rng.below(columns.len() as u64) as usize];
        let mut kept: Vec<String> = c.iter().map(|s| (*s).to_owned()).collect();
        // Sometimes a column the workload added, when there is one: dropping
        // another added before it moves it, and the copy must follow it by
        // name, not by place.
        let extras = w.up.extras(table);
        if !extras.is_empty() && w.rng.chance(0.7) {
            // Mostly the last added: the one that moves when another goes.
            let at = if w.rng.chance(0.75) { extras.len() - 1 } else { w.rng.below(extras.len() as u64) as usize };
            kept.push(extras[at].clone());
        }
        def.columns = Some(kept);
    }
    filter_on_another_column(w, table, def)
}

/// On the seeds that drop columns and add them again under their names
/// (`World::readds`, so the other seeds draw as before), now and then
/// filters a view of some columns by an added column it does not keep: a
/// copy whose rows were chosen by a column recreated since is stale,
/// though it keeps every column it did (`RelationSchema::filter_column_ids`).
fn filter_on_another_column(w: &mut World, table: &str, mut def: ViewDef) -> ViewDef {
    let Some(kept) = def.columns.clone() else { return def };
    let others: Vec<String> = w.up.extras(table).into_iter().filter(|e| !kept.contains(e)).collect();
    let Some(rng) = w.readds.as_mut() else { return def };
    if others.is_empty() || !rng.chance(0.4) {
        return def;
    }
    let column = &others[rng.below(others.len() as u64) as usize];
    // Added columns hold 0..3: this keeps about two rows in three.
    def.filter = Predicate::parse(&format!("{column} >= 1")).ok();
    def
}

/// A random selector over the views the workload knows.
fn random_selector(w: &mut World) -> Selector {
    let names: Vec<ViewName> = w.defs_used.iter().map(|d| d.name.clone()).collect();
    match w.rng.below(10) {
        0..=3 => Selector::All,
        4..=6 if !names.is_empty() => {
            let name = names[w.rng.below(names.len() as u64) as usize].clone();
            Selector::view(&name)
        }
        7 | 8 => {
            let (table, _) = TABLES[w.rng.below(TABLES.len() as u64) as usize];
            Selector::from_map([(SCHEMA, [format!("{table}_*")])]).unwrap_or_default()
        }
        _ => {
            let picked: std::collections::BTreeSet<ViewName> =
                names.iter().filter(|_| w.rng.chance(0.4)).cloned().collect();
            if picked.is_empty() {
                Selector::All
            } else {
                Selector::Names(picked)
            }
        }
    }
}

/// One workload action, then the next tick.
pub(crate) fn tick(w: &mut World) {
    if w.liveness {
        return;
    }
    alter_table(w);
    act(w);
    w.kick();
    let d = 1 + w.jitter(w.plan.timing.tick_ms);
    w.schedule(d, Ev::Tick);
}

fn act(w: &mut World) {
    let scenario = w.scenario;
    let mut choices: Vec<(u32, Action)> =
        vec![(scenario.write_weight(), Action::Write), (8, Action::Sync), (2, Action::Status)];
    for (f, rate) in w.plan.rates.clone() {
        if rate == 0 {
            continue;
        }
        let action = match f {
            Fault::CutFeed => Action::Fault(f),
            Fault::Storm => Action::Fault(f),
            Fault::DropSlot | Fault::InvalidateSlot | Fault::Offline | Fault::FailCalls => Action::Fault(f),
            Fault::Crash | Fault::Restart | Fault::StoreError | Fault::AlterTable => Action::Fault(f),
            Fault::Churn => Action::Fault(f),
            // Per-event probabilities, applied where the events happen.
            Fault::LostKeepalive | Fault::FeedStall | Fault::LostAck | Fault::SlowSnapshot => continue,
        };
        let weight = match f {
            Fault::Crash
            | Fault::Restart
            | Fault::DropSlot
            | Fault::InvalidateSlot
            | Fault::AlterTable
            | Fault::Offline
            | Fault::StoreError => rate,
            Fault::FailCalls => rate * 2,
            Fault::Churn => rate * 20,
            Fault::CutFeed => rate * 8,
            _ => rate * 4,
        };
        choices.push((weight, action));
    }
    let total: u32 = choices.iter().map(|c| c.0).sum();
    let mut roll = w.rng.below(u64::from(total.max(1))) as u32;
    let mut chosen = Action::Write;
    for (weight, a) in choices {
        if roll < weight {
            chosen = a;
            break;
        }
        roll -= weight;
    }
    w.trace.add("act", &chosen);
    match chosen {
        Action::Write => write(w),
        Action::Sync => {
            let selector = random_selector(w);
            let force = w.rng.chance(0.2);
            let inc = w.inc;
            w.schedule(0, Ev::Control { inc, call: Call::Sync { selector, force }, burst: None });
        }
        Action::Status => {
            // Status is a read of the machine; exercise it for panics.
            let _ = w.machine().status(&Selector::All);
        }
        Action::Fault(f) => fault(w, f),
    }
}

#[derive(Clone, Copy, Debug)]
enum Action {
    Write,
    Sync,
    Status,
    Fault(Fault),
}

fn write(w: &mut World) {
    let roll = w.rng.below(100);
    let truncates = true;
    if roll < 70 {
        let t = w.up.begin();
        let n = 1 + w.rng.below(4) as usize;
        w.up.add_ops(t, n, &mut w.rng, truncates);
        let window = w.plan.timing.invisible_ms > 0 && w.rng.chance(0.4);
        commit(w, t, window);
    } else if roll < 90 {
        // A transaction that stays open across whatever happens next.
        let t = w.up.begin();
        let n = 1 + w.rng.below(3) as usize;
        w.up.add_ops(t, n, &mut w.rng, truncates);
        let more = w.jitter(w.plan.timing.open_txn_ms / 2);
        w.schedule(more, Ev::TxnStep { txn: t, commit: false });
        let end = w.plan.timing.open_txn_ms / 2 + w.jitter(w.plan.timing.open_txn_ms);
        w.schedule(end, Ev::TxnStep { txn: t, commit: true });
    } else {
        let t = w.up.begin();
        w.up.add_ops(t, 2, &mut w.rng, truncates);
        w.trace.add("abort", &t);
        w.up.abort(t);
    }
}

/// A few transactions committed at once, on random tables: writes for the
/// feed to deliver in a window a fault aims at.
pub(crate) fn write_burst(w: &mut World, txns: usize) {
    for _ in 0..txns {
        let t = w.up.begin();
        let n = 1 + w.rng.below(4) as usize;
        w.up.add_ops(t, n, &mut w.rng, true);
        commit(w, t, false);
    }
}

fn commit(w: &mut World, t: TxnId, window: bool) {
    let before = w.up.history().len();
    let result = w.up.commit(t, !window);
    if let Some(c) = w.up.history().get(before) {
        let tables: Vec<&str> = c.deltas.keys().copied().collect();
        w.trace.add("commit", &(c.xid, c.end_lsn, &tables, &c.in_feed, window));
    }
    match result {
        Ok(Some(xid)) => {
            let d = w.jitter(w.plan.timing.invisible_ms);
            w.schedule(d, Ev::Visible { xid });
        }
        Ok(None) => {}
        Err(e) => w.checker.report("upstream model: commits", e.to_string()),
    }
    w.kick();
}

/// An open transaction does more, or ends.
pub(crate) fn txn_step(w: &mut World, t: TxnId, end: bool) {
    if !w.up.open_ids().contains(&t) {
        return;
    }
    if !end {
        let n = 1 + w.rng.below(2) as usize;
        w.up.add_ops(t, n, &mut w.rng, true);
        return;
    }
    if w.rng.chance(0.1) {
        w.trace.add("abort", &t);
        w.up.abort(t);
        return;
    }
    let window = w.plan.timing.invisible_ms > 0 && w.rng.chance(0.4);
    commit(w, t, window);
}

/// A keepalive from the origin (unless lost), then the next one.
pub(crate) fn keepalive(w: &mut World) {
    let lost = w.rng.below(100) < u64::from(w.plan.rate(Fault::LostKeepalive));
    if lost && !w.liveness {
        w.count_fault(Fault::LostKeepalive);
    } else {
        let reply = w.rng.chance(0.3);
        w.up.db.keepalive(reply);
        w.kick();
    }
    let d = 1 + w.jitter(w.plan.timing.keepalive_ms);
    w.schedule(d, Ev::Keepalive);
}

fn fault(w: &mut World, f: Fault) {
    if w.down && !matches!(f, Fault::AlterTable | Fault::CutFeed | Fault::DropSlot | Fault::InvalidateSlot) {
        // Nothing local to hurt while the process is down.
        return;
    }
    w.count_fault(f);
    match f {
        Fault::CutFeed => w.up.db.cut_feed(),
        Fault::Storm => storm(w),
        Fault::DropSlot => w.up.db.drop_slot(),
        Fault::InvalidateSlot => w.up.db.invalidate_slot(),
        Fault::Offline => {
            if w.offline_until.is_none() {
                w.up.db.set_offline(true);
                let d = 50 + w.jitter(800);
                w.offline_until = Some(w.now + d);
                w.schedule(d, Ev::Online);
            }
        }
        Fault::FailCalls => {
            let point = [FailPoint::Prepare, FailPoint::Snapshot, FailPoint::Subscribe, FailPoint::Release]
                [w.rng.below(4) as usize];
            w.fail_calls(point, 1);
        }
        Fault::Crash => {
            let d = 10 + w.jitter(500);
            w.crash(true, d);
        }
        Fault::Restart => {
            let d = 10 + w.jitter(300);
            w.clean_restart(d);
        }
        Fault::StoreError => w.fail_next_apply = true,
        Fault::AlterTable => {
            let (table, kind) = TABLES[w.rng.below(TABLES.len() as u64) as usize];
            if kind != TableKind::NoIdentity {
                let alter = if w.rng.chance(0.5) { Alter::DropColumn } else { Alter::AddColumn };
                // From a stream of its own, so the other draws of a seed
                // stay where they were.
                // Mostly while the engine is down, as migrations are run:
                // the feed's replay then says nothing of it (see
                // `flashsync_core::memory`'s shapes), and only the column
                // numbers stored with a copy tell it is stale.
                let down = w.down;
                let readd = w.readds.as_mut().is_some_and(|r| r.chance(if down { 0.9 } else { 0.5 }));
                let alter = if (alter == Alter::DropColumn || down) && readd { Alter::Readd } else { alter };
                w.pending_alter = Some((table, alter));
                alter_table(w);
            }
        }
        Fault::Churn => churn(w),
        Fault::LostKeepalive | Fault::FeedStall | Fault::LostAck | Fault::SlowSnapshot => {}
    }
}

/// A change of a table's columns the workload asked for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Alter {
    AddColumn,
    /// Drops one of the columns added before, never one of the table's
    /// own: projected views keep following the table (their copy reading
    /// moved columns by name), while whole-row views are copied again and
    /// views keeping the dropped column fail.
    DropColumn,
    /// Drops one of the columns added before and adds it again under its
    /// name at once: the table reads the same, its values are new.
    Readd,
}

/// Carries out the pending [`Alter`], if any. Like Postgres' `ALTER TABLE`
/// it waits for the transactions that touched the table: it stays pending,
/// and is tried again on the next tick, until they are over.
pub(crate) fn alter_table(w: &mut World) {
    let Some((table, alter)) = w.pending_alter else { return };
    let altered = match alter {
        Alter::AddColumn => w.up.add_column(table, w.readds.as_mut()),
        Alter::DropColumn => w.up.drop_column(table, &mut w.rng),
        Alter::Readd => w.up.readd_column(table, &mut w.rng),
    };
    match altered {
        Ok(Altered::Busy) => {}
        Ok(Altered::Done) => {
            w.trace.add("altered", &(table, alter));
            w.pending_alter = None;
        }
        Ok(Altered::Refused) => w.pending_alter = None,
        Err(e) => {
            w.pending_alter = None;
            w.checker.report("upstream model: ddl", e.to_string());
        }
    }
}

/// Waves of concurrent `sync()` calls, the connection flapping in between.
fn storm(w: &mut World) {
    let waves = 1 + w.rng.below(4);
    let (lo, hi) = w.scenario.storm_calls();
    let mut at = 0;
    let inc = w.inc;
    for _ in 0..waves {
        let calls = (lo + w.rng.below(hi - lo + 1)) as usize;
        let burst = w.next_burst;
        w.next_burst += 1;
        w.burst_sizes.insert(burst, calls);
        for _ in 0..calls {
            let selector = random_selector(w);
            let force = w.rng.chance(0.05);
            w.queue_at(at, Ev::Control { inc, call: Call::Sync { selector, force }, burst: Some(burst) });
        }
        // The connection flaps before the next wave.
        at += 5 + w.jitter(200);
        if w.rng.chance(0.6) {
            w.queue_at(at, Ev::FlapFeed);
            at += 1 + w.jitter(50);
        }
    }
}

fn churn(w: &mut World) {
    let inc = w.inc;
    let call = match w.rng.below(100) {
        0..=29 => Call::Stop(random_selector(w)),
        30..=59 => Call::Resume(random_selector(w)),
        60..=74 => {
            // Forget a few views (never everything at once: keep a workload).
            let names: Vec<ViewName> = w.defs_used.iter().map(|d| d.name.clone()).collect();
            if names.is_empty() {
                return;
            }
            let name = names[w.rng.below(names.len() as u64) as usize].clone();
            Call::Forget(Selector::view(&name))
        }
        75..=89 => {
            // (Re-)define a view the workload used before, or a new one.
            if w.rng.chance(0.5) && !w.defs_used.is_empty() {
                let def = w.defs_used[w.rng.below(w.defs_used.len() as u64) as usize].clone();
                Call::Define(def)
            } else {
                let i = 100 + w.defs_used.len() as u64;
                let def = random_def(w, i);
                w.defs_used.push(def.clone());
                Call::Define(def)
            }
        }
        _ => {
            // Redefine an existing name: other mode or other table.
            if w.defs_used.is_empty() {
                return;
            }
            let mut def = w.defs_used[w.rng.below(w.defs_used.len() as u64) as usize].clone();
            let (table, kind) = TABLES[w.rng.below(TABLES.len() as u64) as usize];
            def.upstream.table = table.to_owned();
            def.persistence = if kind == TableKind::NoIdentity || w.rng.chance(0.5) {
                Persistence::Materialized
            } else {
                Persistence::Realtime
            };
            // Another filter or column list (or none): a redefinition that
            // must copy the view again.
            let def = partial(w, table, def);
            Call::Define(def)
        }
    };
    w.schedule(0, Ev::Control { inc, call, burst: None });
}
