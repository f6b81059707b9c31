//! Gemini, Mistral, the Llama API and Azure OpenAI end to end: requests through Annotate →
//! Classify against the simulator's mode for each provider. Each provider's 429 is waited out
//! exactly as it asked, and a failure that cannot succeed is not retried — first by a plain
//! client loop that shows each wait, then by `tollgate-retry` itself.

use std::time::Duration;

use http_body_util::Full;
use serde_json::json;
use tollgate_core::{OutcomeKind, Provider, RateLimitDimension, RateLimitSnapshot};
use tollgate_sim::Sim;
use tollgate_tests::{Attempt, post, send_as_told, sim, stack};
use tower::ServiceExt as _;

/// The attempts made: a rate limit waited out exactly as asked, then a success.
fn assert_waited_as_told(attempts: &[Attempt], dimension: RateLimitDimension) -> Duration {
    assert_eq!(attempts.len(), 2, "{attempts:#?}");
    assert_eq!(
        attempts[0].outcome.kind,
        OutcomeKind::RateLimited(dimension),
        "{attempts:#?}"
    );
    let asked = attempts[0]
        .outcome
        .retry_after
        .expect("the provider says how long");
    assert_eq!(
        attempts[1].at - attempts[0].at,
        asked,
        "waited exactly as asked"
    );
    assert!(
        attempts[1].outcome.is_success(),
        "and then it fit: {:?}",
        attempts[1].outcome
    );
    asked
}

fn assert_not_retried(attempts: &[Attempt], kind: OutcomeKind) {
    assert_eq!(attempts.len(), 1, "{attempts:#?}");
    assert_eq!(attempts[0].outcome.kind, kind);
    assert!(!attempts[0].outcome.is_retryable());
}

#[tokio::test(start_paused = true)]
async fn gemini() {
    let sim = sim(r#"
        [output]
        min_tokens = 8
        max_tokens = 8
        [[keys]]
        key = "AIza-minute"
        requests_per_minute = 2
        [[keys]]
        key = "AIza-daily"
        requests_per_day = 1
    "#);
    let stack = stack(&sim, None);
    let uri =
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent";
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
        "generationConfig": {"maxOutputTokens": 20}});
    let request = || post(uri, ("x-goog-api-key", "AIza-minute"), &body);
    for _ in 0..2 {
        let attempts = send_as_told(&stack, request, 1).await;
        assert!(attempts[0].outcome.is_success());
        assert_eq!(
            attempts[0].usage.map(|u| u.output_tokens),
            Some(8),
            "usageMetadata is read"
        );
        assert!(
            attempts[0].snapshot.is_empty(),
            "Gemini sends no rate-limit headers"
        );
    }
    let attempts = send_as_told(&stack, request, 5).await;
    let asked = assert_waited_as_told(&attempts, RateLimitDimension::Requests);
    assert!(
        asked >= Duration::from_secs(29) && asked <= Duration::from_secs(30),
        "{asked:?}"
    );

    // The key in the query string works too, and a streamed answer reports its usage.
    let stream_uri = "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=AIza-daily";
    let attempts = send_as_told(
        &stack,
        || post(stream_uri, ("accept", "text/event-stream"), &body),
        1,
    )
    .await;
    assert!(
        attempts[0].outcome.is_success(),
        "{:?}",
        attempts[0].outcome
    );
    assert_eq!(attempts[0].usage.map(|u| u.output_tokens), Some(8));

    // The day's quota is spent: that is not worth a retry within the minute.
    let attempts = send_as_told(
        &stack,
        || post(uri, ("x-goog-api-key", "AIza-daily"), &body),
        5,
    )
    .await;
    assert_not_retried(&attempts, OutcomeKind::QuotaExhausted);

    let attempts = send_as_told(
        &stack,
        || post(uri, ("x-goog-api-key", "AIza-unknown"), &body),
        5,
    )
    .await;
    assert_not_retried(&attempts, OutcomeKind::AuthError);
}

#[tokio::test(start_paused = true)]
async fn mistral() {
    let sim = sim(r#"
        openai_flavor = "mistral"
        [output]
        min_tokens = 5
        max_tokens = 5
        [[keys]]
        key = "mistral-key"
        tokens_per_minute = 1000
    "#);
    let stack = stack(&sim, None);
    let uri = "https://api.mistral.ai/v1/chat/completions";
    let body = json!({"model": "mistral-small-latest", "max_tokens": 400,
        "messages": [{"role": "user", "content": "Hello"}]});
    let request = || post(uri, ("authorization", "Bearer mistral-key"), &body);
    let first = send_once_ok(&stack, &request).await;
    let tokens = first.snapshot.tokens.expect("x-ratelimitbysize-* read");
    assert_eq!(tokens.limit, Some(1000));
    assert_eq!(first.usage.map(|u| u.output_tokens), Some(5));
    // Two answers in flight hold two reservations of ~400: a third does not fit until the
    // bucket has refilled enough, however soon the first two end.
    let held = [
        stack.clone().oneshot(request()).await.expect("a response"),
        stack.clone().oneshot(request()).await.expect("a response"),
    ];
    assert!(held.iter().all(|r| r.status().is_success()));
    let attempts = send_as_told(&stack, request, 5).await;
    assert_waited_as_told(&attempts, RateLimitDimension::Tokens);
    drop(held);

    let attempts = send_as_told(
        &stack,
        || post(uri, ("authorization", "Bearer wrong"), &body),
        5,
    )
    .await;
    assert_not_retried(&attempts, OutcomeKind::AuthError);
}

async fn send_once_ok(
    stack: &tollgate_tests::Stack,
    request: &impl Fn() -> http::Request<Full<bytes::Bytes>>,
) -> Attempt {
    let mut attempts = send_as_told(stack, request, 1).await;
    let attempt = attempts.pop().expect("one attempt");
    assert!(attempt.outcome.is_success(), "{:?}", attempt.outcome);
    attempt
}

#[tokio::test(start_paused = true)]
async fn llama_api() {
    let sim = sim(r#"
        [[keys]]
        key = "llama-key"
        requests_per_minute = 1
        tokens_per_minute = 100000
        [[keys]]
        key = "llama-spent"
        quota_exhausted = true
    "#);
    let stack = stack(&sim, None);
    let uri = "https://api.llama.com/compat/v1/chat/completions";
    let body = json!({"model": "Llama-4-Maverick-17B-128E-Instruct-FP8", "max_completion_tokens": 50,
        "stream": true, "stream_options": {"include_usage": true},
        "messages": [{"role": "user", "content": "Hello"}]});
    let request = || post(uri, ("authorization", "Bearer llama-key"), &body);
    let first = send_once_ok(&stack, &request).await;
    assert!(first.usage.is_some(), "the streamed usage chunk is read");
    let attempts = send_as_told(&stack, request, 5).await;
    let asked = assert_waited_as_told(&attempts, RateLimitDimension::Requests);
    assert!(
        asked > Duration::from_secs(59) && asked <= Duration::from_secs(60),
        "{asked:?}"
    );

    let attempts = send_as_told(
        &stack,
        || post(uri, ("authorization", "Bearer llama-spent"), &body),
        5,
    )
    .await;
    assert_not_retried(&attempts, OutcomeKind::QuotaExhausted);
}

#[tokio::test(start_paused = true)]
async fn azure_openai() {
    let sim = sim(r#"
        [[keys]]
        key = "azure-key"
        requests_per_minute = 60
        tokens_per_minute = 100000
        window = "10s"
    "#);
    let stack = stack(&sim, None);
    let uri = "https://res.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21";
    let body = json!({"max_tokens": 10, "messages": [{"role": "user", "content": "Hello"}]});
    let request = || post(uri, ("api-key", "azure-key"), &body);
    for _ in 0..10 {
        send_once_ok(&stack, &request).await;
    }
    // 60 RPM is 10 per 10 s window: the 11th waits for the next window, as Azure says.
    let attempts = send_as_told(&stack, request, 5).await;
    assert_waited_as_told(&attempts, RateLimitDimension::Requests);
    let requests = attempts[1]
        .snapshot
        .requests
        .expect("x-ratelimit-remaining-requests read");
    assert_eq!(requests.remaining, Some(9));

    let attempts = send_as_told(&stack, || post(uri, ("api-key", "not-a-key"), &body), 5).await;
    assert_not_retried(&attempts, OutcomeKind::AuthError);
}

/// The same four, once each over real HTTP on loopback.
#[tokio::test]
async fn every_mode_over_loopback() {
    use http_body_util::BodyExt as _;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    use tollgate_core::annotate::AnnotateLayer;
    use tollgate_core::classify::ClassifyLayer;
    use tower::ServiceExt as _;

    let cases = [
        (
            "",
            Provider::Gemini,
            "/v1beta/models/gemini-2.0-flash:generateContent",
            ("x-goog-api-key", "k"),
            json!({"contents": [{"parts": [{"text": "Hi"}]}]}),
        ),
        (
            "openai_flavor = \"mistral\"",
            Provider::Mistral,
            "/v1/chat/completions",
            ("authorization", "Bearer k"),
            json!({"model": "mistral-small-latest", "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        (
            "",
            Provider::Llama,
            "/v1/chat/completions",
            ("authorization", "Bearer k"),
            json!({"model": "Llama-4-Scout", "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        (
            "",
            Provider::AzureOpenAi,
            "/openai/deployments/d/chat/completions?api-version=2024-10-21",
            ("api-key", "k"),
            json!({"messages": [{"role": "user", "content": "Hi"}]}),
        ),
    ];
    for (flavor, provider, path, header, body) in cases {
        let sim = Sim::start(tollgate_sim::SimConfig::from_toml(flavor).unwrap())
            .await
            .unwrap();
        let client = Client::builder(TokioExecutor::new()).build_http::<Full<bytes::Bytes>>();
        let stack = tower::ServiceBuilder::new()
            .layer(AnnotateLayer::new().with_provider(provider))
            .layer(ClassifyLayer::new())
            .service(client);
        let response = stack
            .oneshot(post(&format!("{}{path}", sim.url()), header, &body))
            .await
            .unwrap();
        let outcome = response
            .extensions()
            .get::<tollgate_core::Outcome>()
            .unwrap()
            .clone();
        assert!(outcome.is_success(), "{provider}: {outcome:?}");
        let snapshot = response
            .extensions()
            .get::<RateLimitSnapshot>()
            .unwrap()
            .clone();
        assert_eq!(
            snapshot.is_empty(),
            provider == Provider::Gemini,
            "{provider}: {snapshot:?}"
        );
        let end = response
            .extensions()
            .get::<tollgate_core::body::EndOfStream>()
            .unwrap()
            .clone();
        response.into_body().collect().await.unwrap();
        assert!(
            end.ended().and_then(|e| e.usage).is_some(),
            "{provider}: usage at the end"
        );
        sim.shutdown().await;
    }
}

/// The same, with `RetryLayer` doing the waiting: for each provider, a request that meets the
/// provider's 429 succeeds on its second attempt, after exactly the wait the 429 named (the
/// simulator admits it then and not a moment sooner: a shorter wait would have met a second
/// 429), and a permanent failure is tried once.
#[tokio::test(start_paused = true)]
async fn the_retry_layer_waits_as_each_provider_asks() {
    use tollgate_core::annotate::AnnotateLayer;
    use tollgate_core::classify::ClassifyLayer;
    use tollgate_retry::{Retried, RetryLayer};
    use tower::ServiceBuilder;

    let cases = [
        (
            "[[keys]]\nkey = \"k\"\nrequests_per_minute = 1\n",
            "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
            "x-goog-api-key",
            json!({"contents": [{"parts": [{"text": "Hi"}]}]}),
        ),
        (
            "openai_flavor = \"mistral\"\n[[keys]]\nkey = \"k\"\nrequests_per_minute = 1\n",
            "https://api.mistral.ai/v1/chat/completions",
            "authorization",
            json!({"model": "mistral-small-latest", "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        (
            "[[keys]]\nkey = \"k\"\nrequests_per_minute = 1\n",
            "https://api.llama.com/compat/v1/chat/completions",
            "authorization",
            json!({"model": "Llama-4-Scout", "messages": [{"role": "user", "content": "Hi"}]}),
        ),
        (
            "[[keys]]\nkey = \"k\"\nrequests_per_minute = 6\nwindow = \"10s\"\n",
            "https://res.openai.azure.com/openai/deployments/d/chat/completions?api-version=2024-10-21",
            "api-key",
            json!({"messages": [{"role": "user", "content": "Hi"}]}),
        ),
    ];
    for (toml, uri, header, body) in cases {
        let sim = sim(toml);
        let retry = RetryLayer::new()
            .with_seed(9)
            .with_max_retry_after(Duration::from_secs(120));
        let stack = ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .layer(retry)
            .layer(ClassifyLayer::new())
            .service(sim.clone());
        let key = if header == "authorization" {
            "Bearer k"
        } else {
            "k"
        };
        // Spend the quota, then one more request meets the 429 and waits it out.
        let first = stack
            .clone()
            .oneshot(post(uri, (header, key), &body))
            .await
            .unwrap();
        assert!(first.status().is_success(), "{uri}: {}", first.status());
        let response = stack
            .clone()
            .oneshot(post(uri, (header, key), &body))
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{uri}: {}",
            response.status()
        );
        let retried = *response.extensions().get::<Retried>().unwrap();
        assert_eq!(retried.attempts, 2, "{uri}: {retried:?}");
        let log = sim.log();
        assert_eq!(log.len(), 3, "{uri}: one 429, then the retry");
        assert_eq!(
            log[2].at - log[1].at,
            retried.waited,
            "{uri}: the retry came exactly after the wait"
        );
        assert!(
            retried.waited > Duration::from_secs(1),
            "{uri}: {retried:?}"
        );
    }
}
