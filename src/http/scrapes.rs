//! Scrapes share their rendering. A scrape must show every line read before it asked, so it
//! cannot take a rendering that had already begun; but every scrape that asked before a
//! rendering began can take that one. Renderings run one at a time: while one runs, the
//! scrapes that arrive wait, and the next rendering serves all of them. N scrapes at once thus
//! cost two renderings at most, not N; and they send the same bytes (one buffer, shared), so
//! N slow readers hold one exposition, not N. The gzip form is made once per rendering, when
//! a scrape first asks for it. Once no scrape waits, the rendering is let go of.

use bytes::Bytes;
use flate2::write::GzEncoder;
use flate2::Compression;
use ractor::rpc::CallResult;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::Mutex;

use super::{HttpContext, BARRIER_TIMEOUT, SCRAPE_TIMEOUT};
use crate::actors::aggregator::AggregatorMsg;
use crate::exposition;

/// The scrapes' shared rendering.
#[derive(Debug, Default)]
pub(crate) struct Scrapes {
    /// Scrapes asked for so far: each takes the next number as it asks.
    asked: AtomicU64,
    /// Scrapes asking and not yet answered.
    waiting: AtomicU64,
    /// The last rendering and the scrapes it serves; held by the scrape rendering or taking it.
    last: Mutex<Option<Rendering>>,
}

/// One rendering.
#[derive(Debug)]
struct Rendering {
    /// It serves every scrape numbered up to this: those that asked before it began.
    serves: u64,
    plain: Bytes,
    gzip: Option<Bytes>,
}

impl Scrapes {
    /// The exposition for a scrape asking now, gzipped if `gzip`; `None` when the aggregator
    /// did not answer.
    pub(crate) async fn body(&self, ctx: &HttpContext, gzip: bool) -> Option<Bytes> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let number = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last = self.last.lock().await;
        if last.as_ref().is_none_or(|r| r.serves < number) {
            // Every scrape that has asked by now is served by what is read from here on.
            let serves = self.asked.load(Ordering::SeqCst);
            *last = render(ctx).await.map(|plain| Rendering {
                serves,
                plain,
                gzip: None,
            });
        }
        let body = last.as_mut().map(|r| {
            if gzip {
                r.gzip.get_or_insert_with(|| compress(&r.plain)).clone()
            } else {
                r.plain.clone()
            }
        });
        if self.waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
            // No scrape waits: any that asks from now on needs a new rendering anyway.
            *last = None;
        }
        body
    }
}

/// Has the listeners and families publish what they hold, then renders what the aggregator has.
async fn render(ctx: &HttpContext) -> Option<Bytes> {
    if !ctx.barrier.pass(BARRIER_TIMEOUT).await {
        ctx.telemetry.scrape_barrier_timeouts.inc();
    }
    let asked = ctx
        .aggregator
        .call(AggregatorMsg::Scrape, Some(SCRAPE_TIMEOUT))
        .await;
    let Ok(CallResult::Success(families)) = asked else {
        return None;
    };
    ctx.telemetry.scrape_renders.inc();
    let mut body = String::new();
    exposition::render(&families, &ctx.telemetry, &mut body);
    Some(Bytes::from(body))
}

fn compress(plain: &[u8]) -> Bytes {
    let mut encoder = GzEncoder::new(Vec::with_capacity(plain.len() / 8), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(plain);
    Bytes::from(encoder.finish().unwrap_or_default())
}
