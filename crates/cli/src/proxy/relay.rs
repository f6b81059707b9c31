//! The upstream's answer, relayed to the client at the client's pace — but no slower than the
//! send timeout.
//!
//! The stack's permits (concurrency slots, the adaptive limit's, the rate limiter's
//! reservations) live until the response body ends, and its idle and total timers re-arm only
//! when the body is polled. hyper stops polling a response body when the client's socket is
//! full (HTTP/1) or its stream window is closed (HTTP/2): a client that stops reading would
//! hold its slots forever, and the timers that should free them never fire. Two streams whose
//! client never read blocked every other client of a gateway with two slots.
//!
//! So a task reads the upstream body as the upstream sends it (the stack's own timeouts apply
//! to that) into a bounded queue of [`QUEUE_FRAMES`] frames, and the client's body is the other
//! end of the queue. While the queue is full the send timeout runs: a client that takes no frame
//! for that long loses the response, the upstream body is dropped and every permit behind it
//! returns at once (the stack counts it as cancelled, not as an upstream failure). Memory per
//! response is bounded by the queue, whatever the client does.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body as _, Frame, SizeHint};
use http_body_util::BodyExt as _;
use tokio::sync::mpsc;
use tollgate::LlmBody;
use tollgate_core::BoxError;

/// Frames queued between the upstream and a client that reads slower than it.
pub(crate) const QUEUE_FRAMES: usize = 8;

/// An answer whose length the upstream announced, up to this size, is read whole before the
/// response goes out (the upstream sends it at once; its permits go back then), with no task
/// or queue: most JSON answers.
pub(crate) const READ_WHOLE_BYTES: u64 = 256 * 1024;

/// The client's body for `upstream`: read whole when it is small and its length is known,
/// else [`relay`]ed. `held` is dropped once the upstream body is done with.
pub(crate) async fn deliver<H: Send + 'static>(
    upstream: LlmBody,
    send_timeout: Duration,
    held: H,
) -> Result<axum::body::Body, BoxError> {
    if upstream
        .size_hint()
        .exact()
        .is_some_and(|len| len <= READ_WHOLE_BYTES)
    {
        let whole = upstream.collect().await?.to_bytes();
        drop(held);
        return Ok(axum::body::Body::from(whole));
    }
    Ok(axum::body::Body::new(relay(upstream, send_timeout, held)))
}

/// Why the client's body ended early.
#[derive(Debug)]
struct ClientTooSlow(Duration);

impl std::fmt::Display for ClientTooSlow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the client took no data for {:?} (server.send_timeout): response cut",
            self.0
        )
    }
}

impl std::error::Error for ClientTooSlow {}

/// The client's side of a relayed body; `held` is dropped when the upstream side is done with
/// (a key's place in flight, say).
pub(crate) fn relay<H: Send + 'static>(
    upstream: LlmBody,
    send_timeout: Duration,
    held: H,
) -> RelayBody {
    let (tx, rx) = mpsc::channel(QUEUE_FRAMES);
    let cut = Arc::new(AtomicBool::new(false));
    let size_hint = upstream.size_hint();
    tokio::spawn(pump(upstream, tx, send_timeout, cut.clone(), held));
    RelayBody {
        rx,
        cut,
        send_timeout,
        size_hint,
        done: false,
    }
}

async fn pump<H>(
    mut upstream: LlmBody,
    tx: mpsc::Sender<Result<Frame<Bytes>, BoxError>>,
    send_timeout: Duration,
    cut: Arc<AtomicBool>,
    held: H,
) {
    loop {
        let item = match upstream.frame().await {
            None => break,
            Some(result) => result,
        };
        let last = item.is_err();
        let item = match tx.try_send(item) {
            Ok(()) => None,
            Err(mpsc::error::TrySendError::Closed(_)) => break,
            Err(mpsc::error::TrySendError::Full(item)) => Some(item),
        };
        if let Some(item) = item {
            match tokio::time::timeout(send_timeout, tx.send(item)).await {
                Ok(Ok(())) => {}
                // The client went away.
                Ok(Err(_)) => break,
                Err(_) => {
                    tracing::info!(
                        ?send_timeout,
                        "a client stopped reading its response: cut, and its upstream call \
                         released"
                    );
                    cut.store(true, Ordering::Release);
                    break;
                }
            }
        }
        if last {
            break;
        }
    }
    // The upstream body (and every permit it holds) goes before what the caller asked to hold.
    drop(upstream);
    drop(held);
}

/// A response body fed by [`relay`].
#[derive(Debug)]
pub(crate) struct RelayBody {
    rx: mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    cut: Arc<AtomicBool>,
    send_timeout: Duration,
    size_hint: SizeHint,
    done: bool,
}

impl http_body::Body for RelayBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.done {
            return Poll::Ready(None);
        }
        match std::task::ready!(self.rx.poll_recv(cx)) {
            Some(item) => Poll::Ready(Some(item)),
            None => {
                self.done = true;
                if self.cut.load(Ordering::Acquire) {
                    Poll::Ready(Some(Err(Box::new(ClientTooSlow(self.send_timeout)))))
                } else {
                    Poll::Ready(None)
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    fn size_hint(&self) -> SizeHint {
        self.size_hint
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::AtomicUsize;

    use http_body_util::StreamBody;
    use tokio::time::Instant;

    use super::*;

    /// An upstream body of `frames` frames, counting how many were read.
    fn upstream(frames: usize, read: Arc<AtomicUsize>) -> LlmBody {
        let stream = futures_util::stream::iter((0..frames).map(move |i| {
            read.fetch_add(1, Ordering::Relaxed);
            Ok::<_, BoxError>(Frame::data(Bytes::from(format!("data: {i}\n\n"))))
        }));
        LlmBody::new(StreamBody::new(stream))
    }

    #[tokio::test(start_paused = true)]
    async fn a_small_answer_of_known_length_is_read_whole_and_releases_at_once() {
        let (held, mut released) = tokio::sync::oneshot::channel::<()>();
        let upstream = LlmBody::new(
            http_body_util::Full::new(Bytes::from_static(b"{}"))
                .map_err(|never: std::convert::Infallible| -> BoxError { match never {} }),
        );
        let body = deliver(upstream, Duration::from_secs(30), held)
            .await
            .unwrap();
        assert!(
            released.try_recv().is_err(),
            "released before the client read anything"
        );
        assert_eq!(body.collect().await.unwrap().to_bytes(), "{}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_gets_every_frame_in_order() {
        let read = Arc::new(AtomicUsize::new(0));
        let body = relay(upstream(100, read), Duration::from_secs(30), ());
        let bytes = body.collect().await.unwrap().to_bytes();
        let expected: String = (0..100).map(|i| format!("data: {i}\n\n")).collect();
        assert_eq!(bytes, expected.as_bytes());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_stops_reading_releases_the_upstream_after_the_send_timeout() {
        let read = Arc::new(AtomicUsize::new(0));
        let (held, mut released) = tokio::sync::oneshot::channel::<()>();
        let started = Instant::now();
        let mut body = relay(upstream(1000, read.clone()), Duration::from_secs(30), held);
        let first = body.frame().await.unwrap().unwrap();
        assert!(first.is_data());
        // The client reads no more: the upstream is read only as far as the queue allows.
        let _ = (&mut released).await;
        assert_eq!(started.elapsed(), Duration::from_secs(30));
        let upstream_read = read.load(Ordering::Relaxed);
        assert!(
            upstream_read <= QUEUE_FRAMES + 3,
            "{upstream_read} frames read"
        );
        // What was queued is still delivered, then the cut shows as an error.
        let mut frames = 0;
        let error = loop {
            match body.frame().await {
                Some(Ok(_)) => frames += 1,
                Some(Err(error)) => break error,
                None => panic!("a cut response must not end cleanly"),
            }
        };
        assert!(frames <= QUEUE_FRAMES, "{frames}");
        assert!(error.to_string().contains("send_timeout"), "{error}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_leaves_releases_the_upstream_at_once() {
        let read = Arc::new(AtomicUsize::new(0));
        let (held, released) = tokio::sync::oneshot::channel::<()>();
        let body = relay(upstream(1000, read), Duration::from_secs(30), held);
        let started = Instant::now();
        drop(body);
        let _ = released.await;
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
