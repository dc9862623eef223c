//! Anything that names a set of views.

use flashsync_core::{Selector, SelectorError, ViewName};

/// Converts into a [`Selector`]: a `Selector`, a view name, or selector text
/// such as `"*"` or `"public.users_cache,public.posts_*"`.
pub trait IntoSelector {
    /// The selector, or why the text does not parse.
    fn into_selector(self) -> Result<Selector, SelectorError>;
}

impl IntoSelector for Selector {
    fn into_selector(self) -> Result<Selector, SelectorError> {
        Ok(self)
    }
}

impl IntoSelector for &Selector {
    fn into_selector(self) -> Result<Selector, SelectorError> {
        Ok(self.clone())
    }
}

impl IntoSelector for &str {
    fn into_selector(self) -> Result<Selector, SelectorError> {
        self.parse()
    }
}

impl IntoSelector for String {
    fn into_selector(self) -> Result<Selector, SelectorError> {
        self.parse()
    }
}

impl IntoSelector for &ViewName {
    fn into_selector(self) -> Result<Selector, SelectorError> {
        Ok(Selector::view(self))
    }
}

impl IntoSelector for ViewName {
    fn into_selector(self) -> Result<Selector, SelectorError> {
        Ok(Selector::view(&self))
    }
}
