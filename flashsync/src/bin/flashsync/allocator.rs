//! The process's allocator, and the two options it runs with.
//!
//! mimalloc, not glibc's malloc: snapshot rows are allocated on the decode
//! task and freed on the store's loader thread, which glibc handles badly.
//! Measured with `flashsync bench`: snapshots about 8% faster and large
//! transactions mirrored about 15% faster.
//!
//! Out of the box mimalloc 3 trades memory for speed in two ways that cost
//! a sync engine more than they give (`flashsync bench bigtxn --rows
//! 1000000`, three alternating runs each, 2026-12-06):
//!
//! - It asks for transparent huge pages on its arenas (`madvise`), so a
//!   page half in use keeps 2 MiB resident: peak RSS 131–194 MiB by
//!   default, 102–133 MiB without (the `no_thp` build feature).
//! - It keeps freed pages for a second before returning them
//!   (`purge_delay` 1000 ms), while a big transaction frees a staged part's
//!   memory every few milliseconds: with both changed, 98–106 MiB in
//!   those runs, and 94–123 MiB over eight runs of the final build (3M
//!   rows: 110–112 MiB, against 139–143 by default).
//!
//! Neither changed the speed of `bench snapshot --rows 3000000 --realtime`
//! (2.10–2.15 s against 2.15–2.16 s) or of the big transaction. An
//! operator's `MIMALLOC_PURGE_DELAY` still wins over the value set here.

/// The process allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc 3's index of its `purge_delay` option (`mi_option_purge_delay`
/// in `mimalloc.h`), which its Rust bindings do not name. The test below
/// pins it to the bundled mimalloc.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed pages stay before mimalloc returns them, in milliseconds.
const PURGE_DELAY_MS: std::os::raw::c_long = 100;

/// Sets the allocator's options. Call first thing in `main`, before any
/// other thread exists.
#[allow(unsafe_code)]
pub fn tune() {
    // SAFETY: `mi_option_set_default` takes plain integers and writes one
    // entry of mimalloc's option table; it is not thread safe, and `main`
    // calls this before it starts any thread. It leaves an option that the
    // environment (`MIMALLOC_PURGE_DELAY`) set alone.
    unsafe { libmimalloc_sys::mi_option_set_default(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The option at [`MI_OPTION_PURGE_DELAY`] is the purge delay: its
    /// default is mimalloc 3's 1000 ms, and `tune` makes it 100 ms. Another
    /// mimalloc with its options renumbered fails here, not silently in
    /// production.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_option_is_the_one_tuned() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            eprintln!("MIMALLOC_PURGE_DELAY is set: the default cannot be checked");
            return;
        }
        // SAFETY: reads one entry of mimalloc's option table; no other test
        // in this binary touches mimalloc's options.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(before, 1000, "mimalloc's option {MI_OPTION_PURGE_DELAY} is not the purge delay");
        tune();
        // SAFETY: as above.
        let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(after, PURGE_DELAY_MS);
    }
}
