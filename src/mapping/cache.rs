//! A small per-caller cache of mapping results, so a name seen again costs one hash lookup.

use indexmap::IndexMap;
use lru::LruCache;
use rustc_hash::FxBuildHasher;

use super::{Mapper, MetricClass, Outcome};
use crate::config::CacheType;

/// The names held, keyed by the sample's class (one byte) and the name.
#[derive(Debug)]
enum Entries {
    Lru(LruCache<Box<str>, Outcome, FxBuildHasher>),
    Random(IndexMap<Box<str>, Outcome, FxBuildHasher>),
}

impl Entries {
    fn new(kind: CacheType) -> Entries {
        match kind {
            CacheType::Lru => Entries::Lru(LruCache::unbounded_with_hasher(FxBuildHasher)),
            CacheType::Random => Entries::Random(IndexMap::with_hasher(FxBuildHasher)),
        }
    }

    fn get(&mut self, key: &str) -> Option<&Outcome> {
        match self {
            Entries::Lru(cache) => cache.get(key),
            Entries::Random(map) => map.get(key),
        }
    }

    fn len(&self) -> usize {
        match self {
            Entries::Lru(cache) => cache.len(),
            Entries::Random(map) => map.len(),
        }
    }

    /// Forgets one name, as the cache's type says.
    fn evict(&mut self) {
        match self {
            Entries::Lru(cache) => {
                cache.pop_lru();
            }
            Entries::Random(map) => {
                map.swap_remove_index(fastrand::usize(..map.len()));
            }
        }
    }

    fn insert(&mut self, key: Box<str>, outcome: Outcome) {
        match self {
            Entries::Lru(cache) => {
                cache.put(key, outcome);
            }
            Entries::Random(map) => {
                map.insert(key, outcome);
            }
        }
    }

    fn clear(&mut self) {
        match self {
            Entries::Lru(cache) => cache.clear(),
            Entries::Random(map) => map.clear(),
        }
    }
}

/// Remembers what a [`Mapper`] made of recent names, for one caller (e.g. one listener task):
/// no locks, and counts of hits and misses for `tallyd_mapping_cache_{hits,misses}_total`.
///
/// Bounded (`statsd.cache_size`): when `capacity` names are held, a new one takes the place of
/// the least recently used, or of one at random (`statsd.cache_type`). Passing a different
/// mapper (after a reload) starts it over.
#[derive(Debug)]
pub struct MapCache {
    capacity: usize,
    kind: CacheType,
    /// The mapper the entries came from.
    mapper: u64,
    entries: Entries,
    /// The key being looked up, built here so that a lookup allocates nothing.
    key: String,
    hits: u64,
    misses: u64,
}

impl MapCache {
    /// A cache holding at most `capacity` names, forgetting as `kind` says; 0 caches nothing.
    pub fn new(capacity: usize, kind: CacheType) -> MapCache {
        MapCache {
            capacity,
            kind,
            mapper: 0,
            entries: Entries::new(kind),
            key: String::new(),
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
        self.key.clear();
        self.key.push(char::from(b'0' + class.index() as u8));
        self.key.push_str(name);
        if let Some(found) = self.entries.get(&self.key) {
            self.hits += 1;
            return found.clone();
        }
        self.misses += 1;
        let outcome = mapper.map(name, class);
        if self.capacity == 0 {
            return outcome;
        }
        if self.entries.len() >= self.capacity {
            self.entries.evict();
        }
        self.entries
            .insert(self.key.as_str().into(), outcome.clone());
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
        self.entries.len()
    }

    /// True when it holds no name.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Forgets every name and gives back the room it took (the counts are kept).
    pub fn release(&mut self) {
        self.entries = Entries::new(self.kind);
        self.key = String::new();
    }

    /// Forgets every name, keeping the room for the next ones (the counts are kept).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}
