//! Giving freed memory back: what each runtime thread does as it goes idle, with mimalloc (the
//! binary's allocator) in mind.

use std::cell::Cell;
use std::time::{Duration, Instant};

/// The shortest time between two collections on one thread.
const EVERY: Duration = Duration::from_millis(250);

/// Run by each runtime worker as it parks, and by each listener task as it goes to wait for
/// input (a datagram reader's thread parks at every pause between reads while busy, which
/// would make it a cost per pause): at most every 250 ms per thread, mimalloc takes back the
/// blocks other threads freed into this thread's pages and returns the pages left empty.
/// Family actors are born on one worker and often end on another, and a reader's batches are
/// freed by the families, so without it the memory of hibernated actors and of an idle
/// reader's caches stays resident long after it was freed.
/// Where mimalloc is not the allocator (the tests), it collects an empty heap.
pub fn release_freed_memory() {
    thread_local!(static LAST: Cell<Option<Instant>> = const { Cell::new(None) });
    let now = Instant::now();
    if LAST.get().is_some_and(|at| now - at < EVERY) {
        return;
    }
    LAST.set(Some(now));
    // SAFETY: mi_collect has no precondition. Forced, it collects the calling thread's heap
    // and also purges the process-wide arenas and the pages of ended threads.
    unsafe { libmimalloc_sys::mi_collect(true) };
}
