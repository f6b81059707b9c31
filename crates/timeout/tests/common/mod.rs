//! A scripted upstream for paused-time tests: response headers after a delay, then a body of
//! chunks each after its own delay, ending cleanly or stalling for ever.

#![allow(dead_code, unreachable_pub)]

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Full};
use tokio::time::{Instant, Sleep};
use tollgate_core::body::{EndOfStream, EndReason, StreamEnd};
use tollgate_core::{BoxError, OutcomeKind};
use tower::util::BoxCloneSyncService;
use tower::{Service, service_fn};

/// How a scripted body ends after its last chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ending {
    /// Cleanly.
    Finish,
    /// Never: the stream stalls with the connection open.
    Stall,
}

/// A body that sends each chunk after its delay, then ends as told.
pub struct Script {
    chunks: VecDeque<(Duration, Bytes)>,
    ending: Ending,
    sleep: Pin<Box<Sleep>>,
    waiting: bool,
}

impl Script {
    pub fn new(chunks: &[(u64, &'static str)], ending: Ending) -> Self {
        Self {
            chunks: chunks
                .iter()
                .map(|(ms, text)| {
                    (
                        Duration::from_millis(*ms),
                        Bytes::from_static(text.as_bytes()),
                    )
                })
                .collect(),
            ending,
            sleep: Box::pin(tokio::time::sleep_until(Instant::now())),
            waiting: false,
        }
    }
}

impl Body for Script {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        let Some((delay, _)) = this.chunks.front() else {
            return match this.ending {
                Ending::Finish => Poll::Ready(None),
                Ending::Stall => Poll::Pending,
            };
        };
        if !this.waiting {
            let due = Instant::now() + *delay;
            this.sleep.as_mut().reset(due);
            this.waiting = true;
        }
        ready!(this.sleep.as_mut().poll(cx));
        this.waiting = false;
        let (_, chunk) = this.chunks.pop_front().expect("a chunk");
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.chunks.is_empty() && self.ending == Ending::Finish
    }
}

/// What the scripted upstream answers.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    /// Before the response headers (`None`: never).
    pub headers_after: Option<Duration>,
    pub chunks: Vec<(u64, &'static str)>,
    pub ending: Ending,
}

impl Answer {
    /// A 200 SSE stream: headers after `headers_ms`, then `chunks`, then `ending`.
    pub fn stream(headers_ms: u64, chunks: &[(u64, &'static str)], ending: Ending) -> Self {
        Self {
            status: 200,
            headers_after: Some(Duration::from_millis(headers_ms)),
            chunks: chunks.to_vec(),
            ending,
        }
    }

    /// Headers that never come.
    pub fn hang() -> Self {
        Self {
            status: 200,
            headers_after: None,
            chunks: Vec::new(),
            ending: Ending::Finish,
        }
    }
}

/// The scripted upstream as a service.
pub type Upstream = BoxCloneSyncService<Request<Full<Bytes>>, Response<Script>, BoxError>;

/// The scripted upstream: every call gets `answer`; the counter counts the calls.
pub fn upstream(answer: Answer) -> (Upstream, Arc<AtomicUsize>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let service = service_fn(move |_: Request<Full<Bytes>>| {
        counted.fetch_add(1, Ordering::SeqCst);
        let answer = answer.clone();
        async move {
            match answer.headers_after {
                Some(delay) => tokio::time::sleep(delay).await,
                None => std::future::pending::<()>().await,
            }
            let response = Response::builder()
                .status(answer.status)
                .header("content-type", "text/event-stream")
                .body(Script::new(&answer.chunks, answer.ending))
                .expect("a response");
            Ok::<_, BoxError>(response)
        }
    });
    (BoxCloneSyncService::new(service), calls)
}

/// An OpenAI chat completion request.
pub fn chat(stream: bool, max_tokens: Option<u32>) -> Request<Full<Bytes>> {
    let max = max_tokens.map_or(String::new(), |n| format!(r#""max_tokens":{n},"#));
    let body = format!(
        r#"{{"model":"gpt-4o-mini",{max}"stream":{stream},"messages":[{{"role":"user","content":"Tell me a story"}}]}}"#
    );
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-timeout")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .expect("a request")
}

/// Reads a body frame by frame: the data before it ended, and how it ended.
pub async fn read<B>(body: B) -> (Vec<Bytes>, Result<(), BoxError>)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let mut body = body;
    let mut chunks = Vec::new();
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(frame) => {
                if let Ok(data) = frame.into_data() {
                    chunks.push(data);
                }
            }
            Err(error) => return (chunks, Err(error.into())),
        }
    }
    (chunks, Ok(()))
}

/// Reads a response's body to its end: the data, how it ended, and the response's
/// end-of-stream handle (from a `ClassifyLayer`).
pub async fn read_observed<B>(
    response: Response<B>,
) -> (Vec<Bytes>, Result<(), BoxError>, EndOfStream)
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    let end = response
        .extensions()
        .get::<EndOfStream>()
        .cloned()
        .expect("an observed body");
    let (chunks, result) = read(response.into_body()).await;
    (chunks, result, end)
}

/// Calls `service` once, readied.
pub async fn call<S, B>(service: &mut S, request: B) -> Result<S::Response, S::Error>
where
    S: Service<B>,
{
    std::future::poll_fn(|cx| service.poll_ready(cx)).await?;
    service.call(request).await
}

/// How the stream behind `end` ended, asserting it failed with a timeout.
pub fn failed_with_timeout(end: &EndOfStream) -> StreamEnd {
    let ended = end.ended().expect("the stream has ended");
    assert_eq!(ended.reason, EndReason::Failed);
    assert_eq!(
        ended.error.as_ref().map(|o| o.kind),
        Some(OutcomeKind::Timeout)
    );
    ended
}
