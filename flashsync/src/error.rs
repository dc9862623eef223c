//! Errors of the engine facade.

use flashsync_core::{ControlError, DefinitionError, SelectorError, StoreError, TypedError, ViewName};

/// An engine call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EngineError {
    /// The selector text did not parse.
    #[error(transparent)]
    Selector(#[from] SelectorError),
    /// A view definition was refused.
    #[error(transparent)]
    Definition(#[from] DefinitionError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No view by that name is defined.
    #[error("no view named {0} is defined")]
    UnknownView(ViewName),
    /// The view is defined but has no local copy yet (it was never synced).
    #[error("view {0} has no local copy yet; run sync() first")]
    NoCopy(ViewName),
    /// A row did not read into the requested type.
    #[error(transparent)]
    Typed(#[from] TypedError),
    /// The engine is shut down.
    #[error("the sync engine is shut down")]
    ShutDown,
}

impl From<ControlError> for EngineError {
    fn from(e: ControlError) -> Self {
        match e {
            ControlError::Selector(e) => EngineError::Selector(e),
            ControlError::Definition(e) => EngineError::Definition(e),
            ControlError::Store(e) => EngineError::Store(e),
            ControlError::ShutDown => EngineError::ShutDown,
        }
    }
}
