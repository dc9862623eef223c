//! The sans-IO sync machine.

mod api;

pub use api::{
    Config, Epoch, InjectedBugs, Input, OpId, Output, Reply, RequestId, SourceAction, StoreAction,
};

use crate::job::JobRecord;
use crate::selector::Selector;
use crate::store::StoredState;
use crate::time::Timestamp;

/// The sync machine. See the crate docs.
#[derive(Debug)]
pub struct Machine {}

impl Machine {
    /// A machine over the state a store loaded, seeded for back-off jitter.
    pub fn new(_config: Config, _seed: u64, _state: StoredState, _now: Timestamp) -> Self {
        Machine {}
    }

    /// Feeds one input.
    pub fn handle(&mut self, _input: Input, _now: Timestamp) {}

    /// The next output, if any.
    #[must_use]
    pub fn poll_output(&mut self) -> Option<Output> {
        None
    }

    /// When to deliver [`Input::Timer`], if ever.
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        None
    }

    /// Status records of the selected views.
    pub fn status(&self, _selector: &Selector) -> Vec<JobRecord> {
        Vec::new()
    }
}
