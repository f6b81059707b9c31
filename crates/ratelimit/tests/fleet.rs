//! Done when: 4 independent client stacks sharing one Redis against one simulated key together
//! stay within the key's limits with at most 1 % 429s and at least 95 % of the limit.
//!
//! Each stack is `Annotate → RateLimit(RedisStore) → Classify → tollgate-sim`, with a store of
//! its own (its own connection, scopes and leases), as four processes would be. The simulator
//! runs in-process with tokio's clock paused, so minutes of traffic take a second. A pending
//! Redis reply is real I/O, which the paused clock does not wait for: it would jump to the
//! next timer instead. The store runs each round trip beside a parked blocking-pool thread,
//! which stops the clock from auto-advancing until Redis has answered: a round trip takes no
//! simulated time, and the figures are those of an instant Redis (the scenario tests in
//! `redis.rs` check exact departures the same way).
#![cfg(feature = "redis")]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::time::Instant;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::body::ObservedBody;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{BoxError, Provider};
use tollgate_ratelimit::{QuotaTable, Quotas, RateLimitLayer, RedisStore, RoundTrips};
use tollgate_sim::{Rejection, SimBody, SimConfig, SimService};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

const STACKS: usize = 4;
const PER_STACK: usize = 600;
const RPM: u64 = 600;
const TPM: u64 = 100_000;

use tollgate_testkit::redis::RedisServer;

/// A deterministic mix: short and long prompts, small and large output caps, a fifth streamed,
/// a tenth embeddings.
fn request(i: usize) -> http::Request<Full<Bytes>> {
    let words = [
        "alpha", "beta", "gamma", "delta", "limits", "tokens", "minute", "fleet",
    ];
    let prompt: Vec<&str> = (0..20 + (i * 37) % 300)
        .map(|w| words[(i + w) % words.len()])
        .collect();
    let prompt = prompt.join(" ");
    let (path, body) = if i % 10 == 3 {
        let inputs: Vec<String> = (0..1 + i % 4).map(|k| format!("{prompt} {k}")).collect();
        (
            "/v1/embeddings",
            json!({"model": "text-embedding-3-small", "input": inputs}),
        )
    } else {
        let mut body = json!({
            "model": "gpt-4o-mini",
            "max_tokens": 64 + (i * 53) % 192,
            "messages": [{"role": "user", "content": prompt}],
        });
        if i % 5 == 1 {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        ("/v1/chat/completions", body)
    };
    http::Request::post(format!("https://api.openai.com{path}"))
        .header("authorization", "Bearer sk-fleet")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid request")
}

type Stack =
    BoxCloneService<http::Request<Full<Bytes>>, http::Response<ObservedBody<SimBody>>, BoxError>;

fn simulator(rpm: u64, tpm: u64) -> SimService {
    let scenario = format!(
        "seed = 7\n[latency]\ntime_to_first_token = \"200ms\"\nper_output_token = \"2ms\"\n\
         [output]\nmin_tokens = 16\nmax_tokens = 128\n\
         [[keys]]\nkey = \"sk-fleet\"\nrequests_per_minute = {rpm}\ntokens_per_minute = {tpm}\n"
    );
    SimService::new(SimConfig::from_toml(&scenario).expect("a valid scenario")).expect("valid")
}

/// `Annotate → RateLimit(its own RedisStore) → Classify → sim`, as one process of the fleet.
async fn stack(url: &str, sim: &SimService, rpm: u64, tpm: u64) -> (RedisStore, Stack) {
    let store = RedisStore::connect(url, QuotaTable::new(Quotas::per_minute(rpm, tpm)))
        .await
        .expect("redis answers")
        .with_local_share(1.0 / STACKS as f64)
        // Four stacks and the simulator share one thread of a test build: the thousands of
        // requests annotated at once can keep it from reading a reply for longer than the
        // default 250 ms, which would count as Redis unreachable.
        .with_command_timeout(Duration::from_secs(5));
    let service = ServiceBuilder::new()
        .layer(AnnotateLayer::new().with_provider(Provider::OpenAi))
        // The simulator limits per key, across models: so does the client.
        .layer(RateLimitLayer::from_store(store.clone()).with_per_model_limits(false))
        .layer(ClassifyLayer::new())
        .service(sim.clone());
    (store, BoxCloneService::new(service))
}

fn round_trips(stores: &[RedisStore]) -> RoundTrips {
    stores
        .iter()
        .map(RedisStore::round_trips)
        .fold(RoundTrips::default(), |sum, trips| RoundTrips {
            reservations: sum.reservations + trips.reservations,
            updates: sum.updates + trips.updates,
        })
}

async fn send(stack: Stack, i: usize) -> Result<(), BoxError> {
    let response = stack.oneshot(request(i)).await?;
    response.into_body().collect().await?;
    Ok(())
}

#[tokio::test(start_paused = true)]
async fn four_stacks_share_one_key_through_redis() {
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let sim = simulator(RPM, TPM);
    let mut stores = Vec::new();
    let mut tasks = Vec::new();
    let start = Instant::now();
    for s in 0..STACKS {
        let (store, stack) = stack(&url, &sim, RPM, TPM).await;
        stores.push(store);
        for i in 0..PER_STACK {
            tasks.push(tokio::spawn(send(stack.clone(), i * STACKS + s)));
        }
    }
    for task in tasks {
        task.await
            .expect("no panic")
            .expect("admitted and answered");
    }

    let minutes = start.elapsed().as_secs_f64() / 60.0;
    let stats = sim.stats();
    let usage = stats.keys.values().next().expect("one key");
    let tokens = (usage.input_tokens + usage.output_tokens) as f64;
    let rejected = stats.rejected(Rejection::RateLimited);
    let total = (STACKS * PER_STACK) as u64;
    // The most a bucket of one minute's quota allows over the run: the quota at the start plus
    // the refill during it.
    let ceiling = |limit: u64| limit as f64 * (1.0 + minutes);
    let (request_share, token_share) =
        (usage.requests as f64 / ceiling(RPM), tokens / ceiling(TPM));
    let binding = request_share.max(token_share);
    // After the first minute's burst: the sustained rate.
    let steady: Vec<_> = sim
        .log()
        .into_iter()
        .filter(|e| e.at >= Duration::from_secs(60) && e.status == 200)
        .collect();
    let steady_tokens: u64 = steady
        .iter()
        .map(|e| e.input_tokens + e.output_tokens)
        .sum();
    let steady_minutes = minutes - 1.0;
    let trips = round_trips(&stores);
    println!(
        "{STACKS} stacks, {total} requests in {minutes:.2} simulated minutes against {RPM} RPM / {TPM} TPM:\n  \
         {:.1} % of the request ceiling, {:.1} % of the token ceiling ({tokens} tokens);\n  \
         after the first minute {:.0} requests and {:.0} tokens a minute ({:.1} % of the token limit);\n  \
         {rejected} answered 429 ({:.2} %); Redis round trips per request: {:.2} reserving, {:.2} updating",
        request_share * 100.0,
        token_share * 100.0,
        steady.len() as f64 / steady_minutes,
        steady_tokens as f64 / steady_minutes,
        steady_tokens as f64 / steady_minutes / TPM as f64 * 100.0,
        rejected as f64 / total as f64 * 100.0,
        trips.reservations as f64 / total as f64,
        trips.updates as f64 / total as f64,
    );
    assert_eq!(
        usage.requests + rejected,
        total,
        "every request reached the simulator once"
    );
    assert!(
        binding >= 0.95,
        "binding limit used at {:.1} %",
        binding * 100.0
    );
    assert!(
        binding <= 1.0 + 1e-9,
        "over the limit: {:.1} %",
        binding * 100.0
    );
    assert!(rejected as f64 <= total as f64 * 0.01, "{rejected} 429s");
    assert!(
        stores.iter().all(|store| !store.is_degraded()),
        "Redis answered throughout"
    );
}

/// Below the limit, most requests are served from the leases: four stacks each sending ten
/// requests a second against a key that allows twice that.
#[tokio::test(start_paused = true)]
async fn below_the_limit_most_requests_never_ask_redis() {
    let (rpm, tpm) = (6_000, 2_000_000);
    let redis = RedisServer::start(&[]);
    let url = redis.url();
    let sim = simulator(rpm, tpm);
    let mut stores = Vec::new();
    let mut tasks = Vec::new();
    for s in 0..STACKS {
        let (store, stack) = stack(&url, &sim, rpm, tpm).await;
        stores.push(store);
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for i in 0..PER_STACK {
                sent.push(tokio::spawn(send(stack.clone(), i * STACKS + s)));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            sent
        }));
    }
    for task in tasks {
        for sent in task.await.expect("no panic") {
            sent.await
                .expect("no panic")
                .expect("admitted and answered");
        }
    }
    let total = (STACKS * PER_STACK) as u64;
    let trips = round_trips(&stores);
    let rejected = sim.stats().rejected_total();
    println!(
        "{total} requests at 40 % of {rpm} RPM, {rejected} refused; Redis round trips per request: \
         {:.2} reserving (the rest served from leases), {:.2} updating in the background",
        trips.reservations as f64 / total as f64,
        trips.updates as f64 / total as f64,
    );
    assert_eq!(rejected, 0);
    assert!(
        trips.reservations * 4 < total,
        "{trips:?} for {total} requests"
    );
}
