//! The batcher's line cache: what a line's name and fields (everything but its value) resolve
//! to, for the lines seen before. An open-addressing table of one cache line per entry, built
//! to be looked up a datagram at a time, in stages: every line's slot is asked for
//! ([`LineCache::prefetch`]), then every slot is read and its key asked for
//! ([`LineCache::probe`]), then every key is checked ([`LineCache::get`]). Between two datagrams
//! the processor's caches often go cold; so the misses of a datagram's lines overlap instead of
//! coming one after another. Probes are bounded, so no set of keys makes a look-up slow.

use rustc_hash::FxHasher;
use std::hash::Hasher;

/// Slots probed at most from a key's home slot: a key that finds no room within them is not
/// remembered.
const MAX_PROBE: usize = 64;
/// Slots of a table's first allocation.
const MIN_SLOTS: usize = 64;

/// A remembered key, where its bytes are, and its value. One per cache line.
#[derive(Clone, Copy, Debug)]
#[repr(align(64))]
struct Slot<V> {
    hash: u64,
    /// The key's bytes: `keys[at..at + len]`.
    at: u32,
    len: u32,
    value: V,
}

// One slot per cache line, for the line cache's value type too (its `Option` fits in a niche).
const _: () = assert!(std::mem::size_of::<Option<Slot<super::Resolved>>>() == 64);

impl<V> Slot<V> {
    /// True when this slot's key, in `keys`, is `name` then `fields`.
    #[inline]
    fn is(&self, keys: &[u8], name: &[u8], fields: &[u8]) -> bool {
        let key = &keys[self.at as usize..][..self.len as usize];
        key.split_at_checked(name.len())
            .is_some_and(|(a, b)| same(a, name) && same(b, fields))
    }
}

/// `a == b`, inline: keys are short, and a call to `memcmp` for each would cost more than the
/// comparison (eight bytes at a time, the last eight overlapping the ones before).
#[inline]
fn same(a: &[u8], b: &[u8]) -> bool {
    fn word(bytes: &[u8], at: usize) -> u64 {
        u64::from_ne_bytes(bytes[at..at + 8].try_into().expect("eight bytes"))
    }
    let n = a.len();
    if n != b.len() {
        return false;
    }
    if n < 8 {
        return a.iter().zip(b).all(|(x, y)| x == y);
    }
    (0..n - 8)
        .step_by(8)
        .chain([n - 8])
        .all(|at| word(a, at) == word(b, at))
}

/// Keys (a name with its `:`, then fields) and the value each resolves to.
#[derive(Debug)]
pub(super) struct LineCache<V> {
    /// A power of two of slots, or none.
    slots: Box<[Option<Slot<V>>]>,
    /// Every key's bytes, one after another.
    keys: Vec<u8>,
    len: usize,
    /// Times the keys moved (a growth or a clear): a slot found before may now hold another
    /// key, or none.
    moves: u64,
}

impl<V> Default for LineCache<V> {
    fn default() -> Self {
        LineCache {
            slots: Box::default(),
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

/// Asks the processor to fetch the cache line at `at` (a hint, which reads nothing).
#[inline]
pub(super) fn prefetch_line<T>(at: *const T) {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        // SAFETY: SSE is part of x86_64, and a prefetch only hints: it never faults, whatever
        // the address.
        unsafe { _mm_prefetch::<_MM_HINT_T0>(at.cast()) };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = at;
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
        self.slots.fill(None);
        self.keys.clear();
        self.len = 0;
        self.moves += 1;
    }

    /// Counts the times the keys moved: while it stays the same, a slot from
    /// [`LineCache::probe`] still holds the key [`LineCache::get`] found there.
    pub(super) fn moves(&self) -> u64 {
        self.moves
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Asks for the home slot of a key of this hash, ahead of [`LineCache::probe`].
    #[inline]
    pub(super) fn prefetch(&self, hash: u64) {
        if let Some(slot) = self.slots.get(hash as usize & self.mask()) {
            prefetch_line(slot);
        }
    }

    /// The slot of the first key with this hash, if any, whose bytes are asked for ahead of
    /// [`LineCache::get`].
    #[inline]
    pub(super) fn probe(&self, hash: u64) -> Option<u32> {
        let mask = self.mask();
        let home = hash as usize & mask;
        for i in (0..MAX_PROBE.min(self.slots.len())).map(|step| (home + step) & mask) {
            let slot = self.slots[i].as_ref()?;
            if slot.hash == hash {
                prefetch_line(self.keys[slot.at as usize..].as_ptr());
                return Some(i as u32);
            }
        }
        None
    }

    /// The value of slot `slot` (from [`LineCache::probe`]) if its key is `name` then `fields`.
    #[inline]
    pub(super) fn get(&self, slot: u32, name: &[u8], fields: &[u8]) -> Option<V> {
        let slot = self.slots.get(slot as usize)?.as_ref()?;
        slot.is(&self.keys, name, fields).then_some(slot.value)
    }

    /// The value of slot `slot`, if it holds a key: the one [`LineCache::get`] found there,
    /// as long as the keys have not moved since (see [`LineCache::moves`]).
    #[inline]
    pub(super) fn value(&self, slot: u32) -> Option<V> {
        Some(self.slots.get(slot as usize)?.as_ref()?.value)
    }

    /// The value of the key `name` then `fields`, of `hash`, if remembered: a look-up in one go.
    pub(super) fn find(&self, hash: u64, name: &[u8], fields: &[u8]) -> Option<V> {
        self.get(self.probe(hash)?, name, fields)
    }

    /// Remembers that the key `name` then `fields`, of `hash`, resolves to `value`; replaces
    /// what it resolved to before. A key that finds no room within its probe is not remembered.
    pub(super) fn insert(&mut self, hash: u64, name: &[u8], fields: &[u8], value: V) {
        if (self.len + 1) * 2 > self.slots.len() {
            self.grow();
        }
        let mask = self.mask();
        let home = hash as usize & mask;
        for i in (0..MAX_PROBE).map(|step| (home + step) & mask) {
            match &mut self.slots[i] {
                Some(slot) if slot.hash == hash && slot.is(&self.keys, name, fields) => {
                    slot.value = value;
                    return;
                }
                Some(_) => {}
                empty @ None => {
                    let at = self.keys.len() as u32;
                    self.keys.extend_from_slice(name);
                    self.keys.extend_from_slice(fields);
                    *empty = Some(Slot {
                        hash,
                        at,
                        len: (name.len() + fields.len()) as u32,
                        value,
                    });
                    self.len += 1;
                    return;
                }
            }
        }
    }

    /// Doubles the slots, placing every key again.
    fn grow(&mut self) {
        self.moves += 1;
        let size = (self.slots.len() * 2).max(MIN_SLOTS);
        let old = std::mem::replace(&mut self.slots, vec![None; size].into_boxed_slice());
        let mask = size - 1;
        for slot in old.into_vec().into_iter().flatten() {
            // Twice the room: a key placed before finds room again, except when too many of
            // its neighbours share its home slot; it is then forgotten.
            let home = slot.hash as usize & mask;
            if let Some(i) = (0..MAX_PROBE)
                .map(|step| (home + step) & mask)
                .find(|&i| self.slots[i].is_none())
            {
                self.slots[i] = Some(slot);
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
            assert_eq!(
                cache.get(cache.probe(hash(a, &fields)).unwrap_or(0), a, &fields),
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
    fn keys_move_when_the_cache_grows_or_clears_and_only_then() {
        let mut cache = LineCache::default();
        let insert = |cache: &mut LineCache<u32>, i: u32| {
            let name = format!("m.{i}:");
            cache.insert(hash(name.as_bytes(), b"|c"), name.as_bytes(), b"|c", i);
        };
        insert(&mut cache, 0);
        let moves = cache.moves();
        // Room for MIN_SLOTS / 2 keys: the ones after the first go in without moving it.
        let slot = cache.probe(hash(b"m.0:", b"|c")).unwrap();
        for i in 1..(MIN_SLOTS / 2) as u32 {
            insert(&mut cache, i);
        }
        assert_eq!(cache.moves(), moves);
        assert_eq!(cache.value(slot), Some(0));
        insert(&mut cache, MIN_SLOTS as u32);
        assert_eq!(cache.moves(), moves + 1, "a growth");
        cache.clear();
        assert_eq!(cache.moves(), moves + 2, "a clear");
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
            let slot = cache.probe(7).expect("a slot of hash 7");
            let found = cache.get(slot, name.as_bytes(), b"|c");
            // Only the first key of a hash is found by a probe; the others take the long way.
            assert_eq!(found, (i == 0).then_some(0));
        }
    }
}
