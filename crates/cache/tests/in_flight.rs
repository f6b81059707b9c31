//! What a call in flight holds of a stream: every frame while the answer may still be stored,
//! then, past `max_entry_bytes`, no new joiner and only what the slowest caller has yet to read,
//! the upstream read pausing when that caller stops reading.
//!
//! The upstream is a hand-written body that counts the frames pulled from it, and can hold
//! them back past a number the test sets. "Settling" lets
//! every task run until it waits (paused time moves on only then): what the call pulls while a
//! caller does not read is what it would pull, however long that caller waited.

use std::convert::Infallible;
use std::future::{Ready, ready};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Request, Response, header};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tollgate_cache::{Cache, CacheConfig, CacheHandle, CacheLayer, CacheStatus, DefaultPolicy};
use tollgate_core::{EndpointKind, LlmRequest, Provider};
use tower::{Layer, Service};

/// Each upstream frame: one server-sent event of this many bytes.
const FRAME: usize = 1024;
/// How far past the recording a call reads ahead of its slowest caller (the crate docs).
const READ_AHEAD: u64 = 64 * 1024;
/// The entry cap of these tests: 16 frames.
const CAP: u64 = 16 * 1024;

/// A stream of `frames` events, counting how many were pulled.
struct Counted {
    left: usize,
    sent: usize,
    upstream: Upstream,
}

impl Body for Counted {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        if self.sent >= self.upstream.allowed.load(Ordering::Relaxed) {
            let mut waiting = self.upstream.waiting.lock().unwrap();
            waiting.push(cx.waker().clone());
            return Poll::Pending;
        }
        self.left -= 1;
        self.sent += 1;
        self.upstream.pulled.fetch_add(1, Ordering::Relaxed);
        let mut event = vec![b'x'; FRAME];
        event[..6].copy_from_slice(b"data: ");
        event[FRAME - 2..].copy_from_slice(b"\n\n");
        Poll::Ready(Some(Ok(Frame::data(Bytes::from(event)))))
    }
}

/// The upstream: each call streams `frames` events, the first `allowed` of them at once.
#[derive(Clone)]
struct Upstream {
    frames: usize,
    calls: Arc<AtomicUsize>,
    pulled: Arc<AtomicUsize>,
    allowed: Arc<AtomicUsize>,
    waiting: Arc<Mutex<Vec<Waker>>>,
}

impl Upstream {
    fn new(frames: usize) -> Self {
        Self {
            frames,
            calls: Arc::default(),
            pulled: Arc::default(),
            allowed: Arc::new(AtomicUsize::new(usize::MAX)),
            waiting: Arc::default(),
        }
    }

    /// Each body sends its first `frames` frames, then waits for more to be allowed.
    fn allow(&self, frames: usize) {
        self.allowed.store(frames, Ordering::Relaxed);
        for waker in self.waiting.lock().unwrap().drain(..) {
            waker.wake();
        }
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::Relaxed)
    }

    fn pulled(&self) -> usize {
        self.pulled.load(Ordering::Relaxed)
    }
}

impl Service<Request<Full<Bytes>>> for Upstream {
    type Response = Response<Counted>;
    type Error = Infallible;
    type Future = Ready<Result<Response<Counted>, Infallible>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: Request<Full<Bytes>>) -> Self::Future {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let body = Counted {
            left: self.frames,
            sent: 0,
            upstream: self.clone(),
        };
        let mut response = Response::new(body);
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream"),
        );
        ready(Ok(response))
    }
}

type Stack = Cache<Upstream, DefaultPolicy>;
type Reply = Response<tollgate_cache::CacheBody<Counted>>;

/// A cache with `max_entry_bytes` over `upstream`.
fn cache(max_entry_bytes: u64, upstream: &Upstream) -> (Stack, CacheHandle) {
    let layer = CacheLayer::new(CacheConfig {
        max_entry_bytes,
        ..CacheConfig::default()
    })
    .unwrap();
    let handle = layer.handle();
    (layer.layer(upstream.clone()), handle)
}

/// A streamed chat at temperature 0, annotated as `AnnotateLayer` would.
fn ask() -> Request<Full<Bytes>> {
    let body = r#"{"model":"m","temperature":0,"stream":true,"messages":[]}"#;
    let mut request = Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::new(Bytes::from_static(body.as_bytes())))
        .unwrap();
    let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
    llm.temperature = Some(0.0);
    llm.stream = true;
    request.extensions_mut().insert(llm);
    request
}

/// Sends `ask()` `N` times at once: the response heads (their bodies unread). Each `call`
/// starts or joins the flight before any task runs.
async fn send<const N: usize>(cache: &mut Stack) -> [Reply; N] {
    let calls: [_; N] = std::array::from_fn(|_| cache.call(ask()));
    let mut replies = Vec::with_capacity(N);
    for call in calls {
        replies.push(call.await.unwrap());
    }
    replies.try_into().unwrap()
}

/// Reads `reply`'s body to its end: the bytes read.
async fn read(reply: Reply) -> usize {
    reply.into_body().collect().await.unwrap().to_bytes().len()
}

/// Lets every task run until it waits.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1)).await;
}

#[tokio::test(start_paused = true)]
async fn a_stream_past_the_entry_cap_is_not_stored_and_held_within_bounds_while_a_joiner_does_not_read()
 {
    let upstream = Upstream::new(1_000);
    let (mut cache, handle) = cache(CAP, &upstream);
    let [leader, joiner] = send(&mut cache).await;
    assert_eq!(joiner.extensions().get(), Some(&CacheStatus::Coalesced));
    let leader = tokio::spawn(read(leader));

    // The most a flight holds: the larger of the cap and the read-ahead, and one frame.
    let bound = CAP.max(READ_AHEAD) + FRAME as u64;
    settle().await;
    let held = handle.snapshot().in_flight_bytes;
    assert!(
        held > 0 && held <= bound,
        "held {held} while the joiner reads nothing"
    );
    assert!(upstream.pulled() < 1_000, "nor read to its end");

    // The joiner reads on, now and then: the bound holds all along.
    let mut body = joiner.into_body();
    let mut read = 0;
    while let Some(frame) = body.frame().await {
        read += frame.unwrap().into_data().unwrap().len();
        if read % (100 * FRAME) == 0 {
            settle().await;
            let held = handle.snapshot().in_flight_bytes;
            assert!(held <= bound, "held {held} after {read} bytes read");
        }
    }
    assert_eq!(read, 1_000 * FRAME);
    assert_eq!(leader.await.unwrap(), 1_000 * FRAME);
    drop(body);

    let stats = handle.snapshot();
    assert_eq!((stats.stored, stats.not_stored, stats.entries), (0, 1, 0));
    assert_eq!(stats.in_flight_bytes, 0, "nothing held once read");
    assert_eq!(upstream.calls(), 1);
}

#[tokio::test(start_paused = true)]
async fn once_recording_stopped_an_identical_request_does_not_join() {
    let upstream = Upstream::new(1_000);
    // The upstream sends a little past the cap, then takes its time.
    upstream.allow(CAP as usize / FRAME + 4);
    let (mut cache, handle) = cache(CAP, &upstream);
    let [leader, joiner] = send(&mut cache).await;
    assert_eq!(handle.snapshot().coalesced, 1);
    let leader = tokio::spawn(read(leader));
    settle().await;
    assert_eq!(upstream.pulled(), CAP as usize / FRAME + 4, "past the cap");
    assert_eq!(handle.snapshot().in_flight, 0, "no call to join");

    let [late] = send(&mut cache).await;
    assert_eq!(late.extensions().get(), Some(&CacheStatus::Miss));
    assert_eq!(handle.snapshot().coalesced, 1);
    assert_eq!(upstream.calls(), 2, "it made its own call");
    // Everyone still gets the whole answer.
    upstream.allow(usize::MAX);
    let (joiner, late) = tokio::join!(read(joiner), read(late));
    assert_eq!((joiner, late), (1_000 * FRAME, 1_000 * FRAME));
    assert_eq!(leader.await.unwrap(), 1_000 * FRAME);
}

#[tokio::test(start_paused = true)]
async fn past_the_entry_cap_a_stalled_caller_pauses_the_upstream_read() {
    let upstream = Upstream::new(1_000);
    let (mut cache, handle) = cache(CAP, &upstream);
    // The first caller stalls; a coalesced one reads.
    let [stalled, reader] = send(&mut cache).await;
    let reader = tokio::spawn(read(reader));
    settle().await;
    let window = (CAP.max(READ_AHEAD) / FRAME as u64) as usize;
    let pulled = upstream.pulled();
    assert!(
        pulled > CAP as usize / FRAME && pulled <= window + 1,
        "{pulled} frames pulled from the upstream"
    );
    settle().await;
    assert_eq!(upstream.pulled(), pulled, "and no more while it stalls");

    // Reading ten frames lets the call pull about ten more.
    let mut body = stalled.into_body();
    for _ in 0..10 {
        body.frame().await.unwrap().unwrap();
    }
    settle().await;
    let more = upstream.pulled() - pulled;
    assert!((9..=11).contains(&more), "{more} more frames pulled");
    assert!(!reader.is_finished());
    drop(body);
    assert_eq!(reader.await.unwrap(), 1_000 * FRAME);
    assert_eq!(handle.snapshot().in_flight_bytes, 0);
}

#[tokio::test(start_paused = true)]
async fn when_the_stalled_caller_leaves_the_others_read_to_the_end() {
    let upstream = Upstream::new(1_000);
    let (mut cache, handle) = cache(CAP, &upstream);
    let [first, stalled, third] = send(&mut cache).await;
    let readers = tokio::spawn(async move { tokio::join!(read(first), read(third)) });
    settle().await;
    assert!(upstream.pulled() < 1_000, "held back by the stalled caller");
    assert!(!readers.is_finished());

    drop(stalled);
    assert_eq!(readers.await.unwrap(), (1_000 * FRAME, 1_000 * FRAME));
    assert_eq!(upstream.pulled(), 1_000);
    assert_eq!(upstream.calls(), 1);
    let stats = handle.snapshot();
    assert_eq!(
        (stats.coalesced, stats.stored, stats.in_flight_bytes),
        (2, 0, 0)
    );
}

#[tokio::test(start_paused = true)]
async fn a_stalled_caller_does_not_hold_back_an_answer_that_fits_an_entry() {
    let upstream = Upstream::new(100);
    let (mut cache, handle) = cache(CacheConfig::default().max_entry_bytes, &upstream);
    let [reader, stalled] = send(&mut cache).await;
    let reader = tokio::spawn(read(reader));
    assert_eq!(reader.await.unwrap(), 100 * FRAME, "read without waiting");
    settle().await;
    let stats = handle.snapshot();
    assert_eq!(stats.stored, 1, "stored while a caller still reads");
    assert_eq!(
        stats.in_flight_bytes,
        100 * FRAME as u64,
        "what the stalled caller has yet to read"
    );
    assert_eq!(read(stalled).await, 100 * FRAME);
    assert_eq!(handle.snapshot().in_flight_bytes, 0);
    let [hit] = send(&mut cache).await;
    assert_eq!(hit.extensions().get(), Some(&CacheStatus::Hit));
    assert_eq!(read(hit).await, 100 * FRAME);
    assert_eq!(upstream.calls(), 1);
}
