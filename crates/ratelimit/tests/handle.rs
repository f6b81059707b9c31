//! `RateLimitHandle::snapshot()`: each scope's limits, where each comes from, what remains and
//! what requests in flight hold.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use tokio::sync::Semaphore;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::body::ObservedBody;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{BoxError, CredentialId, Provider, Scope};
use tollgate_ratelimit::{
    Dimension, LimitState, QuotaSource, QuotaTable, Quotas, RateLimitHandle, RateLimitLayer,
    ScopeMatch,
};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

type Stack =
    BoxCloneSyncService<Request<Full<Bytes>>, Response<ObservedBody<Full<Bytes>>>, BoxError>;

/// A status and the headers that come with it.
type Answer = (StatusCode, Vec<(&'static str, &'static str)>);

/// A fake provider: answers in the order queued, each once the test lets it through the gate.
#[derive(Clone)]
struct Upstream {
    answers: Arc<Mutex<VecDeque<Answer>>>,
    gate: Arc<Semaphore>,
    called: Arc<AtomicUsize>,
}

impl Default for Upstream {
    fn default() -> Self {
        Self {
            answers: Arc::default(),
            gate: Arc::new(Semaphore::new(0)),
            called: Arc::default(),
        }
    }
}

impl Upstream {
    fn queue(&self, status: StatusCode, headers: Vec<(&'static str, &'static str)>) {
        self.answers.lock().unwrap().push_back((status, headers));
        self.gate.add_permits(1);
    }

    /// Like `queue`, but the answer waits for `let_through`.
    fn queue_held(&self, status: StatusCode) {
        self.answers.lock().unwrap().push_back((status, Vec::new()));
    }

    fn let_through(&self) {
        self.gate.add_permits(1);
    }

    async fn called(&self, times: usize) {
        while self.called.load(Ordering::SeqCst) < times {
            tokio::task::yield_now().await;
        }
    }
}

fn stack(layer: RateLimitLayer, provider: &Upstream) -> Stack {
    let provider = provider.clone();
    let upstream = service_fn(move |_: Request<Full<Bytes>>| {
        let provider = provider.clone();
        async move {
            provider.called.fetch_add(1, Ordering::SeqCst);
            provider.gate.acquire().await.unwrap().forget();
            let (status, headers) = provider.answers.lock().unwrap().pop_front().unwrap();
            let body = if status == StatusCode::OK {
                r#"{"choices":[],"usage":{"prompt_tokens":6,"completion_tokens":10,"total_tokens":16}}"#
            } else {
                r#"{"error":{"message":"Rate limit reached","code":"rate_limit_exceeded"}}"#
            };
            let mut response = Response::builder()
                .status(status)
                .header("content-type", "application/json");
            for (name, value) in headers {
                response = response.header(name, value);
            }
            Ok::<_, Infallible>(response.body(Full::new(Bytes::from(body))).unwrap())
        }
    });
    let service = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(layer)
        .layer(ClassifyLayer::new())
        .service(upstream);
    BoxCloneSyncService::new(service)
}

/// A chat request to `model` reserving 6 input and 50 output tokens.
fn chat(model: &str) -> Request<Full<Bytes>> {
    let body = format!(
        r#"{{"model":"{model}","max_tokens":50,"messages":[{{"role":"user","content":"Hello!"}}]}}"#
    );
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-test")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

fn scope(model: &str) -> Scope {
    Scope::new(Provider::OpenAi)
        .with_credential(Some(CredentialId::from_secret(b"sk-test")))
        .with_model(Some(model.into()))
}

/// Sends and reads the body to its end: the request is settled.
async fn complete(service: &Stack, request: Request<Full<Bytes>>) -> StatusCode {
    let response = service.clone().oneshot(request).await.expect("a response");
    let status = response.status();
    response.into_body().collect().await.expect("the body");
    status
}

fn limit(handle: &RateLimitHandle, model: &str, dimension: Dimension) -> LimitState {
    handle
        .limits(&scope(model))
        .into_iter()
        .find(|l| l.dimension == dimension)
        .unwrap_or_else(|| panic!("{model}: no {dimension:?} limit"))
}

#[tokio::test(start_paused = true)]
async fn the_snapshot_shows_configured_header_reported_and_learned_limits() {
    // gpt-4o-mini: 100 requests a minute configured; gpt-4o: nothing configured.
    let table = QuotaTable::new(Quotas::unlimited())
        .with(ScopeMatch::model("gpt-4o-mini"), Quotas::per_minute(100, 0));
    let layer = RateLimitLayer::with_table(table);
    let handle = layer.handle();
    let provider = Upstream::default();
    let service = stack(layer, &provider);
    assert!(handle.snapshot().is_empty());

    // The provider's headers report a tokens quota nobody configured.
    provider.queue(
        StatusCode::OK,
        vec![
            ("x-ratelimit-limit-tokens", "30000"),
            ("x-ratelimit-remaining-tokens", "29000"),
        ],
    );
    assert_eq!(
        complete(&service, chat("gpt-4o-mini")).await,
        StatusCode::OK
    );
    let requests = limit(&handle, "gpt-4o-mini", Dimension::Requests);
    assert_eq!(requests.source, QuotaSource::Configured);
    assert_eq!(requests.quota.limit(), 100);
    assert_eq!(requests.remaining, 99);
    assert_eq!(requests.reserved, 0);
    let tokens = limit(&handle, "gpt-4o-mini", Dimension::Tokens);
    assert_eq!(tokens.source, QuotaSource::Headers);
    assert_eq!(tokens.quota.limit(), 30_000);
    // What the header said was left, plus the 40 reserved tokens the answer did not use.
    assert_eq!(tokens.remaining, 29_000 + 40);
    assert_eq!(tokens.reserved, 0);

    // Without headers, a 429 after a few answers teaches a pace.
    for _ in 0..3 {
        provider.queue(StatusCode::OK, Vec::new());
        assert_eq!(complete(&service, chat("gpt-4o")).await, StatusCode::OK);
    }
    assert!(
        handle.limits(&scope("gpt-4o")).is_empty(),
        "nothing known yet"
    );
    provider.queue(StatusCode::TOO_MANY_REQUESTS, vec![("retry-after", "2")]);
    assert_eq!(
        complete(&service, chat("gpt-4o")).await,
        StatusCode::TOO_MANY_REQUESTS
    );
    let learned = limit(&handle, "gpt-4o", Dimension::Requests);
    assert_eq!(learned.source, QuotaSource::Refusals);
    assert!(learned.per_minute > 0.0, "{learned:?}");
    assert_eq!(learned.reserved, 0);

    let mut scopes: Vec<_> = handle.snapshot().into_iter().map(|s| s.scope).collect();
    scopes.sort();
    assert_eq!(scopes, [scope("gpt-4o"), scope("gpt-4o-mini")]);
    assert_eq!(handle.len(), 2);
}

#[tokio::test(start_paused = true)]
async fn a_reservation_counts_while_its_call_is_in_flight_and_is_released_after() {
    let layer = RateLimitLayer::new(Quotas::per_minute(100, 10_000));
    let handle = layer.handle();
    let provider = Upstream::default();
    let service = stack(layer, &provider);
    let reserved = |dimension| limit(&handle, "gpt-4o-mini", dimension).reserved;

    provider.queue_held(StatusCode::OK);
    let call = tokio::spawn(service.clone().oneshot(chat("gpt-4o-mini")));
    provider.called(1).await;
    // One request of 6 input tokens and up to 50 output tokens is on its way.
    assert_eq!(reserved(Dimension::Requests), 1);
    assert_eq!(reserved(Dimension::Tokens), 56);
    let in_flight = handle.snapshot();
    assert_eq!(in_flight.len(), 1);
    assert!(in_flight[0].limits.iter().all(|l| l.reserved > 0));

    provider.let_through();
    let response = call.await.unwrap().expect("a response");
    // Answered, but its usage comes with the end of the body: still held.
    assert_eq!(reserved(Dimension::Tokens), 56);
    response.into_body().collect().await.expect("the body");
    assert_eq!(reserved(Dimension::Requests), 0);
    assert_eq!(reserved(Dimension::Tokens), 0);
    // What it used is counted against the bucket instead.
    assert_eq!(
        limit(&handle, "gpt-4o-mini", Dimension::Tokens).remaining,
        10_000 - 16
    );

    // A caller who walks away while the call is in flight releases it too.
    provider.queue_held(StatusCode::OK);
    let call = tokio::spawn(service.clone().oneshot(chat("gpt-4o-mini")));
    provider.called(2).await;
    assert_eq!(reserved(Dimension::Requests), 1);
    call.abort();
    let _ = call.await;
    assert_eq!(reserved(Dimension::Requests), 0);
    assert_eq!(reserved(Dimension::Tokens), 0);
}
