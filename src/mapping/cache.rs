//! A small per-caller cache of mapping results, so a name seen again costs one hash lookup.

use rustc_hash::FxHashMap;

use super::{Mapper, MetricClass, Outcome};

/// Remembers what a [`Mapper`] made of recent names, for one caller (e.g. one listener task):
/// no locks, and counts of hits and misses for `tallyd_mapping_cache_{hits,misses}_total`.
///
/// Bounded: when `capacity` names are held, the next miss starts the cache over. That keeps
/// memory bounded and each operation O(1) when an application sends endless distinct names; a
/// working set larger than the cache misses either way. Passing a different mapper (after a
/// reload) also starts it over.
#[derive(Debug)]
pub struct MapCache {
    capacity: usize,
    /// The mapper the entries came from.
    mapper: u64,
    /// One map per [`MetricClass`], so that a lookup borrows the name.
    entries: [FxHashMap<Box<str>, Outcome>; MetricClass::ALL.len()],
    len: usize,
    hits: u64,
    misses: u64,
}

impl MapCache {
    /// A cache holding at most `capacity` names; 0 caches nothing.
    pub fn new(capacity: usize) -> MapCache {
        MapCache {
            capacity,
            mapper: 0,
            entries: Default::default(),
            len: 0,
            hits: 0,
            misses: 0,
        }
    }

    /// What `mapper` does with `name` for a sample of `class`, from the cache when possible.
    ///
    /// With an empty mapper (no mapping file) every name is [`Outcome::Unmapped`], returned
    /// without touching the cache or its counts.
    pub fn get_or_map(&mut self, mapper: &Mapper, name: &str, class: MetricClass) -> Outcome {
        if mapper.is_empty() {
            return Outcome::Unmapped;
        }
        if self.mapper != mapper.id() {
            self.clear();
            self.mapper = mapper.id();
        }
        let entries = &mut self.entries[class.index()];
        if let Some(found) = entries.get(name) {
            self.hits += 1;
            return found.clone();
        }
        self.misses += 1;
        let outcome = mapper.map(name, class);
        if self.capacity == 0 {
            return outcome;
        }
        if self.len >= self.capacity {
            self.clear();
        }
        self.entries[class.index()].insert(name.into(), outcome.clone());
        self.len += 1;
        outcome
    }

    /// Lookups answered from the cache, since it was created.
    pub fn hits(&self) -> u64 {
        self.hits
    }

    /// Lookups that had to run the mapper, since it was created.
    pub fn misses(&self) -> u64 {
        self.misses
    }

    /// How many names it holds now.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when it holds no name.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every name and gives back the room it took (the counts are kept).
    pub fn release(&mut self) {
        self.entries = Default::default();
        self.len = 0;
    }

    /// Forgets every name, keeping the room for the next ones (the counts are kept).
    pub fn clear(&mut self) {
        for map in &mut self.entries {
            map.clear();
        }
        self.len = 0;
    }
}
