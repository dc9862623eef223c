//! The change feed: what happened to views' rows, once it is visible locally.
//!
//! [`Engine::changes`](crate::Engine::changes) and
//! [`Engine::changes_with_rows`](crate::Engine::changes_with_rows) hand out a
//! [`ChangeFeed`]. Its items come in the order the store applied them
//! (upstream commit order), one [`Changes`] per upstream transaction, and
//! only once the rows are readable: a reader that queries the mirror after
//! an item sees at least what it describes. A change the mirror does not
//! keep (a move-out of a row a filtered view never held, a delete of a row
//! already gone) is never reported, because the changes are captured by the
//! store where it writes them ([`flashsync_core::rowchange`]).
//!
//! How it fits together, and why it is exact:
//! - the store worker runs store steps one at a time; the machine task
//!   numbers their answers in that order and publishes each step's
//!   changes on a broadcast channel, tagged with its number;
//! - starting a feed goes through the machine task: it switches capturing
//!   on *before* any later step is handed out, then queues a read of the
//!   views' rows behind the steps already handed out. The read answers with
//!   the number of the last step it reflects, and the feed drops items up to
//!   it: no change is missed, none is seen twice;
//! - when a view's copy is replaced (a first copy, a re-copy), the feed
//!   reads it again the same way and yields [`FeedItem::Replaced`] with the
//!   rows;
//! - a subscriber that falls behind by more than the channel holds gets
//!   [`FeedError::Lagged`] and must start again; it never slows sync down.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use flashsync_core::{Lsn, OriginId, RelationId, Row, RowChange, Selector, StoreError, Timestamp, ViewName};
use tokio::sync::{broadcast, mpsc, oneshot};

use crate::driver::Msg;
use crate::error::EngineError;

/// Where a group of changes sits in the upstream history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Position {
    /// A whole upstream transaction (however large: a store applies one
    /// too large for one batch whole, at its commit).
    Commit {
        /// The end of its commit record (what `status` calls a position).
        lsn: Lsn,
        /// When it committed upstream.
        time: Option<Timestamp>,
    },
    /// Transactions held back while a realtime view was being copied,
    /// applied to it when its copy took over from the snapshot.
    Replay,
}

/// The changes one store batch made to one view.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewRowChanges {
    /// The view.
    pub view: ViewName,
    /// What happened to its rows, in order.
    pub changes: Vec<RowChange>,
}

/// Changes that became visible together: one upstream transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Changes {
    /// The origin the transaction came from.
    pub origin: OriginId,
    /// Where it sits upstream.
    pub position: Position,
    /// Each selected view it changed.
    pub views: Vec<ViewRowChanges>,
}

/// The rows of one view at the start of a feed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ViewRows {
    /// The view.
    pub view: ViewName,
    /// Its rows, in key order (a full-row view's rows once per copy); empty
    /// when the view has no copy yet.
    pub rows: Vec<Row>,
}

/// What a [`ChangeFeed`] yields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FeedItem {
    /// Row changes of one upstream transaction.
    Changes(Changes),
    /// The view's copy was replaced by a new snapshot (its first copy, or a
    /// copy taken again after a redefinition, a slot loss or a divergence):
    /// these are its rows now, and its changes after them follow.
    Replaced {
        /// The view.
        view: ViewName,
        /// Its rows now, in key order.
        rows: Vec<Row>,
    },
    /// The view was forgotten: nothing more comes for it.
    Forgotten {
        /// The view.
        view: ViewName,
    },
}

/// A change feed could not go on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The subscriber fell behind: items were dropped rather than slow sync
    /// down. Start again (with `changes_with_rows`) to be exact.
    #[error(
        "the change feed fell {missed} store steps behind and dropped them; start again with changes_with_rows to \
         catch up"
    )]
    Lagged {
        /// Store steps whose items were dropped.
        missed: u64,
    },
    /// Reading a replaced view's rows failed.
    #[error("reading the new copy of {view} failed: {error}")]
    Read {
        /// The view.
        view: ViewName,
        /// Why.
        error: StoreError,
    },
    /// The engine shut down.
    #[error("the sync engine is shut down")]
    ShutDown,
}

/// One store step's outcome, as the machine task publishes it.
#[derive(Debug)]
pub(crate) struct Published {
    /// The step's number (answers are numbered from 1 in the order the
    /// store worker ran the steps).
    pub step: u64,
    pub what: Happened,
}

#[derive(Debug)]
pub(crate) enum Happened {
    /// Each batch of an apply run that changed something.
    Applied(Vec<Changes>),
    Replaced {
        id: RelationId,
        view: ViewName,
    },
    Forgotten {
        view: ViewName,
    },
}

/// Which views a read between store steps reads.
pub(crate) enum ReadTarget {
    /// These (a replaced view's re-read).
    Ids(Vec<RelationId>),
    /// Those the selector matches when the machine task takes the read, so
    /// the views and their rows are of one moment (a feed's start).
    Selector(Selector),
}

/// One view's rows as read between two store steps.
pub(crate) struct ReadView {
    /// Its name, when the read resolved a selector.
    pub name: Option<ViewName>,
    /// Its rows (empty without a copy), or why they could not be read.
    pub rows: Result<Vec<Row>, StoreError>,
}

/// A read of views' rows between two store steps.
pub(crate) struct RowsRead {
    pub views: Vec<ReadView>,
    /// The number of the last store step the rows reflect.
    pub through: u64,
}

/// Asks the machine task to read views' rows between store steps.
pub(crate) fn read_rows(
    tx: &mpsc::UnboundedSender<Msg>,
    views: ReadTarget,
) -> Result<oneshot::Receiver<RowsRead>, EngineError> {
    let (reply, rx) = oneshot::channel();
    tx.send(Msg::ReadRows { views, reply }).map_err(|_| EngineError::ShutDown)?;
    Ok(rx)
}

/// A subscription to views' row changes: see the [module docs](self).
///
/// ```
/// use flashsync::{Engine, FeedItem, Persistence, ViewDef};
/// use flashsync_core::memory::{MemoryStore, MemoryUpstream, TableIdentity};
/// use flashsync_core::{row, RowChange};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let upstream = MemoryUpstream::new();
/// upstream.create_table("public", "todos", &[("id", "int8"), ("title", "text")], TableIdentity::PrimaryKey(vec![0]));
/// let engine = Engine::builder().store(MemoryStore::new()).origin("postgres:main", upstream.source()).open().await?;
/// engine.define(ViewDef::new("public", "todos", Persistence::Realtime, "postgres:main", "public", "todos")?).await?;
/// engine.sync("*").await?;
///
/// // The rows now, then every change after them.
/// let (start, mut feed) = engine.changes_with_rows("public.todos").await?;
/// assert!(start[0].rows.is_empty());
/// upstream.insert("public", "todos", row![1, "write docs"]);
/// match feed.next().await {
///     Some(Ok(FeedItem::Changes(c))) => {
///         assert_eq!(c.views[0].changes, vec![RowChange::Insert { key: flashsync_core::key![1], row: row![1, "write docs"] }]);
///     }
///     other => panic!("expected changes, got {other:?}"),
/// }
/// engine.shutdown().await?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// # }).unwrap();
/// ```
pub struct ChangeFeed {
    rx: broadcast::Receiver<Arc<Published>>,
    tx: mpsc::UnboundedSender<Msg>,
    selector: Selector,
    /// Items of steps up to this one are in the rows the feed started from.
    start: u64,
    /// Per view, the step its rows were last read at (after a replacement).
    read_at: HashMap<ViewName, u64>,
    /// Items of one step not handed out yet (an apply run has several).
    ready: VecDeque<FeedItem>,
    state: FeedState,
}

/// Where a feed is.
enum FeedState {
    /// Taking items as they come.
    Live,
    /// Reading a replaced view's rows: kept here, not in a future, so that
    /// dropping a `next()` (in a `select!`) loses nothing.
    Reading { view: ViewName, rx: oneshot::Receiver<RowsRead> },
    /// It missed items (or could not read a new copy): it can no longer
    /// be exact, and says so on every call. Start a new feed.
    Broken(FeedError),
}

impl std::fmt::Debug for ChangeFeed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangeFeed").field("selector", &self.selector).field("start", &self.start).finish()
    }
}

impl ChangeFeed {
    pub(crate) fn new(
        rx: broadcast::Receiver<Arc<Published>>,
        tx: mpsc::UnboundedSender<Msg>,
        selector: Selector,
        start: u64,
    ) -> Self {
        ChangeFeed { rx, tx, selector, start, read_at: HashMap::new(), ready: VecDeque::new(), state: FeedState::Live }
    }

    /// The next item; `None` once the engine has shut down and every item
    /// before that was handed out. Cancel-safe: a `next()` dropped before it
    /// finished (in a `tokio::select!`, say) loses no item. After an error
    /// the feed stays broken (every call returns it): start a new one.
    pub async fn next(&mut self) -> Option<Result<FeedItem, FeedError>> {
        loop {
            match &mut self.state {
                FeedState::Broken(e) => return Some(Err(e.clone())),
                FeedState::Reading { view, rx } => {
                    let read = rx.await;
                    let view = view.clone();
                    self.state = FeedState::Live;
                    let Ok(mut read) = read else { return self.broken(FeedError::ShutDown) };
                    let rows = match read.views.pop().map(|v| v.rows) {
                        Some(Ok(rows)) => rows,
                        Some(Err(error)) => return self.broken(FeedError::Read { view, error }),
                        None => Vec::new(),
                    };
                    self.read_at.insert(view.clone(), read.through);
                    return Some(Ok(FeedItem::Replaced { view, rows }));
                }
                FeedState::Live => {}
            }
            if let Some(item) = self.ready.pop_front() {
                return Some(Ok(item));
            }
            let published = match self.rx.recv().await {
                Ok(p) => p,
                Err(broadcast::error::RecvError::Lagged(missed)) => return self.broken(FeedError::Lagged { missed }),
                Err(broadcast::error::RecvError::Closed) => return None,
            };
            if published.step <= self.start {
                continue;
            }
            if let Err(e) = self.take(&published) {
                return self.broken(e);
            }
        }
    }

    fn broken(&mut self, e: FeedError) -> Option<Result<FeedItem, FeedError>> {
        self.state = FeedState::Broken(e.clone());
        Some(Err(e))
    }

    fn wants(&self, view: &ViewName, step: u64) -> bool {
        self.selector.matches(view) && self.read_at.get(view).is_none_or(|&at| step > at)
    }

    fn take(&mut self, published: &Published) -> Result<(), FeedError> {
        match &published.what {
            Happened::Applied(groups) => {
                for group in groups {
                    let views: Vec<ViewRowChanges> =
                        group.views.iter().filter(|v| self.wants(&v.view, published.step)).cloned().collect();
                    if !views.is_empty() {
                        self.ready.push_back(FeedItem::Changes(Changes {
                            origin: group.origin.clone(),
                            position: group.position.clone(),
                            views,
                        }));
                    }
                }
            }
            Happened::Replaced { id, view } if self.wants(view, published.step) => {
                // Read between store steps; changes up to that step are in
                // the rows read, and `read_at` drops them.
                let rx = read_rows(&self.tx, ReadTarget::Ids(vec![*id])).map_err(|_| FeedError::ShutDown)?;
                self.state = FeedState::Reading { view: view.clone(), rx };
            }
            Happened::Forgotten { view } if self.selector.matches(view) => {
                self.read_at.remove(view);
                self.ready.push_back(FeedItem::Forgotten { view: view.clone() });
            }
            Happened::Replaced { .. } | Happened::Forgotten { .. } => {}
        }
        Ok(())
    }
}
