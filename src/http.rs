//! The HTTP server (hyper): `GET /metrics` (or the configured path) in the Prometheus text
//! or protobuf format, gzipped when the client accepts it; `/-/healthy`, `/-/ready`,
//! `/-/reload`; the JSON API under `/api/v1/` ([`api`]) and the status page at `/` built on it
//! ([`page`]), or a small index page when the API is off; `POST /-/fault?family=NAME` when
//! fault injection is enabled. Anything else is 404, or 405 for a known path with the wrong
//! method.
//!
//! Hardening, all set in `[web]`: at most `max_connections` connections are served at once
//! (past it a new one is closed unserved and counted); a client has `header_timeout` to send
//! its headers (a slowloris client is cut then, holding one slot, never the accept loop);
//! each request has `request_timeout` from its headers to the last byte of its response;
//! request heads are capped at `max_header_bytes` (431). TLS handshakes run in the
//! connection's own task, under `header_timeout` too.
//!
//! Scrapes that ask at once share one rendering, and send the same bytes ([`scrapes`]).
//!
//! With `--web.config.file` ([`crate::webconfig`]), in this order: the rate limit (429), the
//! extra headers (on every response), basic auth (401), then the route.

pub(crate) mod api;
mod page;
mod scrapes;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{
    HeaderValue, ACCEPT, ACCEPT_ENCODING, ALLOW, AUTHORIZATION, CONNECTION, CONTENT_ENCODING,
    CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE,
};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use ractor::{rpc::CallResult, ActorRef};
use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::actors::aggregator::AggregatorMsg;
use crate::actors::registry::RegistryMsg;
use crate::barrier::Barrier;
use crate::config::WebSettings;
use crate::exposition;
use crate::reload::Reloader;
use crate::sockets::AcceptBackoff;
use crate::sockets::{Holder, Slots};
use crate::telemetry::{LogLimiter, Telemetry};
use crate::webconfig::rotation::{self, Rotation};
use crate::webconfig::{Verdict, WebConfig};
use scrapes::{Form, Scrapes};

/// How long a scrape waits for the aggregator's reply.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a scrape waits for the listeners and families to publish what they hold; past
/// it, the scrape shows what was published by then, and the timeout is counted.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(1);

/// What the handlers need.
#[derive(Debug)]
pub(crate) struct HttpContext {
    /// Source of every family snapshot.
    pub(crate) aggregator: ActorRef<AggregatorMsg>,
    /// Makes the listeners and families publish what they hold before a scrape.
    pub(crate) barrier: Arc<Barrier>,
    /// For fault injection.
    pub(crate) registry: ActorRef<RegistryMsg>,
    /// tallyd's own metrics.
    pub(crate) telemetry: Arc<Telemetry>,
    /// Path of the exposition.
    pub(crate) telemetry_path: String,
    /// Whether `POST /-/fault` is served.
    pub(crate) fault_injection: bool,
    /// Reloads the mapping file on `POST /-/reload`; `None` unless `--web.enable-lifecycle`.
    pub(crate) reloader: Option<Arc<Reloader>>,
    /// False once shutdown has begun: `/-/ready` then answers 503.
    pub(crate) ready: AtomicBool,
    /// Timeouts and caps.
    pub(crate) limits: Limits,
    /// TLS, basic auth, extra headers and rate limit from `--web.config.file`.
    pub(crate) web: WebConfig,
    /// The rendering concurrent scrapes share.
    pub(crate) scrapes: Scrapes,
    /// What `/api/v1/` and the status page read; `None` when they are off
    /// (`--no-web.enable-api`).
    pub(crate) api: Option<api::Api>,
}

/// The server's timeouts and caps, from `[web]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Limits {
    /// Connections served at once.
    pub(crate) max_connections: usize,
    /// Time to send a request's headers (and to finish a TLS handshake).
    pub(crate) header_timeout: Duration,
    /// Time from a request's headers to the end of its response.
    pub(crate) request_timeout: Duration,
    /// Largest request head, in bytes (hyper's read buffer; at least 8192).
    pub(crate) max_header_bytes: usize,
    /// HTTP keep-alive.
    pub(crate) keep_alive: bool,
    /// Password checks running or waiting at once.
    pub(crate) max_password_checks: usize,
}

impl From<&WebSettings> for Limits {
    fn from(web: &WebSettings) -> Limits {
        Limits {
            max_connections: web.max_connections,
            header_timeout: web.header_timeout,
            request_timeout: web.request_timeout,
            max_header_bytes: web.max_header_bytes,
            keep_alive: web.keep_alive,
            max_password_checks: web.max_password_checks,
        }
    }
}

type Reply = Response<Full<Bytes>>;

/// At most one log line a second about refused connections: a flood must not flood the log.
static REFUSED_LOG: LogLimiter = LogLimiter::new(1);

/// Serves HTTP on `listener` until `shutdown`, then lets requests in flight finish.
pub(crate) async fn serve(
    listener: TcpListener,
    ctx: Arc<HttpContext>,
    shutdown: CancellationToken,
) {
    for warning in &ctx.web.warnings {
        warn!(file = ?ctx.web.path, "web config: {warning}");
    }
    if let Some(path) = &ctx.web.path {
        info!(
            file = %path.display(),
            tls = ctx.web.tls.is_some(),
            client_auth = ctx.web.client_auth.as_str(),
            basic_auth = ctx.web.basic_auth.is_some(),
            rate_limit = ctx.web.rate_limit.is_some(),
            "web config loaded"
        );
    }
    let tls = Rotation::new(&ctx.web).map(Arc::new);
    let watching = tls.clone().map(|tls| watch_certificates(tls, ctx.clone()));
    let slots = Slots::new(ctx.limits.max_connections);
    let mut backoff = AcceptBackoff::default();
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => {
                    backoff.accepted();
                    accepted
                }
                Err(e) => {
                    tokio::time::sleep(backoff.failed(&ctx.telemetry, "http", &e)).await;
                    continue;
                }
            },
        };
        let Some((slot, evicted)) = slots.take(stream.as_raw_fd()).await else {
            refuse(stream, peer, tls.is_none(), &ctx);
            continue;
        };
        if evicted {
            ctx.telemetry.http_connections_evicted.inc();
        }
        let tls = tls.as_ref().map(|tls| TlsAcceptor::from(tls.current()));
        let (ctx, watcher) = (ctx.clone(), graceful.watcher());
        tokio::spawn(async move {
            let holder = slot.holder.clone();
            tokio::select! {
                () = connection(stream, peer, ctx, tls, watcher, holder.clone()) => {}
                () = holder.evicted() => debug!(%peer, "HTTP connection closed for a new one: it had sent no request"),
            }
            drop(slot);
        });
    }
    if let Some(watching) = watching {
        watching.abort();
    }
    if tokio::time::timeout(Duration::from_secs(5), graceful.shutdown())
        .await
        .is_err()
    {
        warn!("HTTP connections still open after 5s; closing them");
    }
}

/// Looks at the certificate files every [`rotation::CHECK_EVERY`], so that new handshakes use
/// a renewed certificate (see [`Rotation`]).
fn watch_certificates(tls: Arc<Rotation>, ctx: Arc<HttpContext>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(rotation::CHECK_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let (tls, ctx) = (tls.clone(), ctx.clone());
            // It reads files: off the async workers.
            let _ = tokio::task::spawn_blocking(move || tls.check(&ctx.telemetry)).await;
        }
    })
}

/// Closes a connection over the cap without serving it. Plain HTTP clients get a 503 if the
/// socket takes it at once; nothing here waits on the client.
fn refuse(stream: TcpStream, peer: SocketAddr, plain: bool, ctx: &HttpContext) {
    ctx.telemetry.http_connections_rejected.inc();
    if let Some(suppressed) = REFUSED_LOG.allow() {
        warn!(
            %peer,
            max_connections = ctx.limits.max_connections,
            suppressed,
            "HTTP connection refused: web.max_connections are open"
        );
    }
    if plain {
        const BODY: &str = "Too many connections.\n";
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
            BODY.len()
        );
        let _ = stream.try_write(response.as_bytes());
    }
}

/// Serves one connection: the TLS handshake if configured, then HTTP/1.1 until the client
/// leaves, a timeout strikes, or shutdown.
async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    ctx: Arc<HttpContext>,
    tls: Option<TlsAcceptor>,
    watcher: Watcher,
    holder: Arc<Holder>,
) {
    let deadline = Arc::new(Deadline::default());
    let stream = Timed::new(stream, deadline.clone());
    match tls {
        None => http(TokioIo::new(stream), peer, ctx, deadline, watcher, holder).await,
        Some(acceptor) => {
            let timeout = ctx.limits.header_timeout;
            match tokio::time::timeout(timeout, acceptor.accept(stream)).await {
                Ok(Ok(stream)) => {
                    http(TokioIo::new(stream), peer, ctx, deadline, watcher, holder).await
                }
                Ok(Err(e)) => debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => debug!(%peer, "TLS handshake not finished within web.header_timeout"),
            }
        }
    }
}

async fn http<I>(
    io: TokioIo<I>,
    peer: SocketAddr,
    ctx: Arc<HttpContext>,
    deadline: Arc<Deadline>,
    watcher: Watcher,
    holder: Arc<Holder>,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = ctx.limits;
    let service = service_fn(move |req| {
        // hyper calls this once the request's headers are in: the request's time starts.
        let ends = tokio::time::Instant::now() + limits.request_timeout;
        deadline.set(ends);
        holder.serving();
        let (ctx, holder) = (ctx.clone(), holder.clone());
        async move {
            let response = handle(&ctx, req, ends).await;
            holder.waiting();
            Ok::<_, std::convert::Infallible>(response)
        }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(limits.max_header_bytes)
        .keep_alive(limits.keep_alive)
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(conn).await {
        debug!(%peer, error = %e, "HTTP connection error");
    }
}

/// Rate limit, basic auth and the route, within the request's time; the extra headers on
/// whatever the answer is.
async fn handle(ctx: &HttpContext, req: Request<Incoming>, ends: tokio::time::Instant) -> Reply {
    let mut response = if ctx.web.rate_limit.as_ref().is_some_and(|l| !l.allow()) {
        text(StatusCode::TOO_MANY_REQUESTS, "Too many requests.\n")
    } else {
        let answer = async {
            if let Some(auth) = &ctx.web.basic_auth {
                let authorization = req.headers().get(AUTHORIZATION);
                match auth
                    .check(authorization, ctx.limits.max_password_checks)
                    .await
                {
                    Verdict::Allowed => {}
                    Verdict::Denied => {
                        ctx.telemetry.http_auth_failures.inc();
                        return closing(unauthorized());
                    }
                    Verdict::Busy => {
                        ctx.telemetry.http_password_checks_refused.inc();
                        let mut busy = text(
                            StatusCode::SERVICE_UNAVAILABLE,
                            "Too many password checks.\n",
                        );
                        busy.headers_mut()
                            .insert(RETRY_AFTER, HeaderValue::from_static("1"));
                        return closing(busy);
                    }
                }
            }
            route(ctx, req).await
        };
        tokio::time::timeout_at(ends, answer)
            .await
            .unwrap_or_else(|_| text(StatusCode::SERVICE_UNAVAILABLE, "Request timed out.\n"))
    };
    let headers = response.headers_mut();
    for (name, value) in &ctx.web.headers {
        headers.insert(name.clone(), value.clone());
    }
    ctx.telemetry.http_request(response.status());
    response
}

/// `response`, after which the connection closes: a client refused its credentials takes a new
/// connection, and so a slot, for its next try (see [`Slots`]), rather than keep one to retry on.
fn closing(mut response: Reply) -> Reply {
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}

fn unauthorized() -> Reply {
    let mut response = text(StatusCode::UNAUTHORIZED, "Unauthorized.\n");
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic"));
    response
}

/// When the response to the request being served must be written by, shared by the
/// connection's service (which sets it when a request arrives) and its socket (which fails a
/// write still blocked at that time). A std Mutex: held for a copy, never across an await.
#[derive(Debug, Default)]
struct Deadline(Mutex<Option<tokio::time::Instant>>);

impl Deadline {
    fn set(&self, at: tokio::time::Instant) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(at);
    }

    fn get(&self) -> Option<tokio::time::Instant> {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A connection's TCP stream whose writes fail once they have been blocked past the current
/// request's deadline. Without it a client that stops reading its response (or reads a byte
/// now and then) would hold its connection, and one of `max_connections`, for ever. Under
/// TLS, so handshake and record writes are covered too.
struct Timed {
    inner: TcpStream,
    deadline: Arc<Deadline>,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl Timed {
    fn new(inner: TcpStream, deadline: Arc<Deadline>) -> Self {
        Timed {
            inner,
            deadline,
            sleep: None,
        }
    }

    /// Called when a write would block: pending until the deadline, then an error.
    fn blocked<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let Some(at) = self.deadline.get() else {
            return Poll::Pending;
        };
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.deadline() != at {
            sleep.as_mut().reset(at);
        }
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "response not written within web.request_timeout",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl AsyncRead for Timed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for Timed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.blocked(cx),
            done => done,
        }
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write_vectored(cx, bufs) {
            Poll::Pending => self.blocked(cx),
            done => done,
        }
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
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
        "/" if read => match &ctx.api {
            Some(api) => status_page(page::render(ctx, api, req.uri().query()).await),
            None => html(index_page(&ctx.telemetry_path)),
        },
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
        "/-/reload" if method == Method::POST || method == Method::PUT => reload(ctx).await,
        "/-/reload" => not_allowed("POST, PUT"),
        "/-/fault" if ctx.fault_injection => not_allowed("POST"),
        _ => match &ctx.api {
            Some(api) if read => api::route(ctx, api, path, req.uri().query())
                .await
                .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "Not found.\n")),
            Some(_) if api::PATHS.contains(&path) => not_allowed("GET, HEAD"),
            _ => text(StatusCode::NOT_FOUND, "Not found.\n"),
        },
    }
}

/// The exposition in the protobuf form, as a scrape reads it now (for remote write).
pub(crate) async fn protobuf_exposition(ctx: &HttpContext) -> Option<Bytes> {
    let form = Form {
        protobuf: true,
        gzip: false,
    };
    ctx.scrapes.body(ctx, form).await
}

async fn scrape(ctx: &HttpContext, req: &Request<Incoming>) -> Reply {
    let gzip = req
        .headers()
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|enc| enc.split(';').next().is_some_and(|e| e.trim() == "gzip"));
    let protobuf = req
        .headers()
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(exposition::proto::accepted);
    let Some(body) = ctx.scrapes.body(ctx, Form { protobuf, gzip }).await else {
        return text(StatusCode::SERVICE_UNAVAILABLE, "Aggregator unavailable.\n");
    };
    let content_type = match protobuf {
        true => exposition::proto::CONTENT_TYPE,
        false => exposition::CONTENT_TYPE,
    };
    let builder = Response::builder().header(CONTENT_TYPE, content_type);
    let response = if gzip {
        builder
            .header(CONTENT_ENCODING, "gzip")
            .body(Full::new(body))
    } else {
        builder.body(Full::new(body))
    };
    response.unwrap_or_else(|_| text(StatusCode::INTERNAL_SERVER_ERROR, "Bad response.\n"))
}

async fn reload(ctx: &HttpContext) -> Reply {
    let Some(reloader) = &ctx.reloader else {
        return text(
            StatusCode::FORBIDDEN,
            "Lifecycle APIs are not enabled (--web.enable-lifecycle).\n",
        );
    };
    match reloader.reload_in_background().await {
        Some(Ok(rules)) => {
            let body = format!("Mapping reloaded: {rules} rules.\n");
            let mut response = Response::new(Full::new(Bytes::from(body)));
            response.headers_mut().insert(
                CONTENT_TYPE,
                hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
            );
            response
        }
        Some(Err(e)) => {
            let mut response = Response::new(Full::new(Bytes::from(format!(
                "Reload failed, previous mapping kept: {e}\n"
            ))));
            *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
            response
        }
        None => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Reload failed, previous mapping kept.\n",
        ),
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

/// The status page, which may run its own inline script and fetch from tallyd, nothing else.
fn status_page(body: String) -> Reply {
    let mut response = html(body);
    response.headers_mut().insert(
        hyper::header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(page::policy()),
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
