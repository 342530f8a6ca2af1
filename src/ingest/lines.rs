//! The batcher's line cache: what a line's name and fields (everything but its value) resolve
//! to, for the lines seen before. Entries sit one after another in the order their keys were
//! first seen, one cache line each, and a small open-addressing index of 8 bytes a key's
//! bucket finds them by hash. A datagram's lines tend to come in the order they were first
//! seen, so after an idle time that left the processor's caches cold, a datagram's look-ups
//! touch a few lines of the index and entries close together, which the processor fetches
//! ahead, rather than a line of a big table each. It is looked up a datagram at a time, in
//! stages: every line's bucket is asked for ([`LineCache::prefetch`]), then every bucket is
//! read and its entry asked for ([`LineCache::probe`]), then every entry's key is checked
//! ([`LineCache::get`]), so the misses of a datagram's lines overlap instead of coming one
//! after another. Probes are bounded, so no set of keys makes a look-up slow. A key may also
//! be looked up by place ([`LineCache::holds`]): the batcher first tries the entry after the
//! last line's, which is the line's own when lines come in the order first seen, with no hash
//! and no index.

use rustc_hash::FxHasher;
use std::hash::Hasher;

/// Buckets probed at most from a key's home bucket: a key that finds no room within them is
/// not remembered.
const MAX_PROBE: usize = 64;
/// Buckets of an index's first allocation.
const MIN_BUCKETS: usize = 64;

/// A remembered key, where its bytes are, and its value. One per cache line.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
struct Entry<V> {
    hash: u64,
    /// The key's bytes: `keys[at..at + len]`.
    at: u32,
    len: u32,
    value: V,
}

// One entry per cache line, for the line cache's value type too.
const _: () = assert!(std::mem::size_of::<Entry<super::batcher::KnownLine>>() == 64);

impl<V> Entry<V> {
    /// True when this entry's key, in `keys`, is `name` then `fields`.
    #[inline(always)]
    fn is(&self, keys: &[u8], name: &[u8], fields: &[u8]) -> bool {
        let key = &keys[self.at as usize..][..self.len as usize];
        key.split_at_checked(name.len())
            .is_some_and(|(a, b)| same(a, name) && same(b, fields))
    }
}

/// An index bucket: the high half of a key's hash, and its entry plus one (0: empty), so
/// that keys of another hash are passed over without reading their entries.
#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    tag: u32,
    entry: u32,
}

/// The part of a hash a bucket keeps; the low bits choose the home bucket.
fn tag_of(hash: u64) -> u32 {
    (hash >> 32) as u32
}

/// `a == b`, inline: keys are short, and a call to `memcmp` for each would cost more than the
/// comparison (eight bytes at a time, the last eight overlapping the ones before; four and
/// four overlapping from four bytes to seven).
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    fn word(bytes: &[u8], at: usize) -> u64 {
        u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
    }
    fn half(bytes: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(bytes[at..at + 4].try_into().expect("four bytes"))
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 4 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    if n < 8 {
        return half(a, 0) == half(b, 0) && half(a, n - 4) == half(b, n - 4);
    }
    let mut at = 0;
    while at + 8 < n {
        if word(a, at) != word(b, at) {
            return false;
        }
        at += 8;
    }
    word(a, n - 8) == word(b, n - 8)
}

/// Keys (a name with its `:`, then fields) and the value each resolves to.
#[derive(Debug)]
pub(super) struct LineCache<V> {
    /// A power of two of buckets, at most half of them used, or none.
    buckets: Box<[Bucket]>,
    /// The entries, in the order their keys were first remembered. An entry stays where it
    /// is until a clear; one that a growth of the index could not place again is no longer
    /// found by hash (by place it still is, with the value it had, which a key keeps until a
    /// clear).
    entries: Vec<Entry<V>>,
    /// Every key's bytes, one after another.
    keys: Vec<u8>,
    /// Keys the index finds.
    len: usize,
    /// Times the keys moved (a clear): an entry found before may now hold another key, or
    /// none.
    moves: u64,
}

impl<V> Default for LineCache<V> {
    fn default() -> Self {
        LineCache {
            buckets: Box::default(),
            entries: Vec::new(),
            keys: Vec::new(),
            len: 0,
            moves: 0,
        }
    }
}

/// The hash of the key made of `name` and `fields`.
pub(super) fn hash(name: &[u8], fields: &[u8]) -> u64 {
    let mut hasher = FxHasher::default();
    hasher.write(name);
    hasher.write(fields);
    hasher.finish()
}

impl<V: Copy> LineCache<V> {
    /// Keys remembered.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// True when no key is remembered.
    pub(super) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Forgets every key, keeping the room.
    pub(super) fn clear(&mut self) {
        self.buckets.fill(Bucket::default());
        self.entries.clear();
        self.keys.clear();
        self.len = 0;
        self.moves += 1;
    }

    /// Counts the times the keys moved: while it stays the same, an entry from
    /// [`LineCache::probe`] still holds the key [`LineCache::get`] found there, and one that
    /// [`LineCache::holds`] said holds a key still does.
    pub(super) fn moves(&self) -> u64 {
        self.moves
    }

    fn mask(&self) -> usize {
        self.buckets.len().wrapping_sub(1)
    }

    /// The buckets a key of `hash` may be in, from its home bucket on.
    fn probes(&self, hash: u64) -> impl Iterator<Item = usize> {
        let mask = self.mask();
        let home = hash as usize & mask;
        (0..MAX_PROBE.min(self.buckets.len())).map(move |step| (home + step) & mask)
    }

    /// Asks for the home bucket of a key of this hash, ahead of [`LineCache::probe`].
    #[inline]
    pub(super) fn prefetch(&self, hash: u64) {
        if let Some(bucket) = self.buckets.get(hash as usize & self.mask()) {
            crate::memory::prefetch_line(bucket);
        }
    }

    /// The entry of the first key whose bucket has this hash's tag, if any, which is asked
    /// for ahead of [`LineCache::get`]. (Its key's bytes are not: where they are is in the
    /// entry, and reading it here would wait for it. Keys lie one after another in the order
    /// of their entries, where the processor's own prefetching finds them.)
    #[inline]
    pub(super) fn probe(&self, hash: u64) -> Option<u32> {
        let tag = tag_of(hash);
        for i in self.probes(hash) {
            let bucket = self.buckets[i];
            let index = bucket.entry.checked_sub(1)?;
            if bucket.tag == tag {
                if let Some(entry) = self.entries.get(index as usize) {
                    crate::memory::prefetch_line(entry);
                }
                return Some(index);
            }
        }
        None
    }

    /// The value of entry `entry` (from [`LineCache::probe`]) if its key is `name` then
    /// `fields`, of `hash`.
    #[inline]
    pub(super) fn get(&self, entry: u32, hash: u64, name: &[u8], fields: &[u8]) -> Option<V> {
        let entry = self.entries.get(entry as usize)?;
        (entry.hash == hash && entry.is(&self.keys, name, fields)).then_some(entry.value)
    }

    /// True when entry `entry` holds the key `name` then `fields`: a look-up by place, when
    /// the caller knows where a key should be.
    #[inline]
    pub(super) fn holds(&self, entry: u32, name: &[u8], fields: &[u8]) -> bool {
        self.entries
            .get(entry as usize)
            .is_some_and(|e| e.is(&self.keys, name, fields))
    }

    /// The value of entry `entry`: the value of the key [`LineCache::get`] found there (or
    /// [`LineCache::holds`] said it holds), as long as the keys have not moved since (see
    /// [`LineCache::moves`]).
    #[inline]
    pub(super) fn value(&self, entry: u32) -> Option<V> {
        Some(self.entries.get(entry as usize)?.value)
    }

    /// The value of the key `name` then `fields`, of `hash`, if remembered: a look-up in one go.
    pub(super) fn find(&self, hash: u64, name: &[u8], fields: &[u8]) -> Option<V> {
        self.get(self.probe(hash)?, hash, name, fields)
    }

    /// Remembers that the key `name` then `fields`, of `hash`, resolves to `value`; replaces
    /// what it resolved to before. A key that finds no room within its probe is not remembered.
    pub(super) fn insert(&mut self, hash: u64, name: &[u8], fields: &[u8], value: V) {
        if (self.len + 1) * 2 > self.buckets.len() {
            self.grow();
        }
        let tag = tag_of(hash);
        for i in self.probes(hash) {
            let bucket = self.buckets[i];
            let Some(index) = bucket.entry.checked_sub(1) else {
                let at = self.keys.len() as u32;
                self.keys.extend_from_slice(name);
                self.keys.extend_from_slice(fields);
                self.entries.push(Entry {
                    hash,
                    at,
                    len: (name.len() + fields.len()) as u32,
                    value,
                });
                self.buckets[i] = Bucket {
                    tag,
                    entry: self.entries.len() as u32,
                };
                self.len += 1;
                return;
            };
            let entry = &mut self.entries[index as usize];
            if bucket.tag == tag && entry.hash == hash && entry.is(&self.keys, name, fields) {
                entry.value = value;
                return;
            }
        }
    }

    /// Doubles the index, placing every key found again; the entries stay where they are.
    fn grow(&mut self) {
        let size = (self.buckets.len() * 2).max(MIN_BUCKETS);
        let old = std::mem::replace(
            &mut self.buckets,
            vec![Bucket::default(); size].into_boxed_slice(),
        );
        for bucket in old.iter().filter(|bucket| bucket.entry != 0) {
            // Twice the room: a key placed before finds room again, except when too many of
            // its neighbours share its home bucket; it is then forgotten.
            let hash = self.entries[bucket.entry as usize - 1].hash;
            if let Some(i) = self.probes(hash).find(|&i| self.buckets[i].entry == 0) {
                self.buckets[i] = *bucket;
            } else {
                self.len -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn same_is_equality(
            a in proptest::collection::vec(any::<u8>(), 0..40),
            b in proptest::collection::vec(any::<u8>(), 0..40),
            at in any::<prop::sample::Index>(),
        ) {
            prop_assert_eq!(same(&a, &b), a == b);
            // Of the same length: equal, and then one byte off wherever it is.
            let mut c = a.clone();
            prop_assert!(same(&a, &c));
            if !a.is_empty() {
                c[at.index(a.len())] ^= 1;
                prop_assert!(!same(&a, &c));
            }
        }
    }

    fn find(cache: &LineCache<u32>, name: &[u8], fields: &[u8]) -> Option<u32> {
        let h = hash(name, fields);
        cache.prefetch(h);
        cache.find(h, name, fields)
    }

    #[test]
    fn same_tells_apart_every_byte_of_every_short_length() {
        for n in 0..=17 {
            let a: Vec<u8> = (0..n as u8).collect();
            assert!(same(&a, &a.clone()), "length {n}");
            for at in 0..n {
                let mut b = a.clone();
                b[at] ^= 0x80;
                assert!(!same(&a, &b), "length {n}, byte {at}");
            }
            assert!(!same(&a, &a[..n.saturating_sub(1)]) || n == 0);
        }
    }

    #[test]
    fn keys_are_found_by_name_and_fields_and_nothing_else() {
        let mut cache = LineCache::default();
        assert_eq!(find(&cache, b"a:", b"|c"), None);
        for i in 0..1000u32 {
            let name = format!("n.{i}:");
            cache.insert(hash(name.as_bytes(), b"|c"), name.as_bytes(), b"|c", i);
        }
        assert_eq!(cache.len(), 1000);
        for i in 0..1000u32 {
            let name = format!("n.{i}:");
            assert_eq!(find(&cache, name.as_bytes(), b"|c"), Some(i));
            // The same bytes split elsewhere, or other fields, are other keys.
            assert_eq!(find(&cache, name.as_bytes(), b"|g"), None);
            let (a, b) = name.as_bytes().split_at(2);
            let mut fields = b.to_vec();
            fields.extend_from_slice(b"|c");
            let other = hash(a, &fields);
            assert_eq!(
                cache.get(cache.probe(other).unwrap_or(0), other, a, &fields),
                None
            );
        }
        // Inserting a key again replaces its value.
        cache.insert(hash(b"n.7:", b"|c"), b"n.7:", b"|c", 70);
        assert_eq!(
            (find(&cache, b"n.7:", b"|c"), cache.len()),
            (Some(70), 1000)
        );
        cache.clear();
        assert_eq!((find(&cache, b"n.7:", b"|c"), cache.len()), (None, 0));
    }

    #[test]
    fn keys_move_when_the_cache_clears_and_only_then() {
        let mut cache = LineCache::default();
        let insert = |cache: &mut LineCache<u32>, i: u32| {
            let name = format!("m.{i}:");
            cache.insert(hash(name.as_bytes(), b"|c"), name.as_bytes(), b"|c", i);
        };
        insert(&mut cache, 0);
        let moves = cache.moves();
        let entries: Vec<u32> = (0..MIN_BUCKETS as u32 * 8)
            .map(|i| {
                insert(&mut cache, i);
                let name = format!("m.{i}:");
                cache.probe(hash(name.as_bytes(), b"|c")).unwrap()
            })
            .collect();
        // The index doubled four times; every entry found before is where it was.
        assert_eq!(cache.buckets.len(), MIN_BUCKETS * 16);
        assert_eq!(cache.moves(), moves);
        for (i, &entry) in entries.iter().enumerate() {
            let name = format!("m.{i}:");
            let h = hash(name.as_bytes(), b"|c");
            assert_eq!(cache.probe(h), Some(entry));
            assert_eq!(cache.get(entry, h, name.as_bytes(), b"|c"), Some(i as u32));
        }
        cache.clear();
        assert_eq!(cache.moves(), moves + 1, "a clear");
        assert_eq!(cache.value(entries[0]), None);
    }

    #[test]
    fn colliding_hashes_are_told_apart_by_their_keys_and_bounded() {
        let mut cache = LineCache::default();
        // More keys of one hash than a probe holds: the first MAX_PROBE are remembered, and
        // none is taken for another.
        for i in 0..100u32 {
            let name = format!("c.{i}:");
            cache.insert(7, name.as_bytes(), b"|c", i);
        }
        assert_eq!(cache.len(), MAX_PROBE);
        for i in 0..100u32 {
            let name = format!("c.{i}:");
            let entry = cache.probe(7).expect("an entry of hash 7");
            let found = cache.get(entry, 7, name.as_bytes(), b"|c");
            // Only the first key of a hash is found by a probe; the others take the long way.
            assert_eq!(found, (i == 0).then_some(0));
        }
    }
}
