//! The HTTP server (hyper): `GET /metrics` (or the configured path) in the Prometheus text
//! format, gzipped when the client accepts it; `/-/healthy`, `/-/ready`; a small index page;
//! `POST /-/fault?family=NAME` when fault injection is enabled. Anything else is 404, or 405
//! for a known path with the wrong method.

use bytes::Bytes;
use flate2::{write::GzEncoder, Compression};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{ACCEPT_ENCODING, ALLOW, CONTENT_ENCODING, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use ractor::{rpc::CallResult, ActorRef};
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::aggregator::AggregatorMsg;
use crate::exposition;
use crate::registry::RegistryMsg;
use crate::reload::Reloader;
use crate::telemetry::Telemetry;

/// How long a scrape waits for the aggregator's reply.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the handlers need.
#[derive(Debug)]
pub struct HttpContext {
    /// Source of every family snapshot.
    pub aggregator: ActorRef<AggregatorMsg>,
    /// For fault injection.
    pub registry: ActorRef<RegistryMsg>,
    /// tallyd's own metrics.
    pub telemetry: Arc<Telemetry>,
    /// Path of the exposition.
    pub telemetry_path: String,
    /// Whether `POST /-/fault` is served.
    pub fault_injection: bool,
    /// Reloads the mapping file on `POST /-/reload`; `None` unless `--web.enable-lifecycle`.
    pub reloader: Option<Arc<Reloader>>,
    /// False once shutdown has begun: `/-/ready` then answers 503.
    pub ready: AtomicBool,
}

type Reply = Response<Full<Bytes>>;

/// Serves HTTP on `listener` until `shutdown`, then lets requests in flight finish.
pub async fn serve(listener: TcpListener, ctx: Arc<HttpContext>, shutdown: CancellationToken) {
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    warn!(error = %e, "HTTP accept failed");
                    continue;
                }
            },
        };
        let ctx = ctx.clone();
        let service = service_fn(move |req| {
            let ctx = ctx.clone();
            async move { Ok::<_, std::convert::Infallible>(route(&ctx, req).await) }
        });
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(10))
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "HTTP connection error");
            }
        });
    }
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        warn!("HTTP connections still open after 5s; closing them");
    }
}

async fn route(ctx: &HttpContext, req: Request<Incoming>) -> Reply {
    let path = req.uri().path();
    let method = req.method();
    let read = method == Method::GET || method == Method::HEAD;
    if path == ctx.telemetry_path {
        return if read {
            scrape(ctx, &req).await
        } else {
            not_allowed("GET, HEAD")
        };
    }
    match path {
        "/" if read => html(index_page(&ctx.telemetry_path)),
        "/-/healthy" if read => text(StatusCode::OK, "Healthy.\n"),
        "/-/ready" if read => {
            if ctx.ready.load(Ordering::Relaxed) {
                text(StatusCode::OK, "Ready.\n")
            } else {
                text(StatusCode::SERVICE_UNAVAILABLE, "Shutting down.\n")
            }
        }
        "/" | "/-/healthy" | "/-/ready" => not_allowed("GET, HEAD"),
        "/-/fault" if method == Method::POST => fault(ctx, req.uri().query()).await,
        "/-/reload" if method == Method::POST || method == Method::PUT => reload(ctx),
        "/-/reload" => not_allowed("POST, PUT"),
        "/-/fault" if ctx.fault_injection => not_allowed("POST"),
        _ => text(StatusCode::NOT_FOUND, "Not found.\n"),
    }
}

async fn scrape(ctx: &HttpContext, req: &Request<Incoming>) -> Reply {
    let asked = ctx
        .aggregator
        .call(AggregatorMsg::Scrape, Some(SCRAPE_TIMEOUT))
        .await;
    let view = match asked {
        Ok(CallResult::Success(view)) => view,
        _ => return text(StatusCode::SERVICE_UNAVAILABLE, "Aggregator unavailable.\n"),
    };
    let mut body = String::new();
    exposition::render(&view, &ctx.telemetry, Instant::now(), &mut body);
    let gzip = req
        .headers()
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| enc.split(';').next().is_some_and(|e| e.trim() == "gzip"));
    let builder = Response::builder().header(CONTENT_TYPE, exposition::CONTENT_TYPE);
    let response = if gzip {
        let mut encoder = GzEncoder::new(Vec::with_capacity(body.len() / 8), Compression::fast());
        // Writing into a Vec cannot fail.
        let _ = encoder.write_all(body.as_bytes());
        let compressed = encoder.finish().unwrap_or_default();
        builder
            .header(CONTENT_ENCODING, "gzip")
            .body(Full::new(Bytes::from(compressed)))
    } else {
        builder.body(Full::new(Bytes::from(body)))
    };
    response.unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "Bad response.\n"))
}

fn reload(ctx: &HttpContext) -> Reply {
    let Some(reloader) = &ctx.reloader else {
        return text(
            StatusCode::FORBIDDEN,
            "Lifecycle APIs are not enabled (--web.enable-lifecycle).\n",
        );
    };
    match reloader.reload() {
        Ok(rules) => {
            let body = format!("Mapping reloaded: {rules} rules.\n");
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        Err(e) => {
            let mut response = Response::new(Full::new(Bytes::from(format!(
                "Reload failed, previous mapping kept: {e}\n"
            ))));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
    }
}

async fn fault(ctx: &HttpContext, query: Option<&str>) -> Reply {
    if !ctx.fault_injection {
        return text(
            StatusCode::FORBIDDEN,
            "Fault injection is disabled (--web.enable-fault-injection).\n",
        );
    }
    let family = query
        .unwrap_or_default()
        .split('&')
        .find_map(|pair| pair.strip_prefix("family="));
    let Some(family) = family.filter(|f| !f.is_empty()) else {
        return text(StatusCode::BAD_REQUEST, "Missing ?family=NAME.\n");
    };
    let asked = ctx
        .registry
        .call(
            |reply| RegistryMsg::InjectFault(family.into(), reply),
            Some(SCRAPE_TIMEOUT),
        )
        .await;
    match asked {
        Ok(CallResult::Success(true)) => text(StatusCode::OK, "Fault injected.\n"),
        Ok(CallResult::Success(false)) => text(StatusCode::NOT_FOUND, "No such family.\n"),
        _ => text(StatusCode::SERVICE_UNAVAILABLE, "Registry unavailable.\n"),
    }
}

fn text(status: StatusCode, body: &'static str) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

fn not_allowed(allow: &'static str) -> Reply {
    let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "Method not allowed.\n");
    response
        .headers_mut()
        .insert(ALLOW, hyper::header::HeaderValue::from_static(allow));
    response
}

fn html(body: String) -> Reply {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    response.headers_mut().insert(
        CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/html; charset=utf-8"),
    );
    response
}

fn index_page(telemetry_path: &str) -> String {
    format!(
        "<!doctype html>\n<html><head><title>tallyd</title></head><body>\n\
         <h1>tallyd</h1>\n<p>StatsD to Prometheus, one actor per metric family.</p>\n<ul>\n\
         <li><a href=\"{telemetry_path}\">Metrics</a></li>\n\
         <li><a href=\"/-/healthy\">Health</a></li>\n\
         <li><a href=\"/-/ready\">Readiness</a></li>\n</ul>\n</body></html>\n"
    )
}
