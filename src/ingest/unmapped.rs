//! A batcher's tally of the StatsD names no mapping rule matched (with a mapping file): each
//! name gets a number once, which the line cache keeps with the lines of that name, so a known
//! line adds to its name's count without hashing it again; the counts go to the shared top-k
//! sketch ([`crate::telemetry::recent`]) once per flush. Names are kept to their first
//! [`NAME_BYTES`] bytes.
//!
//! The numbers live as long as the tally: a tally is replaced only when the line cache that
//! holds its numbers is emptied with it (a reload, an idle listener). Past [`NAMES_LIMIT`]
//! names, a name without a number is counted in the sketch line by line.

use rustc_hash::FxHashMap;
use std::num::NonZeroU32;

use crate::telemetry::recent::Recent;

/// Names a tally numbers at most.
pub(super) const NAMES_LIMIT: usize = 4096;
/// Bytes of a name kept.
pub(super) const NAME_BYTES: usize = 256;

/// See the module.
#[derive(Debug)]
pub(super) struct UnmappedTally {
    numbers: FxHashMap<Box<str>, NonZeroU32>,
    /// Each numbered name with its lines since the last flush.
    names: Vec<(Box<str>, u64)>,
    /// Where the names whose count is above zero are in `names`.
    counted: Vec<u32>,
    /// The sketch's generation when the tally was made: counts made under other mapping
    /// rules are not added to it.
    generation: u64,
}

/// `name`, cut to [`NAME_BYTES`] at a character's boundary.
fn kept(name: &str) -> &str {
    if name.len() <= NAME_BYTES {
        return name;
    }
    let mut end = NAME_BYTES;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

impl UnmappedTally {
    /// An empty tally for `recent`'s sketch as it is now.
    pub(super) fn new(recent: &Recent) -> Self {
        UnmappedTally {
            numbers: FxHashMap::default(),
            names: Vec::new(),
            counted: Vec::new(),
            generation: recent.unmapped_generation(),
        }
    }

    /// The number of `name` (from 1), given it one if it has none; `None` when the tally is
    /// full.
    pub(super) fn number(&mut self, name: &str) -> Option<NonZeroU32> {
        let name = kept(name);
        if let Some(&n) = self.numbers.get(name) {
            return Some(n);
        }
        if self.names.len() >= NAMES_LIMIT {
            return None;
        }
        self.names.push((name.into(), 0));
        let n = NonZeroU32::new(self.names.len() as u32)?;
        self.numbers.insert(name.into(), n);
        Some(n)
    }

    /// Counts a line of the name numbered `n`.
    pub(super) fn count(&mut self, n: NonZeroU32) {
        let index = n.get() as usize - 1;
        let (_, lines) = &mut self.names[index];
        if *lines == 0 {
            self.counted.push(index as u32);
        }
        *lines += 1;
    }

    /// Counts a line of a name the full tally has no number for, in `recent`'s sketch.
    pub(super) fn count_unnumbered(&self, name: &str, recent: &Recent) {
        recent.unmapped(self.generation, [(kept(name).into(), 1)]);
    }

    /// Adds the counts to `recent`'s sketch and sets them to zero; the numbers stay.
    pub(super) fn flush(&mut self, recent: &Recent) {
        if self.counted.is_empty() {
            return;
        }
        let names = &mut self.names;
        let counts = self.counted.drain(..).map(|n| {
            let (name, lines) = &mut names[n as usize];
            (name.clone(), std::mem::take(lines))
        });
        recent.unmapped(self.generation, counts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reach_the_sketch_once_per_flush() {
        let recent = Recent::default();
        let mut tally = UnmappedTally::new(&recent);
        let a = tally.number("a.b").unwrap();
        assert_eq!(tally.number("a.b"), Some(a));
        let c = tally.number("c").unwrap();
        tally.count(a);
        tally.count(a);
        tally.count(c);
        tally.flush(&recent);
        tally.count(a);
        tally.flush(&recent);
        assert_eq!(
            recent.top_unmapped(10),
            vec![("a.b".into(), 3, 0), ("c".into(), 1, 0)],
            "counts summed over flushes"
        );
        for n in 0..NAMES_LIMIT {
            tally.number(&format!("n{n}"));
        }
        assert_eq!(tally.number("new"), None, "full");
        tally.count_unnumbered("new", &recent);
        assert_eq!(recent.top_unmapped(10)[2], ("new".into(), 1, 0));
    }

    #[test]
    fn names_are_cut_and_counts_of_other_rules_left_out() {
        let recent = Recent::default();
        let mut tally = UnmappedTally::new(&recent);
        let long = format!("{}é", "x".repeat(NAME_BYTES - 1));
        let n = tally.number(&long).unwrap();
        assert_eq!(
            tally.number(&"x".repeat(NAME_BYTES - 1)),
            Some(n),
            "cut before the é"
        );
        tally.count(n);
        // A reload: the sketch forgets, and counts made before it are not added.
        recent.clear_unmapped();
        tally.flush(&recent);
        assert!(recent.top_unmapped(10).is_empty());
        let mut tally = UnmappedTally::new(&recent);
        let n = tally.number("after").unwrap();
        tally.count(n);
        tally.flush(&recent);
        assert_eq!(recent.top_unmapped(10), vec![("after".into(), 1, 0)]);
    }
}
