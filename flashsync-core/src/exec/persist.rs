//! The durable/persist contract: applied batches become durable through
//! [`Store::persist`](crate::Store::persist), called in the background
//! (group commit: an fsync never blocks applying), one call at a time, and
//! the machine hears `Durable` only from what a persist reported.

/// Where persisting stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Persist {
    /// Nothing applied since the last persist.
    Clean,
    /// A persist is running; `again` when batches were applied after it was
    /// asked for (they may not be covered).
    Running { again: bool },
}

impl Persist {
    /// A batch was applied, or shutdown wants everything durable: `true` if
    /// the driver must be asked to persist now; otherwise one is running and
    /// another will follow it.
    pub fn want(&mut self) -> bool {
        match self {
            Persist::Clean => {
                *self = Persist::Running { again: false };
                true
            }
            Persist::Running { again } => {
                *again = true;
                false
            }
        }
    }

    /// The running persist finished: `true` if another must start.
    pub fn finished(&mut self) -> bool {
        match *self {
            Persist::Running { again: true } => {
                *self = Persist::Running { again: false };
                true
            }
            _ => {
                *self = Persist::Clean;
                false
            }
        }
    }

    pub fn is_running(self) -> bool {
        matches!(self, Persist::Running { .. })
    }
}
