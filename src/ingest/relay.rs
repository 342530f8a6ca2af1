//! Relay (statsd_exporter's `--statsd.relay.address`): every line a listener reads goes on,
//! unchanged, to another StatsD server over UDP, whatever tallyd makes of it.
//!
//! Each listener task packs its lines, one `\n` after each, into a packet of at most
//! `statsd.relay_packet_length` bytes, sent when the next line would not fit and at every
//! flush of the task's batcher (`statsd.event_flush_interval` at the latest). A line longer
//! than a packet can hold is not relayed. Sending never waits: the socket is non-blocking, and
//! a packet the kernel refuses (the target is down and said so, the send buffer is full) is
//! dropped. So the relay holds at most one packet per listener task whatever the target does,
//! and what it could not send is counted, per target:
//!
//! - `tallyd_relay_lines_total`, `tallyd_relay_packets_total`: sent;
//! - `tallyd_relay_lines_dropped_total{reason}`: `too_long`, or `send_failed` (in the packets
//!   counted in `tallyd_relay_send_errors_total`).

use prometheus::IntCounter;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs, UdpSocket};
use std::sync::Arc;

use crate::telemetry::{LogLimiter, Telemetry};

/// Failed sends are logged at most once a second.
static SEND_LOG: LogLimiter = LogLimiter::new(1);

/// Where relayed lines go: one socket for every listener task, the packet length, and the
/// counters.
#[derive(Debug)]
pub struct RelayTarget {
    socket: UdpSocket,
    packet_length: usize,
    lines: IntCounter,
    packets: IntCounter,
    send_errors: IntCounter,
    too_long: IntCounter,
    send_failed: IntCounter,
}

impl RelayTarget {
    /// A relay to `target` (`host:port`, resolved once, the first address taken), packing at
    /// most `packet_length` bytes a packet, counted in `telemetry` under `target`.
    pub fn new(target: &str, packet_length: usize, telemetry: &Telemetry) -> io::Result<Self> {
        let address = target.to_socket_addrs()?.next().ok_or_else(|| {
            io::Error::new(io::ErrorKind::NotFound, "the name resolves to no address")
        })?;
        let local: SocketAddr = match address {
            SocketAddr::V4(_) => "0.0.0.0:0".parse().expect("valid address"),
            SocketAddr::V6(_) => "[::]:0".parse().expect("valid address"),
        };
        let socket = UdpSocket::bind(local)?;
        socket.connect(address)?;
        socket.set_nonblocking(true)?;
        let [lines, packets, send_errors, too_long, send_failed] = telemetry.relay(target);
        Ok(RelayTarget {
            socket,
            packet_length,
            lines,
            packets,
            send_errors,
            too_long,
            send_failed,
        })
    }
}

/// A listener task's packet being filled.
#[derive(Debug)]
pub(super) struct Relay {
    target: Arc<RelayTarget>,
    packet: Vec<u8>,
    /// Lines in `packet`.
    lines: u64,
    /// Lines too long to relay, not yet counted.
    too_long: u64,
}

impl Relay {
    pub(super) fn new(target: Arc<RelayTarget>) -> Self {
        Relay {
            packet: Vec::with_capacity(target.packet_length),
            target,
            lines: 0,
            too_long: 0,
        }
    }

    /// Adds a line (without its newline); sends the packet first when the line would not fit.
    #[inline]
    pub(super) fn push(&mut self, line: &[u8]) {
        let room = self.target.packet_length;
        if line.len() >= room {
            self.too_long += 1;
            return;
        }
        if self.packet.len() + line.len() + 1 > room {
            self.send();
        }
        self.packet.extend_from_slice(line);
        self.packet.push(b'\n');
        self.lines += 1;
    }

    /// Sends the packet, if it holds anything, and counts what was sent or dropped.
    pub(super) fn send(&mut self) {
        let target = &self.target;
        if self.too_long > 0 {
            target.too_long.inc_by(std::mem::take(&mut self.too_long));
        }
        if self.packet.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.lines);
        match target.socket.send(&self.packet) {
            Ok(_) => {
                target.packets.inc();
                target.lines.inc_by(lines);
            }
            Err(error) => {
                target.send_errors.inc();
                target.send_failed.inc_by(lines);
                if let Some(suppressed) = SEND_LOG.allow() {
                    tracing::warn!(%error, lines, suppressed, "relay packet not sent");
                }
            }
        }
        self.packet.clear();
    }
}
