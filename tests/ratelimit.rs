//! The rate limiter against the simulator over real loopback HTTP: 2,000 mixed requests
//! against a key limited to 600 requests and 100,000 tokens a minute.
//!
//! Done when: at least 98 % of the binding limit's throughput, at most 1 % of requests
//! answered 429 by the simulator.
//!
//! The limits are per minute, so the run spans several minutes of simulated time: the test
//! runs with tokio's clock paused. Client and simulator share one runtime; loopback writes are
//! visible to the reader before the runtime next parks, so the clock only moves forward when
//! every task is waiting on a timer (a limiter's turn or the simulator's latency).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::time::Instant;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{Outcome, Provider};
use tollgate_ratelimit::{Quotas, RateLimitLayer};
use tollgate_sim::{Rejection, Sim, SimConfig};
use tower::{ServiceBuilder, ServiceExt};

const RPM: u64 = 600;
const TPM: u64 = 100_000;
const REQUESTS: usize = 2_000;

/// A deterministic mix: short and long prompts, small and large output caps, a fifth
/// streamed, a tenth embeddings.
fn workload(i: usize) -> (String, serde_json::Value) {
    let words = [
        "alpha", "beta", "gamma", "delta", "epsilon", "limits", "tokens", "minute",
    ];
    let prompt: Vec<&str> = (0..(20 + (i * 37) % 300))
        .map(|w| words[(i + w) % words.len()])
        .collect();
    let prompt = prompt.join(" ");
    if i % 10 == 3 {
        let inputs: Vec<String> = (0..(1 + i % 4)).map(|k| format!("{prompt} {k}")).collect();
        return (
            "/v1/embeddings".into(),
            json!({"model": "text-embedding-3-small", "input": inputs}),
        );
    }
    let mut body = json!({
        "model": "gpt-4o-mini",
        "max_tokens": 64 + (i * 53) % 192,
        "messages": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": prompt}],
    });
    if i % 5 == 1 {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    ("/v1/chat/completions".into(), body)
}

#[tokio::test(start_paused = true)]
async fn two_thousand_mixed_requests_stay_just_under_the_limits() {
    let sim = Sim::start(
        SimConfig::from_toml(&format!(
            "seed = 11\n[latency]\ntime_to_first_token = \"200ms\"\nper_output_token = \"2ms\"\n\
             [output]\nmin_tokens = 16\nmax_tokens = 128\n\
             [[keys]]\nkey = \"sk-load\"\nrequests_per_minute = {RPM}\ntokens_per_minute = {TPM}\n"
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    let client = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(256)
        .build_http::<Full<Bytes>>();
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new().with_provider(Provider::OpenAi))
        // The simulator limits per key, across models: so does the client.
        .layer(RateLimitLayer::new(Quotas::per_minute(RPM, TPM)).with_per_model_limits(false))
        .layer(ClassifyLayer::new())
        .service(client);

    let start = Instant::now();
    let local_429 = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..REQUESTS {
        let (path, body) = workload(i);
        let request = http::Request::post(format!("{}{path}", sim.url()))
            .header("authorization", "Bearer sk-load")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap();
        let stack = stack.clone();
        let local_429 = local_429.clone();
        tasks.push(tokio::spawn(async move {
            let response = stack.oneshot(request).await.expect("admitted and answered");
            let limited = response
                .extensions()
                .get::<Outcome>()
                .is_some_and(|o| o.status.map(|s| s.as_u16()) == Some(429));
            if limited {
                local_429.fetch_add(1, Ordering::Relaxed);
            }
            response.into_body().collect().await.expect("a whole body");
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = start.elapsed();
    let stats = sim.stats();
    let usage = stats.keys.values().next().expect("one key");
    let minutes = elapsed.as_secs_f64() / 60.0;
    // The most a bucket of one minute's quota allows over the run: the quota at the start
    // plus the refill during it.
    let ceiling = |limit: u64| limit as f64 * (1.0 + minutes);
    let tokens = (usage.input_tokens + usage.output_tokens) as f64;
    let request_share = usage.requests as f64 / ceiling(RPM);
    let token_share = tokens / ceiling(TPM);
    let binding = request_share.max(token_share);
    let rejected = stats.rejected(Rejection::RateLimited);
    println!(
        "{REQUESTS} requests in {:.1} simulated minutes: {:.1} % of the request ceiling, {:.1} % of the token ceiling \
         ({tokens} tokens); the simulator answered {rejected} with 429",
        minutes,
        request_share * 100.0,
        token_share * 100.0,
    );
    assert_eq!(
        usage.requests as usize + rejected as usize,
        REQUESTS,
        "every request reached the simulator once"
    );
    assert!(
        binding >= 0.98,
        "binding limit used at {:.1} %",
        binding * 100.0
    );
    assert!(
        (rejected as f64) <= REQUESTS as f64 * 0.01,
        "{rejected} 429s"
    );
    assert_eq!(local_429.load(Ordering::Relaxed), rejected);
    sim.shutdown().await;
}
