//! The `tallyd` binary: flags, settings, logging, sockets, then [`tallyd::daemon::run`] until
//! SIGINT or SIGTERM.

use clap::Parser;
use std::process::ExitCode;
use tallyd::config::{Cli, LogFormat, Settings};
use tallyd::daemon;
use tallyd::sockets::Sockets;

/// mimalloc rather than glibc's malloc: the hot path allocates small batches on one thread and
/// frees them on another, which glibc serialises on its arena locks (seen in profiles as futex
/// waits) and fragments under name churn.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tallyd::memory::set_purge_delay();
    let cli = Cli::parse();
    let settings = match Settings::load(&cli) {
        Ok(settings) => settings,
        Err(error) => {
            eprintln!("tallyd: {error}");
            return ExitCode::from(2);
        }
    };
    let mapper = match tallyd::reload::load(&settings.statsd.mapping_config) {
        Ok(mapper) => mapper,
        Err(error) => {
            eprintln!("tallyd: {error}");
            return ExitCode::from(2);
        }
    };
    if !cli.explain.is_empty() {
        return explain(
            &cli.explain,
            &tallyd::ingest::IngestConfig::new(&settings, mapper),
        );
    }
    if cli.check_config {
        for warning in mapper.warnings() {
            eprintln!("tallyd: warning: {warning}");
        }
        let path = &settings.statsd.mapping_config;
        if path.is_empty() {
            println!("tallyd: configuration valid; no mapping file");
        } else {
            println!(
                "tallyd: configuration valid; mapping file {}: {} rules",
                path,
                mapper.len()
            );
        }
        return ExitCode::SUCCESS;
    }
    init_logging(&settings);
    for warning in mapper.warnings() {
        tracing::warn!("mapping file: {warning}");
    }
    check_open_file_limit(&settings);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(tallyd::memory::release_freed_memory)
        .build();
    let runtime = match runtime {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tallyd: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        // Handlers go in before the sockets are bound, so a signal sent as soon as tallyd
        // says it is listening is never met by the default action (death by signal).
        let shutdown = shutdown_signal()?;
        let sockets = Sockets::bind(&settings).await?;
        daemon::run(settings, mapper, sockets, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `--explain`: each name's mapping as one JSON object a line; exit code 2, naming the flag,
/// for a name that cannot be explained.
fn explain(asked: &[String], ingest: &tallyd::ingest::IngestConfig) -> ExitCode {
    let telemetry = tallyd::telemetry::Telemetry::new();
    let mapper = ingest.mapper.load();
    for name in asked {
        let explained = tallyd::mapping::explain::explain(
            &mapper,
            ingest.fallback(),
            |n| telemetry.is_reserved(n),
            name,
        );
        match explained {
            Ok(explanation) => match serde_json::to_string(&explanation) {
                Ok(line) => println!("{line}"),
                Err(error) => {
                    eprintln!("tallyd: --explain {name}: {error}");
                    return ExitCode::FAILURE;
                }
            },
            Err(error) => {
                eprintln!("tallyd: --explain {error}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}

fn init_logging(settings: &Settings) {
    // ractor opens an INFO span for every actor it starts and runs: recorded, they would cost
    // each live family actor memory (its formatted fields) and each spawn CPU, for nothing
    // tallyd's own logs do not say. tallyd logs actor failures itself.
    let filter =
        tracing_subscriber::EnvFilter::new(format!("{},ractor=warn", settings.log.level.as_str()));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr);
    match settings.log.format {
        LogFormat::Logfmt => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

/// Installs SIGINT and SIGTERM handlers now; the future completes on the first of them.
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    // Signals whose default action would end tallyd, though nothing asked it to stop: caught
    // and logged instead.
    let mut usr1 = signal(SignalKind::user_defined1())?;
    let mut usr2 = signal(SignalKind::user_defined2())?;
    let mut alarm = signal(SignalKind::alarm())?;
    Ok(async move {
        loop {
            let ignored = tokio::select! {
                _ = interrupt.recv() => break,
                _ = terminate.recv() => break,
                _ = usr1.recv() => "SIGUSR1",
                _ = usr2.recv() => "SIGUSR2",
                _ = alarm.recv() => "SIGALRM",
            };
            tracing::info!(signal = ignored, "signal ignored");
        }
    })
}

/// Descriptors kept for what is not a connection: sockets, the mapping and config files,
/// the runtime's own.
const RESERVED_FDS: u64 = 64;

/// Raises the open file limit to the hard limit, and warns when even that leaves no room for
/// every StatsD TCP and HTTP connection the limits let in.
fn check_open_file_limit(settings: &Settings) {
    let Some(limit) = tallyd::sockets::raise_open_file_limit() else {
        return;
    };
    let connections =
        settings.statsd.tcp_max_connections as u64 + settings.web.max_connections as u64;
    if limit < connections + RESERVED_FDS {
        tracing::warn!(
            open_file_limit = limit,
            tcp_max_connections = settings.statsd.tcp_max_connections,
            web_max_connections = settings.web.max_connections,
            "the open file limit is below the connections the limits let in; lower statsd.tcp_max_connections or raise the limit (LimitNOFILE)"
        );
    }
}
