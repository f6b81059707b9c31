//! Driving futures and bodies that are always ready, without an executor.

use std::fmt::Debug;
use std::future::{Future, poll_fn};
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use bytes::Buf;
use http::Response;
use http_body::Body;
use tower::Service;

/// Polls `future` once with a no-op waker and returns its output.
///
/// # Panics
///
/// If the future is not ready at once: a bench service or body that waits is a bench bug.
pub fn now_or_never<F: Future>(future: F) -> F::Output {
    let mut future = pin!(future);
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(output) => output,
        Poll::Pending => panic!("the bench services and bodies are always ready"),
    }
}

/// One call as a tower client makes it: `poll_ready`, `call`, and the response future, each
/// polled once.
///
/// # Panics
///
/// If the service is not ready at once, or fails.
pub fn roundtrip<S, R>(service: &mut S, request: R) -> S::Response
where
    S: Service<R>,
    S::Error: Debug,
{
    now_or_never(poll_fn(|cx| service.poll_ready(cx))).unwrap();
    now_or_never(service.call(request)).unwrap()
}

/// Reads a body to its end, as a caller would (which runs the layers' end-of-stream hooks), and
/// returns the bytes read.
///
/// # Panics
///
/// If a frame is not ready at once, or is an error.
pub fn drain<B>(body: B) -> usize
where
    B: Body,
    B::Error: Debug,
{
    let mut body = pin!(body);
    let mut read = 0;
    while let Some(frame) = now_or_never(poll_fn(|cx| body.as_mut().poll_frame(cx))) {
        if let Ok(data) = frame.unwrap().into_data() {
            read += data.remaining();
        }
    }
    read
}

/// A [`roundtrip`] whose response body is then [drained](drain) and dropped: the whole call,
/// for layers that hold a permit until the body's end. Returns the bytes read.
///
/// # Panics
///
/// As [`roundtrip`] and [`drain`].
pub fn roundtrip_drained<S, R, B>(service: &mut S, request: R) -> usize
where
    S: Service<R, Response = Response<B>>,
    S::Error: Debug,
    B: Body,
    B::Error: Debug,
{
    drain(roundtrip(service, request).into_body())
}

/// A current-thread tokio runtime with timers: enter it (`let _guard = rt.enter();`) around
/// layers that read tokio's clock or make a `Sleep`.
///
/// # Panics
///
/// If the runtime cannot be built.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}
