//! The concurrency limit under paused time: fairness, permits held until the body ends and
//! returned on drop, queue timeouts, partitions.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use tokio::sync::{Notify, mpsc};
use tollgate_concurrency::{ConcurrencyLimitLayer, PermitBody, Priority};
use tollgate_core::BoxError;
use tollgate_core::error::QueueTimeout;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// A streamed body fed by the test through a channel.
struct Streamed(mpsc::UnboundedReceiver<Bytes>);

impl Body for Streamed {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

type Stack = BoxCloneSyncService<Request<u32>, Response<PermitBody<Streamed>>, BoxError>;

/// An upstream that records the order of calls, answers once released, and streams its body
/// through a channel the test keeps.
struct Upstream {
    order: Mutex<Vec<u32>>,
    release: Notify,
    bodies: Mutex<Vec<mpsc::UnboundedSender<Bytes>>>,
}

fn stack(layer: ConcurrencyLimitLayer, gated: bool) -> (Stack, Arc<Upstream>) {
    let upstream = Arc::new(Upstream {
        order: Mutex::default(),
        release: Notify::new(),
        bodies: Mutex::default(),
    });
    let seen = upstream.clone();
    let service = service_fn(move |request: Request<u32>| {
        let upstream = seen.clone();
        async move {
            upstream.order.lock().unwrap().push(*request.body());
            if gated {
                upstream.release.notified().await;
            }
            let (tx, rx) = mpsc::unbounded_channel();
            upstream.bodies.lock().unwrap().push(tx);
            Ok::<_, Infallible>(Response::new(Streamed(rx)))
        }
    });
    (
        BoxCloneSyncService::new(ServiceBuilder::new().layer(layer).service(service)),
        upstream,
    )
}

fn calls(upstream: &Upstream) -> usize {
    upstream.order.lock().unwrap().len()
}

async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

#[tokio::test(start_paused = true)]
async fn waiters_go_in_arrival_order() {
    let (stack, upstream) = stack(ConcurrencyLimitLayer::new(2), true);
    let mut tasks = Vec::new();
    for i in 0..6 {
        let stack = stack.clone();
        tasks.push(tokio::spawn(async move {
            stack.oneshot(Request::new(i)).await.map(drop)
        }));
        settle().await;
    }
    assert_eq!(calls(&upstream), 2, "two at a time");
    for _ in 0..6 {
        upstream.release.notify_waiters();
        settle().await;
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(*upstream.order.lock().unwrap(), [0, 1, 2, 3, 4, 5]);
}

#[tokio::test(start_paused = true)]
async fn a_stream_holds_its_permit_to_the_last_byte() {
    let (stack, upstream) = stack(ConcurrencyLimitLayer::new(1), false);
    let response = stack.clone().oneshot(Request::new(1)).await.unwrap();
    assert!(response.body().holds_permit());
    let next = tokio::spawn({
        let stack = stack.clone();
        async move { stack.oneshot(Request::new(2)).await.map(drop) }
    });
    settle().await;
    assert_eq!(calls(&upstream), 1, "the stream still holds the only slot");
    let sender = upstream.bodies.lock().unwrap().remove(0);
    sender.send(Bytes::from_static(b"data: one\n\n")).unwrap();
    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    settle().await;
    assert_eq!(calls(&upstream), 1, "mid-stream: still held");
    drop(sender);
    assert!(body.frame().await.is_none());
    settle().await;
    assert_eq!(calls(&upstream), 2, "the end of the stream frees the slot");
    next.await.unwrap().unwrap();
}

#[tokio::test(start_paused = true)]
async fn dropping_a_body_or_a_future_gives_the_permit_back() {
    let (stack, upstream) = stack(ConcurrencyLimitLayer::new(1), false);
    let response = stack.clone().oneshot(Request::new(1)).await.unwrap();
    drop(response);
    let response = stack.clone().oneshot(Request::new(2)).await.unwrap();
    // A waiter that gives up leaves its place.
    let gave_up = tokio::time::timeout(
        Duration::from_secs(1),
        stack.clone().oneshot(Request::new(3)),
    )
    .await;
    assert!(gave_up.is_err());
    drop(response);
    stack.clone().oneshot(Request::new(4)).await.unwrap();
    assert_eq!(*upstream.order.lock().unwrap(), [1, 2, 4]);
}

#[tokio::test(start_paused = true)]
async fn a_long_wait_times_out() {
    let layer = ConcurrencyLimitLayer::new(1).with_queue_timeout(Duration::from_secs(2));
    let (stack, _) = stack(layer, false);
    let held = stack.clone().oneshot(Request::new(1)).await.unwrap();
    let error = stack.clone().oneshot(Request::new(2)).await.unwrap_err();
    let timeout = error
        .downcast_ref::<QueueTimeout>()
        .expect("a QueueTimeout");
    assert_eq!(timeout.waited, Duration::from_secs(2));
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn batch_work_never_takes_an_interactive_slot() {
    let layer = ConcurrencyLimitLayer::new(10).with_partitions(0.9);
    assert_eq!(layer.sizes(), (9, 1));
    let (stack, upstream) = stack(layer.clone(), true);
    let mut tasks = Vec::new();
    for i in 0..5 {
        let mut request = Request::new(100 + i);
        request.extensions_mut().insert(Priority::Batch);
        let stack = stack.clone();
        tasks.push(tokio::spawn(async move {
            stack.oneshot(request).await.map(drop)
        }));
    }
    settle().await;
    assert_eq!(calls(&upstream), 1, "batch gets its one slot");
    for i in 0..9 {
        let stack = stack.clone();
        tasks.push(tokio::spawn(async move {
            stack.oneshot(Request::new(i)).await.map(drop)
        }));
    }
    settle().await;
    assert_eq!(
        calls(&upstream),
        10,
        "all nine interactive calls go at once"
    );
    assert_eq!(layer.available(Priority::Interactive), 0);
    for _ in 0..10 {
        upstream.release.notify_waiters();
        settle().await;
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
}

#[tokio::test(start_paused = true)]
async fn readiness_is_asked_only_with_a_permit_in_hand() {
    let (mut service, mut handle) = tower_test::mock::spawn_layer::<Request<()>, Response<()>, _>(
        ConcurrencyLimitLayer::new(1),
    );
    handle.allow(0);
    tokio_test::assert_ready_ok!(service.poll_ready::<Request<()>>());
    let call = tokio::spawn(service.call(Request::new(())));
    settle().await;
    handle.allow(1);
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(Response::new(()));
    let response = call.await.unwrap().unwrap();
    assert!(response.body().holds_permit());
}
