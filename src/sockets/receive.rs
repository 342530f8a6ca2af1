//! Receiving many datagrams with one system call: a datagram reader's buffers, filled by
//! `recvmmsg(2)` with up to [`RECEIVE_MANY`] queued datagrams at a time, so that a steady stream
//! costs one system call per up to 16 datagrams rather than one each. (tallyd runs on Linux.)

use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders};
use std::io::{self, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd};

/// Datagrams one call takes at most. Each has a slot of the longest datagram accepted, plus
/// one byte; the pages of a slot's unused tail are never written, so they mostly stay out of
/// memory.
pub(super) const RECEIVE_MANY: usize = 16;

/// How far each slot starts past a whole number of pages from the one before it: 24 cache
/// lines, a common datagram's length. With slots of 64 KiB (the default limit) one after
/// another, every slot would start on the same cache sets, and the first bytes of the
/// datagrams of one call, the only ones most datagrams have, would evict each other from the
/// processor's caches between the kernel's copy and the parse. Skewed, the slots' first
/// bytes spread over the sets.
const SLOT_SKEW: usize = 1536;

/// A reader's receive buffers and what the last [`Datagrams::receive`] put in them.
#[derive(Debug)]
pub(super) struct Datagrams {
    /// [`RECEIVE_MANY`] slots of `slot` bytes, each `stride` bytes after the one before.
    bytes: Vec<u8>,
    slot: usize,
    stride: usize,
    /// The length of each datagram received by the last call, in slot order.
    lens: Vec<usize>,
}

/// One received datagram.
#[derive(Debug, PartialEq)]
pub(super) enum Datagram<'a> {
    /// Within the length limit.
    Within(&'a [u8]),
    /// Longer than the limit: these are its first bytes.
    TooLong(&'a [u8]),
}

impl Datagrams {
    /// Buffers for datagrams of at most `limit` bytes.
    pub(super) fn new(limit: usize) -> Self {
        // One byte more than the limit, so that a datagram over it shows as such.
        let slot = limit + 1;
        let stride = slot.next_multiple_of(4096) + SLOT_SKEW;
        Datagrams {
            bytes: vec![0; stride * RECEIVE_MANY],
            slot,
            stride,
            lens: Vec::with_capacity(RECEIVE_MANY),
        }
    }

    /// Receives up to `max` (at most [`RECEIVE_MANY`]) datagrams already queued on `socket`,
    /// without waiting: `WouldBlock` when none is. Returns how many it received.
    pub(super) fn receive(&mut self, socket: BorrowedFd<'_>, max: usize) -> io::Result<usize> {
        let max = max.clamp(1, RECEIVE_MANY);
        // Built per call: the headers hold raw pointers, so a reader cannot keep them across
        // an await of its (sendable) task.
        let mut headers = MultiHeaders::<()>::preallocate(max, None);
        let mut slices: Vec<[IoSliceMut<'_>; 1]> = self
            .bytes
            .chunks_mut(self.stride)
            .take(max)
            .map(|slot| [IoSliceMut::new(&mut slot[..self.slot])])
            .collect();
        self.lens.clear();
        let received = recvmmsg(
            socket.as_raw_fd(),
            &mut headers,
            slices.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        self.lens.extend(received.map(|message| message.bytes));
        Ok(self.lens.len())
    }

    /// The datagrams the last [`Datagrams::receive`] received, in order.
    pub(super) fn received(&self) -> impl Iterator<Item = Datagram<'_>> {
        self.lens
            .iter()
            .zip(self.bytes.chunks(self.stride))
            .map(|(&len, slot)| {
                let bytes = &slot[..len];
                if len == self.slot {
                    Datagram::TooLong(bytes)
                } else {
                    Datagram::Within(bytes)
                }
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;
    use std::os::unix::net::UnixDatagram;

    /// A receiver and its sender: a datagram is queued at the receiver by the time `send`
    /// returns (a Unix pair, unlike UDP, never defers that to the kernel's softirq thread).
    fn pair() -> (UnixDatagram, UnixDatagram) {
        let (receiver, sender) = UnixDatagram::pair().unwrap();
        receiver.set_nonblocking(true).unwrap();
        (receiver, sender)
    }

    #[test]
    fn one_call_takes_what_is_queued_in_order_and_marks_what_is_too_long() {
        let (receiver, sender) = pair();
        let mut datagrams = Datagrams::new(8);
        for payload in [
            &b"a:1|c"[..],
            b"exactly8",
            b"nine bytes and more",
            b"",
            b"b:2|g",
        ] {
            sender.send(payload).unwrap();
        }
        assert_eq!(datagrams.receive(receiver.as_fd(), 10).unwrap(), 5);
        assert_eq!(
            datagrams.received().collect::<Vec<_>>(),
            [
                Datagram::Within(b"a:1|c"),
                Datagram::Within(b"exactly8"),
                // Its first limit + 1 bytes.
                Datagram::TooLong(b"nine byte"),
                Datagram::Within(b""),
                Datagram::Within(b"b:2|g"),
            ]
        );
        let empty = datagrams.receive(receiver.as_fd(), 10).unwrap_err();
        assert_eq!(empty.kind(), io::ErrorKind::WouldBlock);
    }

    #[test]
    fn a_call_takes_at_most_what_it_is_asked_for_and_at_most_its_slots() {
        let (receiver, sender) = pair();
        let mut datagrams = Datagrams::new(16);
        for i in 0..RECEIVE_MANY + 5 {
            sender.send(format!("m.{i}:1|c").as_bytes()).unwrap();
        }
        assert_eq!(datagrams.receive(receiver.as_fd(), 2).unwrap(), 2);
        assert_eq!(
            datagrams.received().collect::<Vec<_>>(),
            [Datagram::Within(b"m.0:1|c"), Datagram::Within(b"m.1:1|c")]
        );
        assert_eq!(
            datagrams.receive(receiver.as_fd(), usize::MAX).unwrap(),
            RECEIVE_MANY
        );
        assert_eq!(
            datagrams.received().next(),
            Some(Datagram::Within(b"m.2:1|c"))
        );
        assert_eq!(datagrams.receive(receiver.as_fd(), usize::MAX).unwrap(), 3);
        assert_eq!(
            datagrams.received().last(),
            Some(Datagram::Within(
                format!("m.{}:1|c", RECEIVE_MANY + 4).as_bytes()
            ))
        );
    }
}
