//! The store queue: store actions in emission order, one step at a time.
//!
//! The machine relies on its store actions landing in the order it emitted
//! them (a job record written after a batch lands after it). So the queue
//! hands the driver one step at a time and takes the next only once the
//! previous one is answered. Consecutive batches become one step (an apply
//! run), so a store can amortize its per-write cost. A fence is a step like
//! any other: answering it takes a round trip through the driver's store,
//! and the control calls arriving meanwhile share the pass behind it.

use std::collections::{BTreeMap, VecDeque};

use crate::change::{ApplyBatch, BatchSeq};
use crate::error::{StoreError, StoreErrorKind};
use crate::machine::{BatchGate, Input, OpId, StoreAction};
use crate::rowops::ApplyReport;
use crate::view::OriginId;

use super::work::{StoreAnswer, StoreStep};

/// Row operations a batch counts for back-pressure (at least one, so empty
/// batches are not free).
pub(crate) fn batch_ops(b: &ApplyBatch) -> usize {
    b.views.iter().map(|v| v.ops.len()).sum::<usize>().max(1)
}

/// One batch of an apply run, as the queue remembers it while the driver
/// applies the run.
#[derive(Debug)]
struct RunEntry {
    seq: BatchSeq,
    origin: OriginId,
    chain: u64,
    ops: usize,
    /// Refused by the gate: never reached the store.
    refused: Option<StoreError>,
}

/// The step the driver is running.
#[derive(Debug)]
enum InStep {
    /// An action answered by `Input::StoreDone { op }`.
    Op(OpId),
    /// A discard: no answer for the machine.
    Discard,
    /// An apply run.
    Run(Vec<RunEntry>),
    /// Changes into a copy being made (`op`), this many operations:
    /// answered by `Input::Amended`, whatever the driver says.
    Amend(OpId, usize),
    /// A checkpointed copy (`op`) coming back: answered by `Input::Resumed`.
    Resume(OpId),
}

/// What the driver's store is doing.
#[derive(Debug)]
enum Worker {
    Idle,
    Busy(InStep),
}

/// What happened when a step is answered or the head of the queue moves.
pub(crate) struct Answered {
    /// Inputs for the machine, in order.
    pub inputs: Vec<Input>,
    /// Some batch was applied (the store has something to persist).
    pub applied: bool,
    /// The highest sequence applied successfully in this step.
    pub applied_through: Option<BatchSeq>,
}

pub(crate) struct StoreQueue<G> {
    queue: VecDeque<StoreAction>,
    worker: Worker,
    gate: BatchGate,
    /// Store generations filled by snapshots, kept for their publish or
    /// discard.
    generations: BTreeMap<OpId, G>,
    /// Row operations emitted and not yet answered.
    ops_in_flight: usize,
    /// Most batches in one apply run.
    apply_run: usize,
}

impl<G> StoreQueue<G> {
    pub fn new(apply_run: usize) -> Self {
        StoreQueue {
            queue: VecDeque::new(),
            worker: Worker::Idle,
            gate: BatchGate::default(),
            generations: BTreeMap::new(),
            ops_in_flight: 0,
            apply_run: apply_run.max(1),
        }
    }

    pub fn push(&mut self, action: StoreAction) {
        match &action {
            StoreAction::Apply(b) => self.ops_in_flight += batch_ops(b),
            // Held back until now, and as much in flight as a batch.
            StoreAction::Amend { ops, .. } => self.ops_in_flight += ops.ops.len().max(1),
            _ => {}
        }
        self.queue.push_back(action);
    }

    /// The generation kept for `op`, taken out (for its next chunk).
    pub fn take_generation(&mut self, op: OpId) -> Option<G> {
        self.generations.remove(&op)
    }

    pub fn keep_generation(&mut self, op: OpId, generation: G) {
        self.generations.insert(op, generation);
    }

    pub fn ops_in_flight(&self) -> usize {
        self.ops_in_flight
    }

    /// Nothing queued and nothing running.
    pub fn is_idle(&self) -> bool {
        self.queue.is_empty() && matches!(self.worker, Worker::Idle)
    }

    /// Whether actions are waiting (running or queued) for the store.
    pub fn has_applies_pending(&self) -> bool {
        matches!(self.worker, Worker::Busy(InStep::Run(_)))
            || self.queue.iter().any(|a| matches!(a, StoreAction::Apply(_)))
    }

    /// Swaps the first two queued actions (a planted bug).
    #[cfg(feature = "planted-bugs")]
    pub fn swap_head(&mut self) {
        if self.queue.len() >= 2 && !matches!(self.queue[0], StoreAction::Fence { .. }) {
            self.queue.swap(0, 1);
        }
    }

    /// If the store is idle, the next thing to do: a step for the driver, or
    /// the answers to a run the gate refused entirely.
    pub fn next(&mut self) -> Option<Next<G>> {
        if !matches!(self.worker, Worker::Idle) {
            return None;
        }
        let action = self.queue.pop_front()?;
        let (step, in_step) = match action {
            StoreAction::Fence { op } => (StoreStep::Fence(op), InStep::Op(op)),
            StoreAction::PutView { op, view } => (StoreStep::PutView(view), InStep::Op(op)),
            StoreAction::PutJob { op, job } => (StoreStep::PutJob(job), InStep::Op(op)),
            StoreAction::Forget { op, relation_id } => (StoreStep::Forget(relation_id), InStep::Op(op)),
            StoreAction::ForgetOrigin { op, origin } => (StoreStep::ForgetOrigin(origin), InStep::Op(op)),
            StoreAction::Publish { op, job } => {
                let generation = self.generations.remove(&op);
                (StoreStep::Publish { op, generation, job }, InStep::Op(op))
            }
            StoreAction::Amend { op, ops, checkpoint } => {
                let n = ops.ops.len().max(1);
                let generation = self.generations.remove(&op);
                (StoreStep::Amend { op, generation, ops, checkpoint }, InStep::Amend(op, n))
            }
            StoreAction::Resume { op, id, schema, after } => {
                (StoreStep::Resume { id, schema, after }, InStep::Resume(op))
            }
            StoreAction::Discard { op } => {
                (StoreStep::Discard { op, generation: self.generations.remove(&op) }, InStep::Discard)
            }
            StoreAction::Apply(first) => {
                let mut run = vec![first];
                while run.len() < self.apply_run {
                    match self.queue.front() {
                        Some(StoreAction::Apply(_)) => {
                            if let Some(StoreAction::Apply(b)) = self.queue.pop_front() {
                                run.push(b);
                            }
                        }
                        _ => break,
                    }
                }
                // Batches behind an earlier failure of their origin are
                // answered without reaching the store (see `BatchGate`).
                let mut entries = Vec::with_capacity(run.len());
                let mut admitted = Vec::with_capacity(run.len());
                for batch in run {
                    let refused = self.gate.admit(&batch).err();
                    entries.push(RunEntry {
                        seq: batch.seq,
                        origin: batch.origin.clone(),
                        chain: batch.chain,
                        ops: batch_ops(&batch),
                        refused: refused.clone(),
                    });
                    if refused.is_none() {
                        admitted.push(batch);
                    }
                }
                if admitted.is_empty() {
                    let answered = self.finish_run(entries, Vec::new());
                    return Some(Next::Refused(answered));
                }
                (StoreStep::Apply(admitted), InStep::Run(entries))
            }
        };
        self.worker = Worker::Busy(in_step);
        Some(Next::Step(step))
    }

    /// The driver finished the step it was given.
    pub fn done(&mut self, answer: StoreAnswer<G>) -> Answered {
        let in_step = match std::mem::replace(&mut self.worker, Worker::Idle) {
            Worker::Busy(s) => s,
            Worker::Idle => return Answered { inputs: Vec::new(), applied: false, applied_through: None },
        };
        match (in_step, answer) {
            (InStep::Op(op), StoreAnswer::Done(result)) => {
                Answered { inputs: vec![Input::StoreDone { op, result }], applied: false, applied_through: None }
            }
            (InStep::Discard, _) => Answered { inputs: Vec::new(), applied: false, applied_through: None },
            (InStep::Amend(op, n), answer) => {
                self.ops_in_flight = self.ops_in_flight.saturating_sub(n);
                let result = match answer {
                    StoreAnswer::Amended { result, generation } => {
                        if let Some(g) = generation {
                            self.generations.insert(op, g);
                        }
                        result
                    }
                    other => Err(mismatch(&other)),
                };
                Answered { inputs: vec![Input::Amended { op, result }], applied: false, applied_through: None }
            }
            (InStep::Resume(op), answer) => {
                let result = match answer {
                    StoreAnswer::Resumed(Ok(Some(g))) => {
                        self.generations.insert(op, g);
                        Ok(true)
                    }
                    StoreAnswer::Resumed(Ok(None)) => Ok(false),
                    StoreAnswer::Resumed(Err(e)) => Err(e),
                    other => Err(mismatch(&other)),
                };
                Answered { inputs: vec![Input::Resumed { op, result }], applied: false, applied_through: None }
            }
            (InStep::Run(entries), StoreAnswer::Applied(results)) => self.finish_run(entries, results),
            (InStep::Op(op), other) => Answered {
                inputs: vec![Input::StoreDone { op, result: Err(mismatch(&other)) }],
                applied: false,
                applied_through: None,
            },
            (InStep::Run(entries), other) => {
                let e = mismatch(&other);
                let results = entries.iter().map(|_| Err(e.clone())).collect();
                self.finish_run(entries, results)
            }
        }
    }

    fn finish_run(&mut self, entries: Vec<RunEntry>, results: Vec<Result<ApplyReport, StoreError>>) -> Answered {
        let mut results = results.into_iter();
        let mut out = Answered { inputs: Vec::with_capacity(entries.len()), applied: false, applied_through: None };
        for e in entries {
            self.ops_in_flight = self.ops_in_flight.saturating_sub(e.ops);
            let result = match e.refused {
                Some(err) => Err(err),
                None => results.next().unwrap_or_else(|| {
                    Err(StoreError::new(
                        StoreErrorKind::Invalid,
                        format!("apply batch {}", e.seq.0),
                        "the store gave fewer answers than batches",
                    ))
                }),
            };
            match &result {
                Ok(_) => {
                    out.applied = true;
                    out.applied_through = Some(e.seq);
                }
                Err(_) => self.gate.failed(&e.origin, e.chain),
            }
            out.inputs.push(Input::Applied { seq: e.seq, result });
        }
        out
    }
}

/// What [`StoreQueue::next`] found. Made and matched at once, one at a
/// time: the size of the step variant costs nothing worth a box.
#[allow(clippy::large_enum_variant)]
pub(crate) enum Next<G> {
    /// A step for the driver.
    Step(StoreStep<G>),
    /// A run the gate refused entirely.
    Refused(Answered),
}

fn mismatch<G>(answer: &StoreAnswer<G>) -> StoreError {
    let what = match answer {
        StoreAnswer::Done(_) => "done",
        StoreAnswer::Applied(_) => "applied",
        StoreAnswer::Discarded(_) => "discarded",
        StoreAnswer::Amended { .. } => "amended",
        StoreAnswer::Resumed(_) => "resumed",
    };
    StoreError::new(StoreErrorKind::Invalid, "store step", format!("the driver answered the wrong step ({what})"))
}
