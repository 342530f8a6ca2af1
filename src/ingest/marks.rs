//! A datagram's lines, and where each one's value is: the datagram's newlines, colons and
//! pipes are found for the whole datagram at once, 64 bytes to a set of bit masks (16 bytes at
//! a time with SSE2 on x86_64), and each line's separators are then the next set bits within
//! the line, a few register instructions each for a line within a block or two, rather than a
//! search call per line and per separator (lines are about 16 bytes, too short for a search's
//! set-up to pay). No search goes past its line's end, so a datagram costs time in
//! proportion to its length, whatever its lines.

/// The masks of 64 bytes: bit `i` of `masks[NEWLINE]` is set when byte `i` is a newline, and
/// so on.
type Block = [u64; 3];
const NEWLINE: usize = 0;
const COLON: usize = 1;
const PIPE: usize = 2;
/// Blocks of room kept from one scan to the next: a 64 KiB datagram's.
const KEPT_BLOCKS: usize = 1024;

/// A datagram's separators, 64 bytes to a [`Block`]. Kept by its batcher, so its room is
/// reused from one datagram to the next.
#[derive(Debug, Default)]
pub(super) struct Marks {
    blocks: Vec<Block>,
}

/// A line of the datagram: `datagram[start..end]`, without its newline or a `\r` before it,
/// never empty. `value` is where its value is, for a line of one value with fields after it:
/// `name:value|fields` with no `:` between the first `:` and the first `|` after it, the
/// lines the line cache may know; its name (with the `:`) is then `start..value.0` and its
/// fields `value.1..end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Line {
    pub(super) start: usize,
    pub(super) end: usize,
    pub(super) value: Option<(usize, usize)>,
}

impl Marks {
    /// Finds the separators of `datagram`, forgetting the last one's.
    pub(super) fn scan(&mut self, datagram: &[u8]) {
        // The room a chunk bigger than a datagram took (a TCP read) is let go at the next.
        if self.blocks.capacity() > KEPT_BLOCKS.max(datagram.len().div_ceil(64)) {
            self.blocks = Vec::new();
        }
        self.blocks.clear();
        let mut chunks = datagram.chunks_exact(64);
        for chunk in chunks.by_ref() {
            self.blocks
                .push(block(chunk.try_into().expect("sixty-four bytes")));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            // Zeros are no separator.
            let mut last = [0; 64];
            last[..rest.len()].copy_from_slice(rest);
            self.blocks.push(block(&last));
        }
    }

    /// The lines of `datagram`, the datagram last scanned, in order.
    pub(super) fn lines<'a>(&'a self, datagram: &'a [u8]) -> Lines<'a> {
        Lines {
            marks: self,
            datagram,
            at: 0,
        }
    }

    /// Where the first separator of those `of` picks from a block is, at or after `from` and
    /// before `limit`, if there is one.
    #[inline]
    fn next(&self, from: usize, limit: usize, of: impl Fn(&Block) -> u64) -> Option<usize> {
        let mut i = from / 64;
        let mut bits = of(self.blocks.get(i)?) & (u64::MAX << (from % 64));
        while bits == 0 {
            i += 1;
            if i * 64 >= limit {
                return None;
            }
            bits = of(self.blocks.get(i)?);
        }
        Some(i * 64 + bits.trailing_zeros() as usize).filter(|&at| at < limit)
    }

    /// True when byte `at` is a pipe.
    #[inline]
    fn is_pipe(&self, at: usize) -> bool {
        self.blocks[at / 64][PIPE] & (1 << (at % 64)) != 0
    }
}

/// The lines of a datagram (see [`Marks::lines`]).
#[derive(Debug)]
pub(super) struct Lines<'a> {
    marks: &'a Marks,
    datagram: &'a [u8],
    /// Where the next line starts.
    at: usize,
}

impl Iterator for Lines<'_> {
    type Item = Line;

    #[inline]
    fn next(&mut self) -> Option<Line> {
        let (marks, datagram) = (self.marks, self.datagram);
        loop {
            if self.at >= datagram.len() {
                return None;
            }
            let start = self.at;
            let newline = marks
                .next(start, datagram.len(), |b| b[NEWLINE])
                .unwrap_or(datagram.len());
            self.at = newline + 1;
            // A `\r` before the newline is not part of the line (it is no separator, so only
            // the end moves).
            let end = newline - usize::from(newline > start && datagram[newline - 1] == b'\r');
            if end == start {
                continue;
            }
            // The first colon, then the first pipe or colon after it: a colon is a line of
            // several values.
            let value = marks.next(start, end, |b| b[COLON]).and_then(|colon| {
                let pipe = marks.next(colon + 1, end, |b| b[COLON] | b[PIPE])?;
                marks.is_pipe(pipe).then_some((colon + 1, pipe))
            });
            return Some(Line { start, end, value });
        }
    }
}

/// The masks of 64 bytes.
#[cfg(target_arch = "x86_64")]
#[inline]
fn block(bytes: &[u8; 64]) -> Block {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_set1_epi8,
    };
    let mut masks = [0; 3];
    for (quarter, sixteen) in bytes.chunks_exact(16).enumerate() {
        // SAFETY: SSE2 is part of x86_64; the load reads the sixteen bytes of `sixteen`,
        // unaligned.
        unsafe {
            let v = _mm_loadu_si128(sixteen.as_ptr().cast::<__m128i>());
            for (k, byte) in [b'\n', b':', b'|'].into_iter().enumerate() {
                let hits = _mm_movemask_epi8(_mm_cmpeq_epi8(v, _mm_set1_epi8(byte as i8)));
                masks[k] |= u64::from(hits as u16) << (16 * quarter);
            }
        }
    }
    masks
}

/// The masks of 64 bytes.
#[cfg(not(target_arch = "x86_64"))]
fn block(bytes: &[u8; 64]) -> Block {
    let mut masks = [0; 3];
    for (i, &byte) in bytes.iter().enumerate() {
        let k = match byte {
            b'\n' => NEWLINE,
            b':' => COLON,
            b'|' => PIPE,
            _ => continue,
        };
        masks[k] |= 1 << i;
    }
    masks
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A line, and its name, value and fields when it has them.
    type Split<'d> = (&'d [u8], Option<(&'d [u8], &'d [u8], &'d [u8])>);

    /// The lines of `datagram` as [`Marks`] finds them, as slices.
    fn found(datagram: &[u8]) -> Vec<Split<'_>> {
        let mut marks = Marks::default();
        marks.scan(datagram);
        marks
            .lines(datagram)
            .map(|line| {
                let parts = line.value.map(|(from, to)| {
                    (
                        &datagram[line.start..from],
                        &datagram[from..to],
                        &datagram[to..line.end],
                    )
                });
                (&datagram[line.start..line.end], parts)
            })
            .collect()
    }

    /// The same, the slow way: split on newlines, one `\r` before each taken off, empty lines
    /// skipped, and [`super::super::split_single`] for the parts.
    fn wanted(datagram: &[u8]) -> Vec<Split<'_>> {
        datagram
            .split(|&b| b == b'\n')
            .map(|line| line.strip_suffix(b"\r").unwrap_or(line))
            .filter(|line| !line.is_empty())
            .map(|line| (line, super::super::batcher::split_single(line)))
            .collect()
    }

    #[test]
    fn lines_split_on_newlines_drop_a_carriage_return_and_skip_empty_ones() {
        let datagram = b"a:1|c\r\n\nb:2|g\n\r\nc:1:2|c\nd\ne:1\r";
        let got = found(datagram);
        let lines: Vec<&[u8]> = got.iter().map(|(line, _)| *line).collect();
        assert_eq!(lines, [&b"a:1|c"[..], b"b:2|g", b"c:1:2|c", b"d", b"e:1"]);
        let parts: Vec<_> = got.iter().map(|(_, parts)| *parts).collect();
        assert_eq!(
            parts,
            [
                Some((&b"a:"[..], &b"1"[..], &b"|c"[..])),
                Some((b"b:", b"2", b"|g")),
                None,
                None,
                None
            ]
        );
    }

    #[test]
    fn separators_are_found_across_blocks() {
        // Lines of every length around the 64-byte blocks, so that separators fall on either
        // side of each block's edge, and a last partial block.
        for len in 1..140 {
            let mut datagram = Vec::new();
            for i in 0..5 {
                let name = "n".repeat(len + i);
                datagram.extend_from_slice(format!("{name}:{i}|c|#k:v\n").as_bytes());
            }
            assert_eq!(found(&datagram), wanted(&datagram), "{len}");
        }
    }

    proptest! {
        #[test]
        fn lines_and_values_are_those_of_a_split_on_newlines(
            datagram in proptest::collection::vec(
                prop_oneof![
                    4 => Just(b'\n'), 4 => Just(b':'), 4 => Just(b'|'), 2 => Just(b'\r'),
                    1 => any::<u8>(), 8 => Just(b'a'),
                ],
                0..300,
            )
        ) {
            prop_assert_eq!(found(&datagram), wanted(&datagram));
        }
    }
}
