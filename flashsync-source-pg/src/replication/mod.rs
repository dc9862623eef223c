//! The logical replication feed: frames, transport, and the task that turns
//! the walsender's stream into [`StreamEvent`](flashsync_core::StreamEvent)s.

mod decoder;
mod feed;
mod frame;
pub(crate) mod transport;
mod watch;

pub(crate) use feed::{spawn_feed, FeedParams};
pub use frame::{
    encode_status_update, parse_copy_data, pg_micros_to_unix_millis, pg_now_micros, FrameError, ReplicationFrame,
    PG_EPOCH_OFFSET_MICROS,
};
pub(crate) use watch::RelationWatch;
