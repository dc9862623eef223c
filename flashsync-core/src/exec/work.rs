//! What the executor asks its driver to do, and the answers it takes back.

use crate::change::ApplyBatch;
use crate::error::{StoreError, StoreErrorKind};
use crate::event::Event;
use crate::job::JobRecord;
use crate::lsn::Lsn;
use crate::machine::{Epoch, OpId, Reply};
use crate::rowops::ApplyReport;
use crate::selector::Selector;
use crate::store::ViewRecord;
use crate::store::{Generation, Store};
use crate::view::{OriginId, RelationId, UpstreamRelation, ViewDef};

/// A caller's control call, before the executor gives it a request id.
#[derive(Clone, Debug)]
pub enum Call {
    /// `define(def)`.
    Define(ViewDef),
    /// `sync(selector)`, forced when `force`.
    Sync {
        /// Which views.
        selector: Selector,
        /// Re-materialize and bypass back-off.
        force: bool,
    },
    /// `stop(selector)`.
    Stop(Selector),
    /// `resume(selector)`.
    Resume(Selector),
    /// `forget(selector)`.
    Forget(Selector),
    /// `shutdown()`: answered once everything applied is durable.
    Shutdown,
}

impl Call {
    /// The call's name, for logs and reports.
    pub fn name(&self) -> &'static str {
        match self {
            Call::Define(_) => "define",
            Call::Sync { .. } => "sync",
            Call::Stop(_) => "stop",
            Call::Resume(_) => "resume",
            Call::Forget(_) => "forget",
            Call::Shutdown => "shutdown",
        }
    }
}

/// One unit of work for the driver, from [`Executor::poll_work`](super::Executor::poll_work).
///
/// `W` is the driver's handle for a waiting caller, `G` its store generation.
#[derive(Debug)]
pub enum Work<W, G> {
    /// Run this store step, then answer with
    /// [`Executor::store_done`](super::Executor::store_done). The executor
    /// hands out one step at a time, in the order the machine emitted them.
    Store(StoreStep<G>),
    /// Call [`Store::persist`](crate::Store::persist) (a driver may wait a
    /// little first to group commits), then answer with
    /// [`Executor::persisted`](super::Executor::persisted). At most one is
    /// outstanding.
    Persist,
    /// Call the source; answer with [`Executor::source_done`](super::Executor::source_done).
    Source(SourceCall),
    /// A chunk after the first of a copy in chunks: run
    /// [`Source::copy_chunk`](crate::Source::copy_chunk) for `call` (a
    /// [`SourceCall::Snapshot`] with a chunk) into `generation` — the one the
    /// first chunk began — and answer with
    /// [`SourceAnswer::ChunkCopied`](super::SourceAnswer::ChunkCopied),
    /// handing it back. `None` if no generation was kept (answer with an
    /// error).
    Chunk {
        /// The call.
        call: SourceCall,
        /// The copy's generation.
        generation: Option<G>,
    },
    /// Open, close, pause or resume a feed connection.
    Feed(FeedCommand),
    /// Acknowledge `lsn` through the feedback of the feed of `epoch`
    /// ([`Executor::feedback`](super::Executor::feedback)), unless that feed
    /// is gone.
    Ack {
        /// The origin.
        origin: OriginId,
        /// The feed.
        epoch: Epoch,
        /// Durable through here.
        lsn: Lsn,
    },
    /// Tell observers.
    Event(Event),
    /// Answer a caller.
    Reply(W, Reply),
}

/// A store step: one action, or a run of batches to apply in one go.
#[derive(Debug)]
pub enum StoreStep<G> {
    /// [`Store::put_view`](crate::Store::put_view).
    PutView(ViewRecord),
    /// [`Store::put_job`](crate::Store::put_job).
    PutJob(JobRecord),
    /// [`Store::forget`](crate::Store::forget).
    Forget(RelationId),
    /// [`Store::forget_origin`](crate::Store::forget_origin).
    ForgetOrigin(OriginId),
    /// [`Generation::publish`](crate::Generation::publish) with `job`;
    /// `None` if no generation was kept for it (answer with an error).
    Publish {
        /// The snapshot's operation.
        op: OpId,
        /// Its generation.
        generation: Option<G>,
        /// The job record to write with the switch.
        job: JobRecord,
    },
    /// [`Generation::discard`](crate::Generation::discard); answer with
    /// [`StoreAnswer::Discarded`].
    Discard {
        /// The snapshot's operation.
        op: OpId,
        /// Its generation, if one was kept.
        generation: Option<G>,
    },
    /// [`Generation::amend`](crate::Generation::amend) the generation of
    /// copy `op` with `ops` — or, given a job record,
    /// [`Generation::checkpoint`](crate::Generation::checkpoint) it with
    /// both; answer with [`StoreAnswer::Amended`], handing the generation
    /// back.
    Amend {
        /// The copy's operation.
        op: OpId,
        /// Its generation, if one was kept.
        generation: Option<G>,
        /// The changes.
        ops: crate::change::ViewOps,
        /// The job record to checkpoint with.
        checkpoint: Option<JobRecord>,
    },
    /// [`Store::resume_generation`](crate::Store::resume_generation);
    /// answer with [`StoreAnswer::Resumed`].
    Resume {
        /// The view.
        id: RelationId,
        /// The schema its copy is made with.
        schema: crate::schema::RelationSchema,
        /// The checkpoint's last key.
        after: crate::value::Key,
    },
    /// Nothing: every step before it has finished. Answer with
    /// `StoreAnswer::Done(Ok(()))` (a pass starts behind it).
    Fence(OpId),
    /// [`Store::apply_many`](crate::Store::apply_many) with these batches;
    /// answer with [`StoreAnswer::Applied`], one result per batch.
    Apply(Vec<ApplyBatch>),
}

/// The outcome of a [`StoreStep`]; `G` is the driver's store generation.
#[derive(Debug)]
pub enum StoreAnswer<G> {
    /// Any step but `Apply` and `Discard`.
    Done(Result<(), StoreError>),
    /// `Apply`: one result per batch, in order.
    Applied(Vec<Result<ApplyReport, StoreError>>),
    /// `Discard`, with whether it worked (the executor does not care: a
    /// failure is the driver's to log).
    Discarded(Result<(), StoreError>),
    /// `Amend`: its outcome, and the generation back (kept for the next
    /// chunk, the publish or the discard).
    Amended {
        /// What the changes did (conflicts included).
        result: Result<ApplyReport, StoreError>,
        /// The generation the step was given.
        generation: Option<G>,
    },
    /// `Resume`: the generation the store kept, if any.
    Resumed(Result<Option<G>, StoreError>),
}

impl StoreStep<Box<dyn Generation>> {
    /// Runs the step against `store`: what every driver whose store is a
    /// plain [`Store`] does with [`Work::Store`].
    pub async fn run(self, store: &dyn Store) -> StoreAnswer<Box<dyn Generation>> {
        match self {
            StoreStep::PutView(view) => StoreAnswer::Done(store.put_view(&view).await),
            StoreStep::PutJob(job) => StoreAnswer::Done(store.put_job(&job).await),
            StoreStep::Forget(id) => StoreAnswer::Done(store.forget(id).await),
            StoreStep::ForgetOrigin(origin) => StoreAnswer::Done(store.forget_origin(&origin).await),
            StoreStep::Publish { op, generation, job } => StoreAnswer::Done(match generation {
                Some(g) => g.publish(&job).await,
                None => Err(StoreError::new(
                    StoreErrorKind::NotFound,
                    "publish",
                    format!("no generation for operation {}", op.0),
                )),
            }),
            StoreStep::Discard { generation, .. } => match generation {
                Some(g) => StoreAnswer::Discarded(g.discard().await),
                None => StoreAnswer::Discarded(Ok(())),
            },
            StoreStep::Amend { op, generation, ops, checkpoint } => match generation {
                Some(mut g) => {
                    let result = match checkpoint {
                        Some(job) => g.checkpoint(ops, &job).await,
                        None => g.amend(ops).await,
                    };
                    StoreAnswer::Amended { result, generation: Some(g) }
                }
                None => StoreAnswer::Amended {
                    result: Err(StoreError::new(
                        StoreErrorKind::NotFound,
                        "amend",
                        format!("no generation for operation {}", op.0),
                    )),
                    generation: None,
                },
            },
            StoreStep::Resume { id, schema, after } => {
                StoreAnswer::Resumed(store.resume_generation(id, &schema, &after).await)
            }
            StoreStep::Fence(_) => StoreAnswer::Done(Ok(())),
            StoreStep::Apply(batches) => StoreAnswer::Applied(store.apply_many(batches).await),
        }
    }
}

/// A source call (each answered by [`Executor::source_done`](super::Executor::source_done)).
#[derive(Clone, Debug, PartialEq)]
pub enum SourceCall {
    /// [`Source::prepare`](crate::Source::prepare); answer with [`SourceAnswer::Prepared`](super::SourceAnswer::Prepared).
    Prepare {
        /// Result tag.
        op: OpId,
        /// Which source.
        origin: OriginId,
        /// The relation.
        relation: UpstreamRelation,
        /// Also add it to the feed.
        feed: bool,
    },
    /// Begin a store generation for `relation_id`, run
    /// [`Source::snapshot`](crate::Source::snapshot) into it and answer with
    /// [`SourceAnswer::Snapshotted`](super::SourceAnswer::Snapshotted),
    /// handing the generation over.
    Snapshot {
        /// Result tag.
        op: OpId,
        /// Which source.
        origin: OriginId,
        /// The view.
        relation_id: RelationId,
        /// The relation.
        relation: UpstreamRelation,
        /// What to copy: the generation takes its local schema.
        shape: std::sync::Arc<crate::shape::ViewShape>,
        /// One chunk ([`Source::copy_chunk`](crate::Source::copy_chunk)),
        /// answered with [`SourceAnswer::ChunkCopied`](super::SourceAnswer::ChunkCopied).
        /// The first begins the generation; later ones come as
        /// [`Work::Chunk`] with it.
        chunk: Option<crate::machine::ChunkRequest>,
    },
    /// [`Source::release`](crate::Source::release); answer with [`SourceAnswer::Released`](super::SourceAnswer::Released).
    Release {
        /// Result tag.
        op: OpId,
        /// Which source.
        origin: OriginId,
        /// The relation.
        relation: UpstreamRelation,
    },
    /// [`Source::drop_feed`](crate::Source::drop_feed) (the feed is already
    /// closed); answer with [`SourceAnswer::Released`](super::SourceAnswer::Released).
    DropFeed {
        /// Result tag.
        op: OpId,
        /// Which source.
        origin: OriginId,
    },
}

/// What to do with a feed connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedCommand {
    /// Call [`Source::subscribe`](crate::Source::subscribe), answer with
    /// [`Executor::subscribed`](super::Executor::subscribed), then hand
    /// every event to [`Executor::feed_event`](super::Executor::feed_event)
    /// until the feed breaks ([`Executor::feed_lost`](super::Executor::feed_lost))
    /// or is closed. Start reading unpaused.
    Open {
        /// The origin.
        origin: OriginId,
        /// The attempt.
        epoch: Epoch,
        /// Resume after this position.
        resume: Option<Lsn>,
    },
    /// Drop the connection of `epoch`: nothing more from it is wanted.
    Close {
        /// The origin.
        origin: OriginId,
        /// The attempt.
        epoch: Epoch,
    },
    /// Stop reading (`paused`) or read again. Events already read may
    /// still be handed in.
    Pause {
        /// The origin.
        origin: OriginId,
        /// The attempt.
        epoch: Epoch,
        /// Whether to stop reading.
        paused: bool,
    },
}
