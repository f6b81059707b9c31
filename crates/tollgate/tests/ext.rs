//! A stack composed by hand with `ServiceBuilderExt` over the in-process simulator: the
//! methods give working layers in the order the user wrote. Paused time.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tollgate::ServiceBuilderExt as _;
use tollgate::ratelimit::Quotas;
use tollgate_core::BoxError;
use tollgate_sim::{SimConfig, SimService};
use tower::{ServiceBuilder, ServiceExt};

fn chat(i: usize) -> Request<Full<Bytes>> {
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 16,
        "messages": [{"role": "user", "content": format!("question {i}")}]});
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-ext")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_hand_built_stack_keeps_under_the_providers_limit() {
    // The provider allows 60 requests a minute; the hand-built stack paces to the same.
    let sim = SimService::new(
        SimConfig::from_toml("seed = 7\n[limits]\nrequests_per_minute = 60\n").unwrap(),
    )
    .unwrap();
    let client = ServiceBuilder::new()
        .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
        .service(sim.clone());
    let llm = ServiceBuilder::new()
        .annotate()
        .cache_responses()
        .llm_retry()
        .circuit_breaker()
        .overload_control()
        .llm_rate_limit(Quotas::per_minute(60, 0))
        .llm_concurrency_limit(4)
        .llm_timeouts()
        .classify()
        .service(client);

    // Spawned locally: the unboxed stack's future is Send, but rustc cannot prove it through
    // `tokio::spawn`'s bounds here (rust-lang/rust#110338); `LlmStack` boxes it instead.
    let local = tokio::task::LocalSet::new();
    let calls: Vec<_> = (0..120)
        .map(|i| {
            let llm = llm.clone();
            local.spawn_local(async move {
                let response = llm.oneshot(chat(i)).await.map_err(|e| e.to_string())?;
                let status = response.status();
                let body = response.into_body().collect().await;
                body.map_err(|e| e.to_string())?;
                Ok::<_, String>(status)
            })
        })
        .collect();
    let mut ok = 0;
    local
        .run_until(async {
            for call in calls {
                let status = call.await.unwrap().unwrap();
                assert_eq!(status, 200);
                ok += 1;
            }
        })
        .await;
    let stats = sim.stats();
    assert_eq!(ok, 120);
    assert_eq!(
        stats.accepted, 120,
        "each distinct question reached the provider once"
    );
    assert!(
        stats.rejected.is_empty(),
        "the limiter kept every call under the limit: {:?}",
        stats.rejected
    );
    assert!(
        stats.max_in_flight <= 4,
        "{} in flight",
        stats.max_in_flight
    );
}
