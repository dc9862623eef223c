//! The trace hash: one number that changes if anything the simulator
//! processed changed — every input, output, event and workload action, in
//! order. Two runs of one seed must agree on it, in one process or two.
//!
//! FNV-1a over the `Debug` text of each item, written straight into the
//! hasher (no allocation). FNV is fixed forever, unlike `DefaultHasher`,
//! whose algorithm may change between Rust releases.

use std::fmt::{self, Write};

/// An FNV-1a (64-bit) hasher of `Debug` text.
#[derive(Clone, Debug)]
pub struct Trace {
    hash: u64,
    items: u64,
    /// Also print every item to stderr (`FLASHSYNC_SIM_TRACE=1`), for
    /// debugging a replayed seed.
    echo: bool,
}

impl Default for Trace {
    fn default() -> Self {
        let echo = std::env::var_os("FLASHSYNC_SIM_TRACE").is_some_and(|v| v == "1");
        Trace { hash: 0xcbf2_9ce4_8422_2325, items: 0, echo }
    }
}

impl Write for Trace {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        for b in s.bytes() {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Ok(())
    }
}

impl Trace {
    /// Adds one item: a tag saying what it is, then its `Debug` form.
    pub fn add(&mut self, tag: &str, item: &dyn fmt::Debug) {
        self.items += 1;
        if self.echo {
            eprintln!("[{}] {tag} {item:?}", self.items);
        }
        // Writing into the hasher cannot fail.
        let _ = write!(self, "\u{1}{tag}\u{2}{item:?}");
    }

    /// The hash so far.
    pub fn hash(&self) -> u64 {
        self.hash
    }

    /// Items hashed so far.
    pub fn items(&self) -> u64 {
        self.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_and_content_matter() {
        let (mut a, mut b, mut c) = (Trace::default(), Trace::default(), Trace::default());
        a.add("x", &1);
        a.add("y", &2);
        b.add("x", &1);
        b.add("y", &2);
        c.add("y", &2);
        c.add("x", &1);
        assert_eq!(a.hash(), b.hash());
        assert_ne!(a.hash(), c.hash());
    }
}
