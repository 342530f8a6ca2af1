//! Wiring: binds the sockets, starts the actor tree (aggregator, registry and its family
//! actors), the listeners and the HTTP server, and shuts them down in order: stop reading,
//! deliver and apply what was read, publish final snapshots, stop serving.

use anyhow::Context as _;
use ractor::concurrency::JoinHandle;
use ractor::{Actor, ActorRef};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::actors::aggregator::{AggregatorActor, AggregatorMsg};
use crate::actors::family::FamilyContext;
use crate::actors::registry::{RegistryActor, RegistryArgs, RegistryMsg};
use crate::barrier::Barrier;
use crate::config::Settings;
use crate::http::api::{Api, ApiLimits, PushStatus};
use crate::http::{self, HttpContext};
use crate::ingest::relay::RelayTarget;
use crate::ingest::{IngestConfig, PipelineContext};
use crate::limits::{QueueBound, SeriesBudget};
use crate::mapping::Mapper;
use crate::reload::Reloader;
use crate::remote_write::{self, RemoteWrite};
use crate::sockets::{self, DatagramSocket, ListenerContext, Pause, Sockets, StatsdSockets};
use crate::telemetry::recent;
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

/// The actor tree: the aggregator, and the registry that supervises the family actors.
struct ActorTree {
    aggregator: ActorRef<AggregatorMsg>,
    aggregator_task: JoinHandle<()>,
    registry: ActorRef<RegistryMsg>,
    registry_task: JoinHandle<()>,
}

impl ActorTree {
    async fn start(
        settings: &Settings,
        telemetry: &Arc<Telemetry>,
        budget: Arc<SeriesBudget>,
    ) -> anyhow::Result<Self> {
        let listed = settings.limits.max_family_self_metrics;
        let (aggregator, aggregator_task) = Actor::spawn(None, AggregatorActor, listed)
            .await
            .context("cannot start the aggregator")?;
        let family_ctx = Arc::new(FamilyContext {
            aggregator: aggregator.clone(),
            telemetry: telemetry.clone(),
            publish_interval: settings.actors.publish_interval,
            flush_interval: settings.statsd.event_flush_interval,
            hibernate_after: Some(settings.actors.hibernate_after).filter(|after| !after.is_zero()),
            set_window: settings.statsd.set_window,
            budget,
        });
        let args = RegistryArgs {
            families: family_ctx,
            max_live: settings.limits.max_live_families,
        };
        let (registry, registry_task) = Actor::spawn(None, RegistryActor, args)
            .await
            .context("cannot start the registry")?;
        Ok(ActorTree {
            aggregator,
            aggregator_task,
            registry,
            registry_task,
        })
    }

    /// Families apply every batch already in their mailboxes, publish in `post_stop`, and
    /// stop; then the registry.
    async fn stop_families(&self) {
        self.registry
            .get_cell()
            .drain_children_and_wait(Some(STEP_TIMEOUT))
            .await;
        self.registry.stop(None);
    }

    /// The aggregator takes the last snapshots, then stops; the tasks end.
    async fn stop(self) {
        if self
            .aggregator
            .drain_and_wait(Some(STEP_TIMEOUT))
            .await
            .is_err()
        {
            warn!("aggregator did not stop in time");
        }
        let _ = self.registry_task.await;
        let _ = self.aggregator_task.await;
    }
}

/// Starts a reader per datagram socket (several on UDP, each on a thread of its own) and the
/// TCP acceptor; they stop reading when `stop` fires.
fn start_listeners(
    settings: &Settings,
    sockets: StatsdSockets,
    ctx: ListenerContext,
    stop: &CancellationToken,
) -> anyhow::Result<JoinSet<()>> {
    let mut listeners = JoinSet::new();
    if let Some(udp) = sockets.udp {
        ctx.telemetry.udp_drops.watch(&udp);
        let readers = match settings.statsd.udp_readers {
            0 => std::thread::available_parallelism().map_or(1, usize::from),
            n => n,
        };
        let udp = udp.into_std().context("UDP socket")?;
        let pause = sockets::udp_pause(&udp, settings.statsd.receive_coalesce);
        let socket = DatagramSocket::Udp(udp);
        // Each reader its own handle, each registered apart; all made before any reader runs.
        let mut handles = (1..readers)
            .map(|_| socket.try_clone())
            .collect::<std::io::Result<Vec<_>>>()
            .context("UDP socket")?;
        handles.push(socket);
        for (n, socket) in handles.into_iter().enumerate() {
            let reader = sockets::serve_datagrams(socket, pause, ctx.clone(), stop.clone());
            listeners.spawn(on_own_thread(format!("tallyd-udp-{n}"), reader)?);
        }
    }
    if let Some((unix, _)) = sockets.unixgram {
        let socket = DatagramSocket::Unix(unix.into_std().context("Unix datagram socket")?);
        // No pause: a Unix datagram socket's queue is short (see `sockets::udp_pause`).
        let reader = sockets::serve_datagrams(socket, Pause::NONE, ctx.clone(), stop.clone());
        listeners.spawn(on_own_thread("tallyd-unixgram".into(), reader)?);
    }
    if let Some(tcp) = sockets.tcp {
        listeners.spawn(sockets::serve_tcp(tcp, ctx, stop.clone()));
    }
    Ok(listeners)
}

/// Reloads the mapping file on every SIGHUP, until aborted.
fn reload_on_hangup(
    mut hangups: tokio::signal::unix::Signal,
    reloader: Arc<Reloader>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        while hangups.recv().await.is_some() {
            // The outcome is counted and logged by the reloader.
            let _ = reloader.reload_in_background().await;
        }
    })
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
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("cannot listen for SIGHUP")?;
    let telemetry = Arc::new(Telemetry::new());
    telemetry.limit_conflict_metrics(settings.limits.max_family_self_metrics);
    telemetry.mapping_loaded.set(mapper.len() as i64);
    if !settings.statsd.mapping_config.is_empty() {
        telemetry
            .recent
            .mapping_loaded(std::time::SystemTime::now());
    }
    if !settings.web.enable_api {
        telemetry.recent.keep_nothing();
    }
    let budget = Arc::new(SeriesBudget::new(
        settings.limits.max_series,
        settings.limits.max_series_per_family,
    ));
    let actors = ActorTree::start(&settings, &telemetry, budget.clone()).await?;
    let addresses = sockets.describe();
    let [udp, tcp, unixgram, http] = addresses.clone();
    let queue = Arc::new(QueueBound::new(settings.limits.max_queued_updates));
    let barrier = Arc::new(Barrier::default());
    let pipelines = Arc::new(PipelineContext {
        registry: actors.registry.clone(),
        telemetry: telemetry.clone(),
        flush_interval: settings.statsd.event_flush_interval,
        flush_threshold: settings.statsd.event_flush_threshold,
        queue: queue.clone(),
        ingest: Arc::new(ingest_config(&settings, mapper, &telemetry)?),
        barrier: barrier.clone(),
    });
    let reloader = Arc::new(Reloader::new(
        settings.statsd.mapping_config.clone().into(),
        pipelines.ingest.clone(),
        telemetry.clone(),
    ));
    let hangup_task = reload_on_hangup(hangups, reloader.clone());
    let pipelines_ingest = pipelines.ingest.clone();
    let listener_ctx = ListenerContext::new(&settings, telemetry.clone(), pipelines);
    let Sockets { statsd, http: web } = sockets;
    let unixgram_file = statsd.unixgram.as_ref().map(|(_, file)| file.clone());
    let stop_reading = CancellationToken::new();
    let listeners = start_listeners(&settings, statsd, listener_ctx, &stop_reading)?;
    let push_metrics = (!settings.remote_write.url.is_empty()).then(|| telemetry.remote_write());
    let http_ctx = Arc::new(HttpContext {
        aggregator: actors.aggregator.clone(),
        barrier,
        registry: actors.registry.clone(),
        telemetry: telemetry.clone(),
        telemetry_path: settings.web.telemetry_path.clone(),
        fault_injection: settings.web.enable_fault_injection,
        reloader: settings.web.enable_lifecycle.then_some(reloader),
        ready: AtomicBool::new(true),
        limits: http::Limits::from(&settings.web),
        // Already checked by Settings::load; read again here, where it is used.
        web: crate::webconfig::WebConfig::from_setting(&settings.web.config_file)?,
        scrapes: Default::default(),
        api: settings.web.enable_api.then(|| Api {
            ingest: pipelines_ingest,
            budget,
            queue,
            limits: ApiLimits {
                max_series: settings.limits.max_series,
                max_live_families: settings.limits.max_live_families,
                max_series_per_family: settings.limits.max_series_per_family,
                max_queued_updates: settings.limits.max_queued_updates,
                tcp_max_connections: settings.statsd.tcp_max_connections,
            },
            mapping_file: settings.statsd.mapping_config.clone(),
            addresses,
            remote_write: push_metrics.clone().map(|metrics| PushStatus {
                url: remote_write::shown_url(&settings.remote_write.url),
                interval: settings.remote_write.interval,
                metrics,
            }),
        }),
    });
    let history = tokio::spawn(recent::sample(telemetry.clone()));
    let remote_write = match push_metrics {
        None => None,
        Some(metrics) => Some(RemoteWrite::start(
            &settings.remote_write,
            ScrapeReader(http_ctx.clone()),
            metrics,
        )?),
    };
    let stop_serving = CancellationToken::new();
    let http_task = tokio::spawn(http::serve(web, http_ctx.clone(), stop_serving.clone()));
    let path = &settings.web.telemetry_path;
    info!(%udp, %tcp, %unixgram, %http, telemetry_path = %path, "tallyd listening");

    shutdown.await;
    info!("shutting down: stop reading, apply what was received, publish, serve the grace period, stop");
    http_ctx.ready.store(false, Ordering::Relaxed);
    stop_reading.cancel();
    stop_listeners(listeners).await;
    actors.stop_families().await;
    if let Some(remote_write) = remote_write {
        remote_write.finish().await;
    }
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
    actors.stop().await;
    hangup_task.abort();
    history.abort();
    if let Some(file) = unixgram_file {
        file.remove_if_own();
    }
    let (lines, updates) = (telemetry.lines.get(), telemetry.updates.get());
    info!(
        lines,
        updates,
        dropped = telemetry.dropped_total(),
        "stopped"
    );
    Ok(())
}

/// What a push reads: the exposition, as a scrape reads it.
struct ScrapeReader(Arc<HttpContext>);

impl remote_write::Exposition for ScrapeReader {
    async fn read(&self) -> Option<bytes::Bytes> {
        http::protobuf_exposition(&self.0).await
    }
}

/// How lines become updates, with the relay the settings ask for.
fn ingest_config(
    settings: &Settings,
    mapper: Mapper,
    telemetry: &Telemetry,
) -> anyhow::Result<IngestConfig> {
    let mut config = IngestConfig::new(settings, mapper);
    let relay = &settings.statsd.relay_address;
    if !relay.is_empty() {
        let packet_length = settings.statsd.relay_packet_length;
        let target = RelayTarget::new(relay, packet_length, telemetry)
            .with_context(|| format!("--statsd.relay.address={relay}: cannot relay there"))?;
        info!(%relay, packet_length, "relaying every line read");
        config.relay = Some(Arc::new(target));
    }
    Ok(config)
}

/// Waits for the listeners to send what they read, up to [`STEP_TIMEOUT`].
async fn stop_listeners(mut listeners: JoinSet<()>) {
    let drained = tokio::time::timeout(STEP_TIMEOUT, async {
        while listeners.join_next().await.is_some() {}
    });
    if drained.await.is_err() {
        warn!("listeners did not stop in time");
        listeners.abort_all();
    }
}
