//! `FallbackLayer` against a scripted upstream: each trigger falls back, the errors a caller
//! must see never do unless asked, the answer is marked (extension and header), the fallback
//! gets the original request, and a fallback that fails too changes nothing.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{StreamExt, stream};
use http::{HeaderName, Request, Response, StatusCode};
use http_body::Frame;
use http_body_util::{BodyExt, Either, Full, StreamBody};
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::error::{CircuitOpen, Overloaded, QueueTimeout, RateLimited};
use tollgate_core::{BoxError, LlmRequest, Outcome, OutcomeKind, RateLimitDimension};
use tollgate_fallback::{
    DEGRADED_HEADER, Degraded, FallbackLayer, FallbackPolicy, Trigger, Triggers,
};
use tollgate_timeout::error::IdleTimeout;
use tollgate_timeout::{TimeoutConfig, TimeoutLayer};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// An OpenAI chat completion request.
fn chat(stream: bool, max_tokens: Option<u32>) -> Request<Full<Bytes>> {
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

/// What the scripted upstream does.
#[derive(Clone)]
enum Upstream {
    Respond(u16, &'static [(&'static str, &'static str)], &'static str),
    Fail(Arc<dyn Fn() -> BoxError + Send + Sync>),
}

fn respond(status: u16, body: &'static str) -> Upstream {
    Upstream::Respond(status, &[], body)
}

fn fail(error: impl Fn() -> BoxError + Send + Sync + 'static) -> Upstream {
    Upstream::Fail(Arc::new(error))
}

type Body = Full<Bytes>;
type Service = BoxCloneSyncService<Request<Body>, Response<Body>, BoxError>;

fn upstream(script: Upstream) -> Service {
    BoxCloneSyncService::new(service_fn(move |_: Request<Body>| {
        let script = script.clone();
        async move {
            match script {
                Upstream::Respond(status, headers, body) => {
                    let mut response = Response::builder().status(status);
                    for (name, value) in headers {
                        response = response.header(*name, *value);
                    }
                    Ok(response.body(Full::new(Bytes::from_static(body.as_bytes())))?)
                }
                Upstream::Fail(error) => Err(error()),
            }
        }
    }))
}

/// What the fallback was asked.
#[derive(Clone, Debug)]
struct Asked {
    uri: String,
    authorization: Option<String>,
    body: Bytes,
    degraded: Option<Degraded>,
    model: Option<String>,
}

/// A local stand-in that answers every request, and remembers what it was asked.
fn local(asked: Arc<Mutex<Vec<Asked>>>) -> Service {
    BoxCloneSyncService::new(service_fn(move |request: Request<Body>| {
        let asked = asked.clone();
        async move {
            let (parts, body) = request.into_parts();
            let body = body.collect().await?.to_bytes();
            asked.lock().unwrap().push(Asked {
                uri: parts.uri.to_string(),
                authorization: parts
                    .headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned()),
                body,
                degraded: parts.extensions.get::<Degraded>().cloned(),
                model: parts
                    .extensions
                    .get::<LlmRequest>()
                    .and_then(|llm| llm.model.as_deref().map(str::to_owned)),
            });
            Ok(Response::new(Full::new(Bytes::from_static(
                b"local answer",
            ))))
        }
    }))
}

struct Run {
    result: Result<Response<Either<tollgate_core::body::ObservedBody<Body>, Body>>, BoxError>,
    asked: Vec<Asked>,
}

async fn run_with<P: FallbackPolicy>(
    script: Upstream,
    layer: impl FnOnce(Service) -> FallbackLayer<Service, P>,
) -> Run {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(layer(local(asked.clone())))
        .layer(ClassifyLayer::new())
        .service(upstream(script));
    let result = stack.oneshot(chat(false, Some(64))).await;
    let asked = asked.lock().unwrap().clone();
    Run { result, asked }
}

async fn run(script: Upstream) -> Run {
    run_with(script, FallbackLayer::new).await
}

/// The degraded answer: the fallback's body, marked with `trigger`.
async fn assert_degraded(run: Run, trigger: Trigger) -> Degraded {
    let response = run
        .result
        .unwrap_or_else(|e| panic!("an answer for {trigger}, not {e}"));
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()[DEGRADED_HEADER], trigger.as_str());
    let degraded = response
        .extensions()
        .get::<Degraded>()
        .cloned()
        .expect("marked degraded");
    assert_eq!(degraded.trigger, trigger);
    assert!(matches!(response.body(), Either::Right(_)));
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, "local answer");
    assert_eq!(run.asked.len(), 1);
    assert_eq!(run.asked[0].degraded.as_ref(), Some(&degraded));
    degraded
}

/// The upstream's own answer, unmarked, and the fallback never asked.
fn assert_passed_through(run: &Run, status: u16) {
    let response = run.result.as_ref().expect("the upstream's response");
    assert_eq!(response.status(), status);
    assert!(!response.headers().contains_key(DEGRADED_HEADER));
    assert!(response.extensions().get::<Degraded>().is_none());
    assert!(matches!(response.body(), Either::Left(_)));
    assert!(run.asked.is_empty(), "the fallback was not asked");
}

const OVERLOADED: &str =
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#;
const RATE_LIMITED: &str = r#"{"error":{"message":"Rate limit reached for gpt-4o-mini on tokens per min (TPM): Limit 200000, Used 199000, Requested 2000. Please try again in 300ms.","type":"tokens","param":null,"code":"rate_limit_exceeded"}}"#;
const QUOTA: &str = r#"{"error":{"message":"You exceeded your current quota, please check your plan and billing details.","type":"insufficient_quota","param":null,"code":"insufficient_quota"}}"#;
const BAD_KEY: &str = r#"{"error":{"message":"Incorrect API key provided.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}"#;
const TOO_LONG: &str = r#"{"error":{"message":"This model's maximum context length is 128000 tokens.","type":"invalid_request_error","param":"messages","code":"context_length_exceeded"}}"#;

#[tokio::test(start_paused = true)]
async fn each_unavailable_upstream_falls_back() {
    let degraded = assert_degraded(run(respond(529, OVERLOADED)).await, Trigger::Overloaded).await;
    assert_eq!(
        degraded.outcome.status,
        Some(StatusCode::from_u16(529).unwrap())
    );

    let degraded =
        assert_degraded(run(respond(429, RATE_LIMITED)).await, Trigger::RateLimited).await;
    assert_eq!(
        degraded.outcome.kind,
        OutcomeKind::RateLimited(RateLimitDimension::Tokens)
    );
    assert_eq!(
        degraded.outcome.retry_after,
        Some(Duration::from_millis(300))
    );

    assert_degraded(run(respond(500, "{}")).await, Trigger::ServerError).await;
    assert_degraded(run(respond(504, "")).await, Trigger::Timeout).await;
    assert_degraded(
        run(fail(|| {
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
        }))
        .await,
        Trigger::ConnectError,
    )
    .await;
    assert_degraded(
        run(fail(|| {
            Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset))
        }))
        .await,
        Trigger::ConnectionLost,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn each_local_refusal_falls_back() {
    let wait = Some(Duration::from_secs(12));
    let degraded = assert_degraded(
        run(fail(move || Box::new(CircuitOpen::new(wait)))).await,
        Trigger::CircuitOpen,
    )
    .await;
    assert_eq!(degraded.outcome.retry_after, wait);
    // A limiter that would have made the call wait past its deadline.
    assert_degraded(
        run(fail(move || {
            Box::new(RateLimited {
                dimension: RateLimitDimension::Requests,
                retry_after: wait,
            })
        }))
        .await,
        Trigger::RateLimited,
    )
    .await;
    assert_degraded(
        run(fail(|| Box::new(Overloaded { retry_after: None }))).await,
        Trigger::Overloaded,
    )
    .await;
    assert_degraded(
        run(fail(|| {
            Box::new(QueueTimeout {
                waited: Duration::from_secs(2),
            })
        }))
        .await,
        Trigger::Timeout,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_timeout_before_the_first_byte_falls_back() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    let hung =
        service_fn(|_: Request<Body>| std::future::pending::<Result<Response<Body>, BoxError>>());
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(FallbackLayer::new(local(asked.clone())))
        .layer(
            TimeoutLayer::new(TimeoutConfig {
                first_byte: Some(Duration::from_secs(5)),
                ..TimeoutConfig::default()
            })
            .unwrap(),
        )
        .layer(ClassifyLayer::new())
        .service(hung);
    let start = tokio::time::Instant::now();
    let response = stack.oneshot(chat(true, Some(64))).await.unwrap();
    assert_eq!(start.elapsed(), Duration::from_secs(5));
    assert_eq!(response.headers()[DEGRADED_HEADER], "timeout");
    assert_eq!(asked.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_after_its_first_byte_reaches_the_caller_as_it_is() {
    let asked = Arc::new(Mutex::new(Vec::new()));
    // One event, then silence.
    let stalls = service_fn(|_: Request<Body>| async {
        let event = Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"data: {}\n\n")));
        let frames = stream::iter([event]).chain(stream::pending());
        Ok::<_, BoxError>(Response::new(StreamBody::new(frames)))
    });
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(FallbackLayer::new(local(asked.clone())))
        .layer(TimeoutLayer::new(TimeoutConfig::default()).unwrap())
        .layer(ClassifyLayer::new())
        .service(stalls);
    let response = stack.oneshot(chat(true, Some(64))).await.unwrap();
    assert!(response.extensions().get::<Degraded>().is_none());
    let mut body = response.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert_eq!(first.into_data().unwrap(), "data: {}\n\n");
    let end = body.frame().await.unwrap().unwrap_err();
    assert!(end.is::<IdleTimeout>(), "{end}");
    assert!(asked.lock().unwrap().is_empty());
}

#[tokio::test(start_paused = true)]
async fn errors_the_caller_must_see_never_fall_back_by_default() {
    assert_passed_through(&run(respond(429, QUOTA)).await, 429);
    assert_passed_through(&run(respond(401, BAD_KEY)).await, 401);
    assert_passed_through(&run(respond(403, "{}")).await, 403);
    assert_passed_through(&run(respond(400, TOO_LONG)).await, 400);
    assert_passed_through(&run(respond(422, "{}")).await, 422);
    assert_passed_through(&run(respond(413, "")).await, 413);
    // And a success is the upstream's, untouched.
    assert_passed_through(&run(respond(200, "{}")).await, 200);
}

#[tokio::test(start_paused = true)]
async fn unless_asked() {
    let with = |trigger| {
        move |fallback| FallbackLayer::new(fallback).with_policy(Triggers::default().with(trigger))
    };
    assert_degraded(
        run_with(respond(429, QUOTA), with(Trigger::QuotaExhausted)).await,
        Trigger::QuotaExhausted,
    )
    .await;
    assert_degraded(
        run_with(respond(401, BAD_KEY), with(Trigger::AuthError)).await,
        Trigger::AuthError,
    )
    .await;
    let all = |fallback| FallbackLayer::new(fallback).with_policy(Triggers::all());
    let degraded = assert_degraded(
        run_with(respond(400, TOO_LONG), all).await,
        Trigger::InvalidRequest,
    )
    .await;
    assert_eq!(degraded.outcome.kind, OutcomeKind::ContextLengthExceeded);
    // And a trigger can be taken away.
    let no_429 = |fallback| {
        FallbackLayer::new(fallback).with_policy(Triggers::default().without(Trigger::RateLimited))
    };
    assert_passed_through(&run_with(respond(429, RATE_LIMITED), no_429).await, 429);
}

#[tokio::test(start_paused = true)]
async fn a_closure_decides() {
    // Fall back on a 429 only when its wait is long.
    let patient = |fallback| {
        FallbackLayer::new(fallback).with_policy(|trigger: Trigger, outcome: &Outcome| {
            trigger != Trigger::RateLimited
                || outcome
                    .retry_after
                    .is_none_or(|wait| wait > Duration::from_secs(5))
        })
    };
    assert_passed_through(&run_with(respond(429, RATE_LIMITED), patient).await, 429);
    assert_degraded(
        run_with(respond(529, OVERLOADED), patient).await,
        Trigger::Overloaded,
    )
    .await;
}

#[tokio::test(start_paused = true)]
async fn the_fallback_gets_the_original_request() {
    let run = run(respond(529, OVERLOADED)).await;
    let asked = run.asked[0].clone();
    assert_degraded(run, Trigger::Overloaded).await;
    assert_eq!(asked.uri, "https://api.openai.com/v1/chat/completions");
    assert_eq!(asked.authorization.as_deref(), Some("Bearer sk-timeout"));
    assert_eq!(
        asked.body,
        chat(false, Some(64))
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
    );
    assert_eq!(
        asked.model.as_deref(),
        Some("gpt-4o-mini"),
        "the annotation too"
    );
}

#[tokio::test(start_paused = true)]
async fn the_mark_is_configurable() {
    let named = |fallback| {
        FallbackLayer::new(fallback).with_header(HeaderName::from_static("x-served-by-fallback"))
    };
    let run = run_with(respond(529, OVERLOADED), named).await;
    let response = run.result.unwrap();
    assert_eq!(response.headers()["x-served-by-fallback"], "overloaded");
    assert!(!response.headers().contains_key(DEGRADED_HEADER));

    let quiet = |fallback| FallbackLayer::new(fallback).without_header();
    let run = run_with(respond(529, OVERLOADED), quiet).await;
    let response = run.result.unwrap();
    assert!(!response.headers().contains_key(DEGRADED_HEADER));
    assert_eq!(
        response.extensions().get::<Degraded>().map(|d| d.trigger),
        Some(Trigger::Overloaded),
        "the extension is always there"
    );
}

#[tokio::test(start_paused = true)]
async fn a_fallback_that_fails_too_leaves_the_upstreams_failure() {
    let broken: Service = BoxCloneSyncService::new(service_fn(|_: Request<Body>| async {
        Err::<Response<Body>, BoxError>("no stale entry".into())
    }));
    let stack = |script| {
        ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .layer(FallbackLayer::new(broken.clone()))
            .layer(ClassifyLayer::new())
            .service(upstream(script))
    };
    // A response: the caller gets it, unmarked.
    let response = stack(respond(529, OVERLOADED))
        .oneshot(chat(false, None))
        .await
        .unwrap();
    assert_eq!(response.status(), 529);
    assert!(response.extensions().get::<Degraded>().is_none());
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, OVERLOADED);
    // An error: the caller gets it, `retry_after` and all.
    let wait = Some(Duration::from_secs(3));
    let error = stack(fail(move || Box::new(CircuitOpen::new(wait))))
        .oneshot(chat(false, None))
        .await
        .unwrap_err();
    assert_eq!(
        error.downcast_ref::<CircuitOpen>(),
        Some(&CircuitOpen::new(wait))
    );
}
