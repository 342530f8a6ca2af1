//! StatsD over TCP: an acceptor with one task per connection, reading newline-separated
//! lines into its own pipeline.

use std::io;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::ListenerContext;
use crate::ingest::{Batcher, Due};
use crate::statsd::parse::RejectReason;
use crate::telemetry::ListenerKind;

/// Accepts StatsD TCP connections until `shutdown`, each served by its own task; waits for
/// those tasks to dispatch what they received before returning.
pub(crate) async fn serve_tcp(
    listener: TcpListener,
    ctx: ListenerContext,
    shutdown: CancellationToken,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    ctx.telemetry.tcp_connections.inc();
                    debug!(%peer, "StatsD TCP connection");
                    connections.spawn(serve_connection(stream, ctx.clone(), shutdown.clone()));
                }
                Err(e) => warn!(error = %e, "StatsD TCP accept failed"),
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    while connections.join_next().await.is_some() {}
}

async fn serve_connection(
    mut stream: TcpStream,
    ctx: ListenerContext,
    shutdown: CancellationToken,
) {
    let mut pipe = ctx.pipelines.pipeline();
    let mut buf = Vec::with_capacity(16 * 1024);
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
                        Ok(Some(n)) => open = consume(&ctx, &mut pipe.batcher, &mut buf, n),
                        Ok(None) => {}
                        Err(e) => {
                            connection_error(&ctx, &e);
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
            read = stream.read_buf(&mut buf) => read,
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                connection_error(&ctx, &e);
                break;
            }
        };
        if !consume(&ctx, &mut pipe.batcher, &mut buf, n) {
            break;
        }
        pipe.after_read().await;
    }
    pipe.flush().await;
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
/// stream, where the last line needs no newline); false when the connection must close (end
/// of stream, or a line over the limit).
fn consume(ctx: &ListenerContext, batcher: &mut Batcher, buf: &mut Vec<u8>, n: usize) -> bool {
    if n > 0 {
        ctx.telemetry.packets(ListenerKind::Tcp, 1);
    }
    let complete = if n == 0 {
        buf.len()
    } else {
        buf.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1)
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
        return false;
    }
    batcher.ingest(&buf[..complete]);
    buf.drain(..complete);
    n > 0
}
