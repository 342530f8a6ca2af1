//! Giving freed memory back: what each runtime thread does as it goes idle, with mimalloc (the
//! binary's allocator) in mind; and asking the processor for memory ahead of its use.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The shortest time between two collections on one thread.
const EVERY: Duration = Duration::from_millis(250);

/// mimalloc's `mi_option_purge_delay` (the same place in the option enums of mimalloc 2 and 3).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps an empty page before giving it back, in milliseconds. Shorter, a
/// burst of new names, which frees and reuses pages quickly, pays a third more system time
/// (`madvise`, page faults) to give each back and fault it in again; mimalloc's own default
/// keeps them long enough to raise a burst's peak by a fifth.
const PURGE_DELAY_MS: std::ffi::c_long = 10;

/// Sets mimalloc's purge delay (`PURGE_DELAY_MS`). Called once, at start-up.
pub fn set_purge_delay() {
    // SAFETY: setting an option has no precondition; mimalloc reads it at each purge.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

/// Run by each runtime worker as it parks, and by each listener task as it goes to wait for
/// input (a datagram reader's thread parks at every pause between reads while busy, which
/// would make it a cost per pause): at most every 250 ms per thread, mimalloc takes back the
/// blocks other threads freed into this thread's pages and returns the pages left empty,
/// with every page still waiting out the purge delay (`PURGE_DELAY_MS`), whichever thread
/// freed it: what a burst freed goes back within seconds of the threads going idle, even from
/// a thread that parks for good (a large scrape's exposition goes back at once, see
/// [`release_freed_memory_now`]).
/// Family actors are born on one worker and often end on another, and a reader's batches are
/// freed by the families, so without it the memory of hibernated actors and of an idle
/// reader's caches stays resident long after it was freed.
/// Where mimalloc is not the allocator (the tests), it collects an empty heap.
pub fn release_freed_memory() {
    if LAST.get().is_some_and(|at| at.elapsed() < EVERY) {
        return;
    }
    release_freed_memory_now();
}

thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });

/// What [`release_freed_memory`] does, whenever the last collection on this thread was: for
/// a thread that has just freed something large (a scrape's exposition) and may go idle
/// within `EVERY` of its last collection.
pub fn release_freed_memory_now() {
    LAST.set(Some(Instant::now()));
    // SAFETY: mi_collect has no precondition. Forced, it collects the calling thread's heap
    // and also purges the process-wide arenas and the pages of ended threads.
    unsafe { libmimalloc_sys::mi_collect(true) };
}

/// Asks the processor to fetch the cache line at `at` (a hint, which reads nothing): loops
/// over data scattered in memory ask for what they reach a few steps on, so that its misses
/// overlap instead of coming one after another.
#[inline]
pub(crate) fn prefetch_line<T: ?Sized>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of x86_64, and a prefetch only hints: it never faults, whatever
        // the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast::<i8>()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
}
