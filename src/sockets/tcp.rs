//! StatsD over TCP: an acceptor with one task per connection, reading newline-separated
//! lines into its own pipeline. At most `statsd.tcp_max_connections` are open at once: past
//! it a new connection takes the slot of one that has completed no line for a second, or of a
//! new one that has sent nothing (see [`Slots`]), closed for it (counted), or is closed as it
//! is accepted (counted). A connection that completes no line for `statsd.tcp_idle_timeout`
//! is closed (counted). Clients that open connections and never send, or send a byte now and
//! then, thus cannot keep out one that sends lines.
//!
//! A connection that ends hands the families it reached since the last scrape to the
//! acceptor, whose own pipeline takes part in the scrape barrier: a scrape after a client
//! closed its connection waits until those families have published, as it would have had the
//! connection stayed open.

use std::io;
use std::os::fd::AsRawFd;
use std::time::Duration;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::fds::AcceptBackoff;
use super::slots::{Slot, Slots};
use super::ListenerContext;
use crate::ingest::{Batcher, Due};
use crate::routing::Touched;
use crate::statsd::parse::RejectReason;
use crate::telemetry::{ListenerKind, LogLimiter};

/// Connections refused at the cap, logged per second.
static REFUSED_LOG: LogLimiter = LogLimiter::new(1);

/// Accepts StatsD TCP connections until `shutdown`, each served by its own task; waits for
/// those tasks to dispatch what they received before returning.
pub(crate) async fn serve_tcp(
    listener: TcpListener,
    ctx: ListenerContext,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    // The families that ended connections reached, synced at the next scrape.
    let mut pipe = ctx.pipelines.pipeline(ListenerKind::Tcp);
    let (handover, mut handed) = mpsc::unbounded_channel::<Touched>();
    let slots = Slots::new(ctx.tcp_max_connections);
    ctx.telemetry
        .tcp_connections_limit
        .set(ctx.tcp_max_connections as i64);
    let mut backoff = AcceptBackoff::default();
    // After a failed accept, accepts wait until then; scrapes and handovers go on.
    let mut accepts_resume: Option<Instant> = None;
    loop {
        // Scrapes and handovers first: a flood of connections must not hold up a scrape.
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            Some(touched) = handed.recv() => pipe.adopt(touched),
            due = pipe.due() => {
                if matches!(due, Due::Scrape(_)) {
                    // A connection that ended before the scrape has handed over its families.
                    while let Ok(touched) = handed.try_recv() {
                        pipe.adopt(touched);
                    }
                }
                pipe.handle(due).await;
            }
            () = tokio::time::sleep_until(accepts_resume.unwrap_or_else(Instant::now)), if accepts_resume.is_some() => {
                accepts_resume = None;
            }
            accepted = listener.accept(), if accepts_resume.is_none() => match accepted {
                Ok((stream, peer)) => {
                    backoff.accepted();
                    ctx.telemetry.tcp_connections.inc();
                    let Some((slot, evicted)) = slots.take(stream.as_raw_fd()).await else {
                        refuse(&ctx, peer);
                        continue;
                    };
                    if evicted {
                        ctx.telemetry.tcp_connections_evicted.inc();
                    }
                    debug!(%peer, "StatsD TCP connection");
                    let connection = Connection {
                        ctx: ctx.clone(),
                        shutdown: shutdown.clone(),
                        slot,
                        handover: handover.clone(),
                    };
                    connections.spawn(connection.serve(stream));
                }
                Err(e) => {
                    let wait = backoff.failed(&ctx.telemetry, "statsd_tcp", &e);
                    accepts_resume = Some(Instant::now() + wait);
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    while connections.join_next().await.is_some() {}
}

/// Closes a connection accepted past `statsd.tcp_max_connections` (by dropping it), counted.
fn refuse(ctx: &ListenerContext, peer: std::net::SocketAddr) {
    ctx.telemetry.tcp_connections_refused.inc();
    if let Some(suppressed) = REFUSED_LOG.allow() {
        warn!(
            %peer,
            max_connections = ctx.tcp_max_connections,
            suppressed,
            "StatsD TCP connection refused: statsd.tcp_max_connections are open"
        );
    }
}

/// When a connection that completes no line is closed: `timeout` from now, or never.
fn idle_deadline(timeout: Option<Duration>) -> Instant {
    // A century stands for never: a timer must have a deadline.
    Instant::now() + timeout.unwrap_or(Duration::from_secs(100 * 365 * 24 * 3600))
}

/// What a connection's task holds besides its stream.
struct Connection {
    ctx: ListenerContext,
    shutdown: CancellationToken,
    /// Its place under `statsd.tcp_max_connections`, given back as the task ends.
    slot: Slot,
    /// Where the families it reached go as it ends (see the module's doc).
    handover: mpsc::UnboundedSender<Touched>,
}

impl Connection {
    async fn serve(self, stream: TcpStream) {
        let ctx = &self.ctx;
        ctx.telemetry.tcp_connections_open.inc();
        let touched = serve_connection(stream, ctx, &self.shutdown, &self.slot).await;
        // The acceptor is gone only at shutdown, when no scrape is left to wait.
        let _ = self.handover.send(touched);
        ctx.telemetry.tcp_connections_open.dec();
    }
}

/// Reads a connection until it ends; returns the families it reached since the last scrape.
async fn serve_connection(
    mut stream: TcpStream,
    ctx: &ListenerContext,
    shutdown: &CancellationToken,
    slot: &Slot,
) -> Touched {
    let mut pipe = ctx.pipelines.pipeline(ListenerKind::Tcp);
    let mut buf = Vec::with_capacity(16 * 1024);
    let idle = tokio::time::sleep_until(idle_deadline(ctx.tcp_idle_timeout));
    tokio::pin!(idle);
    loop {
        pipe.waiting();
        if buf.capacity() - buf.len() < 4096 {
            buf.reserve(16 * 1024);
        }
        let read = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            due = pipe.due() => {
                let mut open = true;
                if matches!(due, Due::Scrape(_)) {
                    // What the client sent before the scrape goes in too.
                    match read_queued(&stream, &mut buf) {
                        Ok(Some(n)) => match consume(ctx, &mut pipe.batcher, &mut buf, n) {
                            Consumed::Lines => {
                                slot.holder.served();
                                idle.as_mut().reset(idle_deadline(ctx.tcp_idle_timeout));
                            }
                            Consumed::Partial => {}
                            Consumed::Closed => open = false,
                        },
                        Ok(None) => {}
                        Err(e) => {
                            connection_error(ctx, &e);
                            open = false;
                        }
                    }
                }
                pipe.handle(due).await;
                if !open {
                    break;
                }
                continue;
            }
            () = &mut idle => {
                ctx.telemetry.tcp_idle_closed.inc();
                debug!("StatsD TCP connection idle; closing it");
                break;
            }
            () = slot.holder.evicted() => {
                // What came in the meantime goes in: only a partial line is lost.
                if let Ok(Some(n)) = read_queued(&stream, &mut buf) {
                    consume(ctx, &mut pipe.batcher, &mut buf, n);
                }
                debug!("StatsD TCP connection closed for a new one: it had completed no line for a while");
                break;
            }
            read = stream.read_buf(&mut buf) => read,
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                connection_error(ctx, &e);
                break;
            }
        };
        match consume(ctx, &mut pipe.batcher, &mut buf, n) {
            Consumed::Lines => {
                slot.holder.served();
                idle.as_mut().reset(idle_deadline(ctx.tcp_idle_timeout));
            }
            Consumed::Partial => {}
            Consumed::Closed => break,
        }
        pipe.after_read().await;
    }
    pipe.finish().await
}

/// What [`consume`] made of a read.
enum Consumed {
    /// At least one line completed, and was ingested.
    Lines,
    /// No line completed yet.
    Partial,
    /// The connection must close: end of stream, or a line over the limit.
    Closed,
}

/// Counts and logs a read error, which ends its connection.
fn connection_error(ctx: &ListenerContext, e: &io::Error) {
    ctx.telemetry.tcp_connection_errors.inc();
    debug!(error = %e, "StatsD TCP read error");
}

/// Reads what the kernel holds for `stream` into `buf` without waiting (at most 1 MiB): the
/// bytes read, `Some(0)` at end of stream, `None` when nothing was there.
fn read_queued(stream: &TcpStream, buf: &mut Vec<u8>) -> io::Result<Option<usize>> {
    use std::io::Read;
    let mut chunk = [0u8; 16 * 1024];
    let mut total = 0;
    while total < 1 << 20 {
        match (&*socket2::SockRef::from(stream)).read(&mut chunk) {
            // Bytes before the end are taken now; the next read sees the end again.
            Ok(0) => return Ok(Some(total)),
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                total += n;
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok((total > 0).then_some(total))
}

/// Ingests the complete lines in `buf` after `n` more bytes were read into it (0: end of
/// stream, where the last line needs no newline). Only the new bytes are searched for the end
/// of a line: the bytes before them hold none, or they would have been taken, so a line sent a
/// byte at a time costs its length once, not its length squared.
fn consume(ctx: &ListenerContext, batcher: &mut Batcher, buf: &mut Vec<u8>, n: usize) -> Consumed {
    if n > 0 {
        ctx.telemetry.packets(ListenerKind::Tcp, 1);
    }
    let new = buf.len() - n;
    let complete = if n == 0 {
        buf.len()
    } else {
        buf[new..]
            .iter()
            .rposition(|&b| b == b'\n')
            .map_or(0, |i| new + i + 1)
    };
    let too_long = buf[..complete]
        .split(|&b| b == b'\n')
        .any(|line| line.len() > ctx.tcp_max_line_bytes)
        || buf.len() - complete > ctx.tcp_max_line_bytes;
    if too_long {
        // Like statsd_exporter: count it, drop the connection, keep what came before.
        let lines = buf[..complete].split(|&b| b == b'\n');
        for line in lines.take_while(|l| l.len() <= ctx.tcp_max_line_bytes) {
            batcher.ingest(line);
        }
        batcher.reject_unparsed(RejectReason::LineTooLong, &buf[..256.min(buf.len())]);
        ctx.telemetry.tcp_too_long_lines.inc();
        warn!(
            limit = ctx.tcp_max_line_bytes,
            "StatsD TCP line too long; closing the connection"
        );
        return Consumed::Closed;
    }
    if complete == 0 {
        return if n > 0 {
            Consumed::Partial
        } else {
            Consumed::Closed
        };
    }
    batcher.ingest(&buf[..complete]);
    buf.drain(..complete);
    if n > 0 {
        Consumed::Lines
    } else {
        Consumed::Closed
    }
}
