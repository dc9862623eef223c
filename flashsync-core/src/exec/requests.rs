//! The request table: who is waiting for which reply.

use std::collections::BTreeMap;

use crate::machine::RequestId;

pub(crate) struct Requests<W> {
    next: u64,
    waiting: BTreeMap<RequestId, W>,
}

impl<W> Requests<W> {
    pub fn new() -> Self {
        Requests { next: 1, waiting: BTreeMap::new() }
    }

    /// A new request id, remembering who waits for it.
    pub fn add(&mut self, waiter: W) -> RequestId {
        let id = RequestId(self.next);
        self.next += 1;
        self.waiting.insert(id, waiter);
        id
    }

    pub fn take(&mut self, id: RequestId) -> Option<W> {
        self.waiting.remove(&id)
    }

    pub fn drain(&mut self) -> Vec<W> {
        std::mem::take(&mut self.waiting).into_values().collect()
    }

    pub fn len(&self) -> usize {
        self.waiting.len()
    }
}
