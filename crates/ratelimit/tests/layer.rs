//! RateLimitLayer under paused time: reservations, FIFO waits, refusals, reconciliation from
//! usage, header sync, 429 pauses, learning, and the tower contract.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tokio::time::Instant;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::body::ObservedBody;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::error::{ExceedsLimit, RateLimited};
use tollgate_core::{BoxError, Deadline, RateLimitDimension};
use tollgate_ratelimit::{Dimension, MaxWait, Quotas, RateLimitLayer, Store};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// What the fake provider answers: status, headers, and the usage it reports.
#[derive(Clone)]
struct Answer {
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    usage: (u64, u64),
}

impl Answer {
    fn ok(input: u64, output: u64) -> Self {
        Self {
            status: StatusCode::OK,
            headers: Vec::new(),
            usage: (input, output),
        }
    }
}

type Calls = Arc<Mutex<Vec<Instant>>>;
type Stack =
    BoxCloneSyncService<Request<Full<Bytes>>, Response<ObservedBody<Full<Bytes>>>, BoxError>;

/// Annotate → RateLimit → Classify → a fake provider that records when it was called.
fn stack(layer: RateLimitLayer, answer: Arc<Mutex<Answer>>) -> (Stack, Calls) {
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let provider = service_fn(move |_: Request<Full<Bytes>>| {
        seen.lock().unwrap().push(Instant::now());
        let answer = answer.lock().unwrap().clone();
        async move {
            let body = format!(
                r#"{{"choices":[],"usage":{{"prompt_tokens":{},"completion_tokens":{},"total_tokens":{}}}}}"#,
                answer.usage.0,
                answer.usage.1,
                answer.usage.0 + answer.usage.1
            );
            let mut response = Response::builder()
                .status(answer.status)
                .header("content-type", "application/json");
            for (name, value) in &answer.headers {
                response = response.header(*name, value);
            }
            Ok::<_, Infallible>(response.body(Full::new(Bytes::from(body))).unwrap())
        }
    });
    let service = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(layer)
        .layer(ClassifyLayer::new())
        .service(provider);
    (BoxCloneSyncService::new(service), calls)
}

fn chat(max_tokens: u32) -> Request<Full<Bytes>> {
    // "Hello!" is 2 tokens, plus 4 for the message: 6 input tokens estimated.
    let body = format!(
        r#"{{"model":"gpt-4o-mini","max_tokens":{max_tokens},"messages":[{{"role":"user","content":"Hello!"}}]}}"#
    );
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-test")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn answer(a: Answer) -> Arc<Mutex<Answer>> {
    Arc::new(Mutex::new(a))
}

async fn send(
    service: &Stack,
    request: Request<Full<Bytes>>,
) -> Result<Response<ObservedBody<Full<Bytes>>>, BoxError> {
    service.clone().oneshot(request).await
}

fn refused(result: Result<Response<ObservedBody<Full<Bytes>>>, BoxError>) -> BoxError {
    match result {
        Ok(response) => panic!("expected a refusal, got {}", response.status()),
        Err(error) => error,
    }
}

/// Sends and reads the body to its end, so the reservation is reconciled.
async fn complete(service: &Stack, request: Request<Full<Bytes>>) -> Response<()> {
    let response = send(service, request).await.expect("a response");
    let (parts, body) = response.into_parts();
    body.collect().await.expect("the body");
    Response::from_parts(parts, ())
}

#[tokio::test(start_paused = true)]
async fn requests_wait_their_turn_in_arrival_order() {
    let layer = RateLimitLayer::new(Quotas::per_minute(60, 0));
    let (service, calls) = stack(layer, answer(Answer::ok(6, 1)));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..63 {
        let service = service.clone();
        tasks.push(tokio::spawn(
            async move { complete(&service, chat(10)).await },
        ));
        tokio::task::yield_now().await;
    }
    for task in tasks {
        task.await.unwrap();
    }
    let offsets: Vec<u64> = calls
        .lock()
        .unwrap()
        .iter()
        .map(|at| (*at - start).as_secs())
        .collect();
    assert_eq!(offsets.len(), 63);
    assert!(
        offsets[..60].iter().all(|&s| s == 0),
        "a full minute's quota at once"
    );
    assert_eq!(&offsets[60..], &[1, 2, 3], "then one a second, in order");
}

#[tokio::test(start_paused = true)]
async fn a_long_wait_fails_fast_when_asked_and_a_too_big_request_at_once() {
    let layer =
        RateLimitLayer::new(Quotas::per_minute(0, 1_000)).with_max_wait(Duration::from_secs(5));
    let (service, calls) = stack(layer, answer(Answer::ok(6, 1)));
    // Hold 906 of 1,000 tokens: the next 906 needs about 48 s of refill.
    let held = send(&service, chat(900)).await.unwrap();
    let error = refused(send(&service, chat(900)).await);
    let limited = error
        .downcast_ref::<RateLimited>()
        .expect("a RateLimited error");
    assert_eq!(limited.dimension, RateLimitDimension::Tokens);
    let wait = limited.retry_after.unwrap();
    assert!(
        wait > Duration::from_secs(48) && wait < Duration::from_secs(50),
        "{wait:?}"
    );

    // A deadline shortens the wait the same way.
    let mut request = chat(100);
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_millis(1)));
    assert!(refused(send(&service, request).await).is::<RateLimited>());
    let mut request = chat(50);
    request
        .extensions_mut()
        .insert(MaxWait(Duration::from_secs(60)));
    assert!(send(&service, request).await.is_ok(), "56 tokens fit now");

    let error = refused(send(&service, chat(5_000)).await);
    let never = error
        .downcast_ref::<ExceedsLimit>()
        .expect("an ExceedsLimit error");
    assert_eq!((never.requested, never.limit), (5_006, 1_000));
    assert_eq!(
        calls.lock().unwrap().len(),
        2,
        "refused requests are never sent"
    );
    drop(held);
}

#[tokio::test(start_paused = true)]
async fn a_request_that_can_never_fit_is_refused_before_any_wait() {
    // One request a minute, and it is taken: a second would wait ~60 s for the requests
    // dimension. One whose tokens exceed the whole token quota is refused at once instead.
    let layer = RateLimitLayer::new(Quotas::per_minute(1, 1_000));
    let (service, calls) = stack(layer, answer(Answer::ok(6, 1)));
    complete(&service, chat(10)).await;
    let start = Instant::now();
    let mut request = chat(5_000);
    request
        .extensions_mut()
        .insert(MaxWait(Duration::from_secs(120)));
    let error = refused(send(&service, request).await);
    let never = error
        .downcast_ref::<ExceedsLimit>()
        .expect("an ExceedsLimit error");
    assert_eq!(never.dimension, RateLimitDimension::Tokens);
    assert_eq!(
        start.elapsed(),
        Duration::ZERO,
        "no wait for the requests dimension"
    );
    assert_eq!(calls.lock().unwrap().len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_caller_that_gives_up_returns_its_reservation() {
    let layer = RateLimitLayer::new(Quotas::per_minute(60, 0));
    let (service, calls) = stack(layer, answer(Answer::ok(6, 1)));
    for _ in 0..60 {
        complete(&service, chat(10)).await;
    }
    // This one would go in 1 s; the caller gives up after 100 ms.
    let gave_up = tokio::time::timeout(Duration::from_millis(100), send(&service, chat(10))).await;
    assert!(gave_up.is_err());
    let start = Instant::now();
    complete(&service, chat(10)).await;
    assert_eq!(
        Instant::now() - start,
        Duration::from_millis(900),
        "its turn was given back"
    );
    assert_eq!(calls.lock().unwrap().len(), 61);
}

#[tokio::test(start_paused = true)]
async fn answers_refund_what_they_did_not_use() {
    let layer = RateLimitLayer::new(Quotas::per_minute(0, 1_000));
    let store = layer.store().clone();
    let (service, _) = stack(layer, answer(Answer::ok(6, 14)));
    let response = send(&service, chat(900)).await.unwrap();
    let scope = store.scope(
        &tollgate_core::Scope::new(tollgate_core::Provider::OpenAi)
            .with_credential(Some(tollgate_core::CredentialId::from_secret(b"sk-test")))
            .with_model(Some("gpt-4o-mini".into())),
        Instant::now(),
    );
    let remaining = |store: &tollgate_ratelimit::MemoryStore| {
        store
            .view(&scope, Dimension::Tokens, Instant::now())
            .unwrap()
            .remaining
    };
    assert_eq!(
        remaining(&store),
        1_000 - 906,
        "the estimate is held while the answer streams"
    );
    response.into_body().collect().await.unwrap();
    assert_eq!(
        remaining(&store),
        1_000 - 20,
        "reconciled to the 6 + 14 tokens used"
    );
    assert!(tollgate_ratelimit::MemoryStore::stats(&scope).estimate_error() > 40.0);
}

#[tokio::test(start_paused = true)]
async fn provider_headers_tighten_and_429s_pause_everyone() {
    let layer = RateLimitLayer::new(Quotas::per_minute(600, 0));
    let provider = answer(Answer {
        status: StatusCode::OK,
        headers: vec![
            ("x-ratelimit-limit-requests", "600".into()),
            ("x-ratelimit-remaining-requests", "1".into()),
        ],
        usage: (6, 1),
    });
    let (service, calls) = stack(layer, provider.clone());
    let start = Instant::now();
    complete(&service, chat(10)).await;
    // The provider says one request is left (someone else uses this key): the next goes now,
    // the one after waits for the refill, 100 ms at 600 a minute.
    complete(&service, chat(10)).await;
    complete(&service, chat(10)).await;
    assert_eq!(Instant::now() - start, Duration::from_millis(100));

    *provider.lock().unwrap() = Answer {
        status: StatusCode::TOO_MANY_REQUESTS,
        headers: vec![("retry-after", "7".into())],
        usage: (0, 0),
    };
    complete(&service, chat(10)).await;
    *provider.lock().unwrap() = Answer::ok(6, 1);
    let paused_at = Instant::now();
    complete(&service, chat(10)).await;
    assert_eq!(
        Instant::now() - paused_at,
        Duration::from_secs(7),
        "every caller waits out the 429"
    );
    assert_eq!(calls.lock().unwrap().len(), 5);
}

#[tokio::test(start_paused = true)]
async fn unconfigured_limits_are_learned_from_headers() {
    let layer = RateLimitLayer::new(Quotas::unlimited());
    let provider = answer(Answer {
        status: StatusCode::OK,
        headers: vec![
            ("x-ratelimit-limit-requests", "60".into()),
            ("x-ratelimit-remaining-requests", "0".into()),
        ],
        usage: (6, 1),
    });
    let (service, _) = stack(layer, provider);
    complete(&service, chat(10)).await;
    let start = Instant::now();
    complete(&service, chat(10)).await;
    assert_eq!(
        Instant::now() - start,
        Duration::from_secs(1),
        "learned 60 a minute, with none left"
    );
}

#[tokio::test(start_paused = true)]
async fn waiting_holds_no_downstream_capacity() {
    let layer = RateLimitLayer::new(Quotas::per_minute(1, 0));
    let (mut service, mut handle) =
        tower_test::mock::spawn_layer::<Request<()>, Response<()>, _>(layer);
    handle.allow(0);
    tokio_test::assert_ready_ok!(
        service.poll_ready::<Request<()>>(),
        "always ready: capacity is per request"
    );
    let first = tokio::spawn(service.call(Request::new(())));
    tokio::task::yield_now().await;
    handle.allow(1);
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(Response::new(()));
    first.await.unwrap().unwrap();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Through the layer, with any mix of arrivals, sizes and patience, the provider never sees
    /// more than a dimension's quota in any window: `limit + limit × w / 60 s`.
    #[test]
    fn no_admitted_sequence_exceeds_a_quota(
        arrivals in prop::collection::vec((0u64..1_500, 1u32..400, prop::option::of(0u64..20)), 1..120),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build().unwrap();
        runtime.block_on(async move {
            let (rpm, tpm) = (30u64, 3_000u64);
            let layer = RateLimitLayer::new(Quotas::per_minute(rpm, tpm));
            let sent: Arc<Mutex<Vec<(Instant, u64)>>> = Arc::default();
            let log = sent.clone();
            let provider = service_fn(move |request: Request<Full<Bytes>>| {
                let llm = request.extensions().get::<tollgate_core::LlmRequest>().unwrap().clone();
                log.lock().unwrap().push((Instant::now(), u64::from(llm.input_tokens_estimate) + u64::from(llm.max_output_tokens.unwrap())));
                async { Ok::<_, Infallible>(Response::new(Full::new(Bytes::new()))) }
            });
            let service = ServiceBuilder::new().layer(AnnotateLayer::new()).layer(layer).layer(ClassifyLayer::new()).service(provider);
            let mut tasks = Vec::new();
            for (gap_ms, max_tokens, patience) in arrivals {
                tokio::time::sleep(Duration::from_millis(gap_ms)).await;
                let mut request = chat(max_tokens);
                if let Some(secs) = patience {
                    request.extensions_mut().insert(MaxWait(Duration::from_secs(secs)));
                }
                let service = service.clone();
                tasks.push(tokio::spawn(async move {
                    if let Ok(response) = service.oneshot(request).await {
                        let _ = response.into_body().collect().await;
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
            let mut sent = sent.lock().unwrap().clone();
            sent.sort_by_key(|(at, _)| *at);
            for i in 0..sent.len() {
                let (mut requests, mut tokens) = (0u64, 0u64);
                for (at, cost) in &sent[i..] {
                    requests += 1;
                    tokens += cost;
                    let w = (*at - sent[i].0).as_secs_f64() / 60.0;
                    assert!(requests as f64 <= rpm as f64 * (1.0 + w) + 1e-6, "{requests} requests in {w} min");
                    assert!(tokens as f64 <= tpm as f64 * (1.0 + w) + 1e-6, "{tokens} tokens in {w} min");
                }
            }
        });
    }
}

/// Annotate → RateLimit → a layer below that fails every call with `error()`.
fn failing_below(layer: RateLimitLayer, error: fn() -> BoxError) -> Stack {
    let below = service_fn(move |_: Request<Full<Bytes>>| async move {
        Err::<Response<ObservedBody<Full<Bytes>>>, BoxError>(error())
    });
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .layer(layer)
            .service(below),
    )
}

#[tokio::test(start_paused = true)]
async fn a_call_refused_below_gives_its_whole_reservation_back() {
    // A breaker, a queue or another limit below refused it: it never left, so neither its
    // request nor its tokens count.
    let refusals: [fn() -> BoxError; 3] = [
        || {
            Box::new(tollgate_core::error::QueueTimeout {
                waited: Duration::from_secs(1),
            })
        },
        || Box::new(tollgate_core::error::CircuitOpen::new(None)),
        || Box::new(tollgate_core::error::Overloaded { retry_after: None }),
    ];
    for refusal in refusals {
        let layer = RateLimitLayer::new(Quotas::per_minute(10, 1_000));
        let store = layer.store().clone();
        let service = failing_below(layer, refusal);
        let error = refused(send(&service, chat(100)).await);
        let scope = store.scope(
            &tollgate_core::Scope::new(tollgate_core::Provider::OpenAi)
                .with_credential(Some(tollgate_core::CredentialId::from_secret(b"sk-test")))
                .with_model(Some("gpt-4o-mini".into())),
            Instant::now(),
        );
        let remaining = |dimension| {
            store
                .view(&scope, dimension, Instant::now())
                .unwrap()
                .remaining
        };
        assert_eq!(remaining(Dimension::Requests), 10, "{error}");
        assert_eq!(remaining(Dimension::Tokens), 1_000, "{error}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_call_that_may_have_been_sent_keeps_its_reservation() {
    // Refused before any connection: nothing was sent, nothing is counted. Reset after it was
    // sent: the provider may have counted it, so the reservation stands.
    let cases: [(fn() -> BoxError, bool); 2] = [
        (
            || Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)),
            true,
        ),
        (
            || Box::new(std::io::Error::from(std::io::ErrorKind::ConnectionReset)),
            false,
        ),
    ];
    for (error, given_back) in cases {
        let layer = RateLimitLayer::new(Quotas::per_minute(10, 1_000));
        let store = layer.store().clone();
        let service = failing_below(layer, error);
        let error = refused(send(&service, chat(100)).await);
        let scope = store.scope(
            &tollgate_core::Scope::new(tollgate_core::Provider::OpenAi)
                .with_credential(Some(tollgate_core::CredentialId::from_secret(b"sk-test")))
                .with_model(Some("gpt-4o-mini".into())),
            Instant::now(),
        );
        let requests = store
            .view(&scope, Dimension::Requests, Instant::now())
            .unwrap()
            .remaining;
        assert_eq!(requests, if given_back { 10 } else { 9 }, "{error}");
    }
}
