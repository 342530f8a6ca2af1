//! Scrapes share their rendering. A scrape must show every line read before it asked, so it
//! cannot take a rendering that had already begun; but every scrape that asked before a
//! rendering began can take that one. Renderings run one at a time: while one runs, the
//! scrapes that arrive wait, and the next rendering serves all of them. N scrapes at once thus
//! cost two renderings at most, not N; and they send the same bytes (one buffer, shared), so
//! N slow readers hold one exposition, not N. Each form (text or protobuf, plain or gzipped)
//! is made once per rendering, when a scrape first asks for it. Once no scrape waits, the
//! rendering is let go of, and a large one's memory goes back to the system as soon as the
//! last scrape has sent it ([`Exposition`]).

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

/// One rendering: what the aggregator had, and the forms made of it so far.
#[derive(Debug)]
struct Rendering {
    /// It serves every scrape numbered up to this: those that asked before it began.
    serves: u64,
    scrape: exposition::Scrape,
    /// Text, text gzipped, protobuf, protobuf gzipped.
    forms: [Option<Bytes>; 4],
}

/// What a scrape asks for.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Form {
    /// The protobuf exposition rather than the text.
    pub(crate) protobuf: bool,
    /// Gzipped.
    pub(crate) gzip: bool,
}

impl Scrapes {
    /// The exposition for a scrape asking now, in `form`; `None` when the aggregator did not
    /// answer.
    pub(crate) async fn body(&self, ctx: &HttpContext, form: Form) -> Option<Bytes> {
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let number = self.asked.fetch_add(1, Ordering::SeqCst) + 1;
        let mut last = self.last.lock().await;
        if last.as_ref().is_none_or(|r| r.serves < number) {
            // Every scrape that has asked by now is served by what is read from here on.
            let serves = self.asked.load(Ordering::SeqCst);
            *last = read(ctx).await.map(|scrape| Rendering {
                serves,
                scrape,
                forms: Default::default(),
            });
        }
        let body = last.as_mut().map(|r| {
            let plain = usize::from(form.protobuf) * 2;
            let plain_form = r.forms[plain]
                .get_or_insert_with(|| render(ctx, &r.scrape, form.protobuf))
                .clone();
            if form.gzip {
                r.forms[plain + 1]
                    .get_or_insert_with(|| compress(&plain_form))
                    .clone()
            } else {
                plain_form
            }
        });
        if self.waiting.fetch_sub(1, Ordering::SeqCst) == 1 {
            // No scrape waits: any that asks from now on needs a new rendering anyway.
            *last = None;
        }
        body
    }
}

/// Has the listeners and families publish what they hold, then reads what the aggregator has.
async fn read(ctx: &HttpContext) -> Option<exposition::Scrape> {
    if !ctx.barrier.pass(BARRIER_TIMEOUT).await {
        ctx.telemetry.scrape_barrier_timeouts.inc();
    }
    let asked = ctx
        .aggregator
        .call(AggregatorMsg::Scrape, Some(SCRAPE_TIMEOUT))
        .await;
    let Ok(CallResult::Success(scrape)) = asked else {
        return None;
    };
    Some(scrape)
}

/// The scrape in the text or the protobuf format.
fn render(ctx: &HttpContext, scrape: &exposition::Scrape, protobuf: bool) -> Bytes {
    ctx.telemetry.scrape_renders.inc();
    if protobuf {
        let mut body = Vec::new();
        exposition::render_protobuf(scrape, &ctx.telemetry, &mut body);
        Exposition::bytes(body)
    } else {
        let mut body = String::new();
        exposition::render(scrape, &ctx.telemetry, &mut body);
        Exposition::bytes(body.into_bytes())
    }
}

fn compress(plain: &[u8]) -> Bytes {
    let mut encoder = GzEncoder::new(Vec::with_capacity(plain.len() / 8), Compression::fast());
    // Writing into a Vec cannot fail.
    let _ = encoder.write_all(plain);
    Exposition::bytes(encoder.finish().unwrap_or_default())
}

/// Expositions from this size on give their memory back as they are let go of.
const RELEASE_FROM: usize = 8 << 20;

/// A rendered exposition, shared by the scrapes that send it. The last to let go of a large
/// one (from [`RELEASE_FROM`]) has its memory given back to the system at once: a thread that
/// has just sent a scrape often goes idle for the whole scrape interval, and the allocator
/// would keep the freed pages until a collection (see [`crate::memory`]).
struct Exposition(Vec<u8>);

impl Exposition {
    fn bytes(body: Vec<u8>) -> Bytes {
        Bytes::from_owner(Exposition(body))
    }
}

impl AsRef<[u8]> for Exposition {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl Drop for Exposition {
    fn drop(&mut self) {
        if self.0.capacity() >= RELEASE_FROM {
            drop(std::mem::take(&mut self.0));
            crate::memory::release_freed_memory_now();
        }
    }
}
