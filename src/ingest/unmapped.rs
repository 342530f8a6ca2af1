//! A batcher's tally of the StatsD names no mapping rule matched (with a mapping file): each
//! name gets a number once, which the line cache keeps with the lines of that name, so a known
//! line adds to its name's count without hashing it again; the counts go to the shared top-k
//! sketch ([`crate::telemetry::recent`]) once per flush.

use rustc_hash::FxHashMap;

use crate::telemetry::recent::Recent;

/// Names a tally numbers at most; past it, the batcher starts over (and forgets the lines
/// that carry the old numbers).
pub(super) const NAMES_LIMIT: usize = 4096;

/// See the module.
#[derive(Debug, Default)]
pub(super) struct UnmappedTally {
    numbers: FxHashMap<Box<str>, u32>,
    /// Each numbered name with its lines since the last flush.
    names: Vec<(Box<str>, u64)>,
    /// The numbers whose count is above zero.
    counted: Vec<u32>,
}

impl UnmappedTally {
    /// The number of `name`, given it one if it has none; `None` when the tally is full.
    pub(super) fn number(&mut self, name: &str) -> Option<u32> {
        if let Some(&n) = self.numbers.get(name) {
            return Some(n);
        }
        if self.is_full() {
            return None;
        }
        let n = self.names.len() as u32;
        self.numbers.insert(name.into(), n);
        self.names.push((name.into(), 0));
        Some(n)
    }

    /// Counts a line of the name numbered `n`.
    pub(super) fn count(&mut self, n: u32) {
        let (_, lines) = &mut self.names[n as usize];
        if *lines == 0 {
            self.counted.push(n);
        }
        *lines += 1;
    }

    /// True when no other name can be numbered.
    pub(super) fn is_full(&self) -> bool {
        self.names.len() >= NAMES_LIMIT
    }

    /// True when nothing is counted since the last flush.
    pub(super) fn is_empty(&self) -> bool {
        self.counted.is_empty()
    }

    /// Adds the counts to `recent`'s sketch and sets them to zero; the numbers stay.
    pub(super) fn flush(&mut self, recent: &Recent) {
        if self.counted.is_empty() {
            return;
        }
        let names = &mut self.names;
        recent.unmapped(self.counted.drain(..).map(|n| {
            let (name, lines) = &mut names[n as usize];
            (name.clone(), std::mem::take(lines))
        }));
    }

    /// Flushes, then forgets every number (the lines that carried them are forgotten too).
    pub(super) fn clear(&mut self, recent: &Recent) {
        self.flush(recent);
        *self = UnmappedTally::default();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_reach_the_sketch_once_per_flush() {
        let recent = Recent::default();
        let mut tally = UnmappedTally::default();
        let a = tally.number("a.b").unwrap();
        assert_eq!(tally.number("a.b"), Some(a));
        let c = tally.number("c").unwrap();
        tally.count(a);
        tally.count(a);
        tally.count(c);
        tally.flush(&recent);
        assert!(tally.is_empty());
        tally.count(a);
        tally.flush(&recent);
        let top = recent.top_unmapped(10);
        assert_eq!(
            top,
            vec![("a.b".into(), 3, 0), ("c".into(), 1, 0)],
            "counts summed over flushes"
        );
        for n in 0..NAMES_LIMIT {
            tally.number(&format!("n{n}"));
        }
        assert_eq!(tally.number("new"), None);
        tally.clear(&recent);
        assert_eq!(tally.number("new"), Some(0));
    }
}
