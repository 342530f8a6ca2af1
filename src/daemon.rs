//! Wiring: binds the sockets, starts the actor tree (aggregator, registry and its family
//! actors), the listeners and the HTTP server, and shuts them down in order: stop reading,
//! deliver and apply what was read, publish final snapshots, stop serving.

use anyhow::Context as _;
use ractor::Actor;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, UdpSocket, UnixDatagram};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::aggregator::AggregatorActor;
use crate::barrier::Barrier;
use crate::config::{self, Settings, DEFAULT_READ_BUFFER};
use crate::family::FamilyContext;
use crate::http::{self, HttpContext};
use crate::ingest::IngestConfig;
use crate::limits::{QueueBound, SeriesBudget};
use crate::mapping::Mapper;
use crate::registry::RegistryActor;
use crate::reload::Reloader;
use crate::statsd::listener::{self, DatagramSocket, ListenerContext};
use crate::telemetry::Telemetry;

/// How long each shutdown step may take before tallyd moves on.
const STEP_TIMEOUT: Duration = Duration::from_secs(3);

/// Runs a datagram reader on a thread of its own, in a single-threaded runtime; the future
/// returned ends when the reader does. A reader wakes for every pause and every datagram that
/// finds it waiting: on the shared runtime, a timer or socket that fires while the workers
/// sleep wakes them all, one to run the reader and the others to find nothing to do. On its own
/// thread it wakes that thread alone. What it sends the family actors reaches them on the
/// shared runtime all the same.
fn on_own_thread(
    name: String,
    reader: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<impl Future<Output = ()>> {
    // No collection at each park: a busy reader parks at every pause between its reads, and
    // its own allocations take back what the families freed into its pages. It gives memory
    // back as it goes to wait for input, and at each prune tick after (`Pipeline::waiting`).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .with_context(|| format!("cannot start the runtime of {name}"))?;
    let runtime = OwnRuntime(Some(runtime));
    let (done, ended) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name(name.clone())
        .spawn(move || {
            if let Some(runtime) = &runtime.0 {
                runtime.block_on(reader);
            }
            let _ = done.send(());
        })
        .with_context(|| format!("cannot start thread {name}"))?;
    Ok(async move {
        // An error means the thread died with its reader; there is nothing left to wait for.
        let _ = ended.await;
    })
}

/// A reader's runtime, shut down without waiting when dropped: should its thread fail to
/// start, it is dropped here, in the shared runtime, where waiting is not allowed.
struct OwnRuntime(Option<tokio::runtime::Runtime>);

impl Drop for OwnRuntime {
    fn drop(&mut self) {
        if let Some(runtime) = self.0.take() {
            runtime.shutdown_background();
        }
    }
}

/// The sockets tallyd serves, bound before [`run`] so callers (and tests) can bind port 0 and
/// read the real addresses.
#[derive(Debug)]
pub struct Sockets {
    /// StatsD over UDP, unless disabled.
    pub udp: Option<UdpSocket>,
    /// StatsD over TCP, unless disabled.
    pub tcp: Option<TcpListener>,
    /// StatsD over a Unix datagram socket, if configured, with its path (removed at exit).
    pub unixgram: Option<(UnixDatagram, PathBuf)>,
    /// The HTTP server.
    pub http: TcpListener,
}

impl Sockets {
    /// Binds every socket the settings ask for; an error names the setting.
    pub async fn bind(settings: &Settings) -> anyhow::Result<Sockets> {
        let addr = |key: &str, value: &str| {
            config::resolve(value).map_err(|e| anyhow::anyhow!("{key}: {e}"))
        };
        let udp = match settings.statsd.listen_udp.as_str() {
            "" => None,
            a => Some(
                bind_udp(addr("statsd.listen_udp", a)?, settings.statsd.read_buffer)
                    .with_context(|| format!("cannot bind StatsD UDP on {a}"))?,
            ),
        };
        let tcp = match settings.statsd.listen_tcp.as_str() {
            "" => None,
            a => Some(
                TcpListener::bind(addr("statsd.listen_tcp", a)?)
                    .await
                    .with_context(|| format!("cannot bind StatsD TCP on {a}"))?,
            ),
        };
        let unixgram = match settings.statsd.listen_unixgram.as_str() {
            "" => None,
            path => Some(bind_unixgram(
                Path::new(path),
                &settings.statsd.unixsocket_mode,
            )?),
        };
        let web = &settings.web.listen_address;
        let http = TcpListener::bind(addr("web.listen_address", web)?)
            .await
            .with_context(|| format!("cannot bind HTTP on {web}"))?;
        Ok(Sockets {
            udp,
            tcp,
            unixgram,
            http,
        })
    }

    fn describe(&self) -> [String; 4] {
        let udp = self.udp.as_ref().and_then(|s| s.local_addr().ok());
        let tcp = self.tcp.as_ref().and_then(|s| s.local_addr().ok());
        let show = |a: Option<std::net::SocketAddr>| a.map_or("off".into(), |a| a.to_string());
        let unixgram = self
            .unixgram
            .as_ref()
            .map_or("off".into(), |(_, path)| path.display().to_string());
        [
            show(udp),
            show(tcp),
            unixgram,
            show(self.http.local_addr().ok()),
        ]
    }
}

/// Binds the StatsD UDP socket with the requested receive buffer.
fn bind_udp(addr: std::net::SocketAddr, read_buffer: usize) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if read_buffer > 0 {
        socket.set_recv_buffer_size(read_buffer)?;
        // Linux doubles the request for its own bookkeeping, after capping it at rmem_max.
        // A process with CAP_NET_ADMIN (root on a host) may go past the cap, as journald
        // does; any other is refused, and keeps the capped buffer.
        if socket.recv_buffer_size()? < read_buffer.saturating_mul(2) {
            use nix::sys::socket::{setsockopt, sockopt::RcvBufForce};
            if setsockopt(&socket, RcvBufForce, &read_buffer).is_ok() {
                info!(
                    requested = read_buffer,
                    got = socket.recv_buffer_size()?,
                    "UDP receive buffer set past net.core.rmem_max (CAP_NET_ADMIN)"
                );
            }
        }
        let got = socket.recv_buffer_size()?;
        // Capping the default is normal on most hosts: worth a warning only when asked for.
        if got < read_buffer.saturating_mul(2) {
            if read_buffer == DEFAULT_READ_BUFFER {
                info!(
                    requested = read_buffer,
                    got, "UDP receive buffer capped by the kernel (net.core.rmem_max)"
                );
            } else {
                warn!(
                    requested = read_buffer,
                    got, "UDP receive buffer capped by the kernel (net.core.rmem_max)"
                );
            }
        }
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// Binds a Unix datagram socket at `path` with permissions `mode` (octal), replacing a stale
/// socket file left by an earlier run but never another kind of file.
fn bind_unixgram(path: &Path, mode: &str) -> anyhow::Result<(UnixDatagram, PathBuf)> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        anyhow::ensure!(
            meta.file_type().is_socket(),
            "statsd.listen_unixgram: {} exists and is not a socket",
            path.display()
        );
        std::fs::remove_file(path)
            .with_context(|| format!("cannot remove the stale socket {}", path.display()))?;
    }
    let socket = UnixDatagram::bind(path)
        .with_context(|| format!("cannot bind StatsD Unix datagram socket {}", path.display()))?;
    let mode = u32::from_str_radix(mode, 8).context("statsd.unixsocket_mode")?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot set mode {mode:o} on {}", path.display()))?;
    Ok((socket, path.to_owned()))
}

/// Runs tallyd on bound sockets until `shutdown` completes, then shuts down in order.
/// `mapper` holds the rules of the mapping file the settings name (loaded by the caller, so a
/// bad file fails start-up before anything is bound).
pub async fn run(
    settings: Settings,
    mapper: Mapper,
    sockets: Sockets,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    // SIGHUP reloads the mapping; its handler goes in before anything can send one.
    let mut hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let telemetry = Arc::new(Telemetry::new());
    telemetry.mapping_loaded.set(mapper.len() as i64);
    let (aggregator, aggregator_task) = Actor::spawn(None, AggregatorActor, ())
        .await
        .context("cannot start the aggregator")?;
    let family_ctx = Arc::new(FamilyContext {
        aggregator: aggregator.clone(),
        telemetry: telemetry.clone(),
        publish_interval: settings.actors.publish_interval,
        flush_interval: settings.statsd.event_flush_interval,
        hibernate_after: Some(settings.actors.hibernate_after).filter(|after| !after.is_zero()),
        set_window: settings.statsd.set_window,
        budget: Arc::new(SeriesBudget::new(
            settings.limits.max_series,
            settings.limits.max_series_per_family,
        )),
    });
    let (registry, registry_task) = Actor::spawn(None, RegistryActor, family_ctx)
        .await
        .context("cannot start the registry")?;

    let [udp_addr, tcp_addr, unixgram_addr, http_addr] = sockets.describe();
    let stop_reading = CancellationToken::new();
    let stop_serving = CancellationToken::new();
    let barrier = Arc::new(Barrier::default());
    let listener_ctx = ListenerContext {
        registry: registry.clone(),
        telemetry: telemetry.clone(),
        receive_batch: settings.statsd.receive_batch,
        flush_interval: settings.statsd.event_flush_interval,
        flush_threshold: settings.statsd.event_flush_threshold,
        tcp_max_line_bytes: settings.statsd.tcp_max_line_bytes,
        max_datagram_bytes: settings.limits.max_datagram_bytes,
        queue: Arc::new(QueueBound::new(settings.limits.max_queued_updates)),
        ingest: Arc::new(IngestConfig::new(&settings, mapper)),
        barrier: barrier.clone(),
    };
    let reloader = Arc::new(Reloader::new(
        settings.statsd.mapping_config.clone().into(),
        listener_ctx.ingest.clone(),
        telemetry.clone(),
    ));
    let on_hangup = reloader.clone();
    let hangup_task = tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            // The outcome is counted and logged by the reloader.
            let _ = on_hangup.reload();
        }
    });
    let mut listeners = JoinSet::new();
    if let Some(udp) = sockets.udp {
        telemetry.udp_drops.watch(&udp);
        let readers = match settings.statsd.udp_readers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let udp = udp.into_std().context("UDP socket")?;
        let pause = listener::udp_pause(&udp, settings.statsd.receive_coalesce);
        let socket = DatagramSocket::Udp(udp);
        // Each reader its own handle, each registered apart; all made before any reader runs.
        let mut sockets = (1..readers)
            .map(|_| socket.try_clone())
            .collect::<std::io::Result<Vec<_>>>()
            .context("UDP socket")?;
        sockets.push(socket);
        for (n, socket) in sockets.into_iter().enumerate() {
            listeners.spawn(on_own_thread(
                format!("tallyd-udp-{n}"),
                listener::serve_datagrams(
                    socket,
                    pause,
                    listener_ctx.clone(),
                    stop_reading.clone(),
                ),
            )?);
        }
    }
    let unixgram_path = sockets.unixgram.as_ref().map(|(_, path)| path.clone());
    if let Some((unix, _)) = sockets.unixgram {
        let socket = DatagramSocket::Unix(unix.into_std().context("Unix datagram socket")?);
        // No pause: a Unix datagram socket's queue is short (see `listener::udp_pause`).
        listeners.spawn(on_own_thread(
            "tallyd-unixgram".into(),
            listener::serve_datagrams(
                socket,
                Duration::ZERO,
                listener_ctx.clone(),
                stop_reading.clone(),
            ),
        )?);
    }
    if let Some(tcp) = sockets.tcp {
        listeners.spawn(listener::serve_tcp(tcp, listener_ctx, stop_reading.clone()));
    }
    let http_ctx = Arc::new(HttpContext {
        aggregator: aggregator.clone(),
        barrier,
        max_family_self_metrics: settings.limits.max_family_self_metrics,
        registry: registry.clone(),
        telemetry: telemetry.clone(),
        telemetry_path: settings.web.telemetry_path.clone(),
        fault_injection: settings.web.enable_fault_injection,
        reloader: settings.web.enable_lifecycle.then_some(reloader),
        ready: AtomicBool::new(true),
        limits: http::Limits::from(&settings.web),
        // Already checked by Settings::load; read again here, where it is used.
        web: crate::webconfig::WebConfig::from_settings(&settings.web)?,
    });
    let http_task = tokio::spawn(http::serve(
        sockets.http,
        http_ctx.clone(),
        stop_serving.clone(),
    ));
    info!(
        udp = %udp_addr,
        tcp = %tcp_addr,
        unixgram = %unixgram_addr,
        http = %http_addr,
        telemetry_path = %settings.web.telemetry_path,
        "tallyd listening"
    );

    shutdown.await;
    info!("shutting down: stop reading, apply what was received, publish, serve the grace period, stop");
    http_ctx.ready.store(false, Ordering::Relaxed);
    stop_reading.cancel();
    let drained = tokio::time::timeout(STEP_TIMEOUT, async {
        while listeners.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        warn!("listeners did not stop in time");
        listeners.abort_all();
    }
    // Families apply every batch already in their mailboxes, then publish in post_stop.
    registry
        .get_cell()
        .drain_children_and_wait(Some(STEP_TIMEOUT))
        .await;
    registry.stop(None);
    let grace = settings.shutdown.grace_period;
    if !grace.is_zero() {
        info!(
            ?grace,
            "serving the final values until the grace period ends"
        );
        tokio::time::sleep(grace).await;
    }
    stop_serving.cancel();
    if let Err(e) = http_task.await {
        warn!(error = %e, "HTTP server task failed");
    }
    if aggregator.drain_and_wait(Some(STEP_TIMEOUT)).await.is_err() {
        warn!("aggregator did not stop in time");
    }
    hangup_task.abort();
    if let Some(path) = unixgram_path {
        let _ = std::fs::remove_file(path);
    }
    let _ = registry_task.await;
    let _ = aggregator_task.await;
    info!(
        lines = telemetry.lines.get(),
        updates = telemetry.updates.get(),
        dropped = telemetry.dropped_total(),
        "stopped"
    );
    Ok(())
}
