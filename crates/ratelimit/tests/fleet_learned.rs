//! A fleet against an upstream that sends no rate-limit headers: three stacks sharing one
//! Redis (`RedisStore`, nothing configured) in front of one key whose hidden limit only its
//! 429s reveal, offered twice that limit with the load spread evenly. Each process learns its
//! own pace from the 429s it meets, and every 429's wait pauses all three: after the first
//! minute the upstream refuses few calls and answers close to its limit.
//!
//! In paused time, as `learned.rs`; a round trip to Redis takes no simulated time (see
//! `fleet.rs`).
#![cfg(feature = "redis")]

mod support {
    pub(crate) mod learn_run;
}

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::time::Instant;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{BoxError, Deadline};
use tollgate_ratelimit::{QuotaTable, Quotas, RateLimitLayer, RedisStore};
use tollgate_retry::RetryLayer;
use tollgate_sim::{SimConfig, SimService};
use tollgate_testkit::redis::RedisServer;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

use support::learn_run::{DEADLINE, Dialect, KEY, rate_limited, request, unreachable};

const REPLICAS: usize = 3;
const MINUTES: u64 = 6;
/// The hidden limit: 120 a minute in any sliding minute.
const PER_MINUTE: u64 = 120;

type Stack = BoxCloneService<
    http::Request<http_body_util::Full<bytes::Bytes>>,
    http::Response<tollgate_core::body::ObservedBody<tollgate_sim::SimBody>>,
    BoxError,
>;

async fn replica(url: &str, sim: &SimService) -> Stack {
    let store = RedisStore::connect(url, QuotaTable::new(Quotas::unlimited()))
        .await
        .unwrap()
        .with_local_share(1.0 / REPLICAS as f64);
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(RetryLayer::new().with_deadline(DEADLINE))
        .layer(RateLimitLayer::from_store(store))
        .layer(ClassifyLayer::new())
        .map_err(unreachable)
        .service(sim.clone());
    BoxCloneService::new(stack)
}

#[tokio::test(start_paused = true)]
async fn three_processes_learn_a_hidden_limit_together() {
    let redis = RedisServer::start(&[]);
    let config = format!(
        "seed = 11\n[latency]\ntime_to_first_token = \"200ms\"\n[output]\nmin_tokens = 8\n\
         max_tokens = 32\n[[keys]]\nkey = \"{KEY}\"\nrequests_per_minute = {PER_MINUTE}\n\
         window = \"sliding:60s\"\nrate_limit_headers = false\n"
    );
    let sim = SimService::new(SimConfig::from_toml(&config).unwrap()).unwrap();
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(replica(&redis.url(), &sim).await);
    }
    let answered = Arc::new(Mutex::new(vec![0_u64; MINUTES as usize + 3]));
    let start = Instant::now();
    let factor = 2;
    let gap = Duration::from_secs(60) / u32::try_from(PER_MINUTE * factor).unwrap();
    let mut first_minute = None;
    let mut tasks = Vec::new();
    for i in 0..PER_MINUTE * factor * MINUTES {
        let at = start + gap * u32::try_from(i).unwrap();
        tokio::time::sleep_until(at).await;
        if first_minute.is_none() && at >= start + Duration::from_secs(60) {
            first_minute = Some(sim.stats());
        }
        let stack = replicas[i as usize % REPLICAS].clone();
        let answered = answered.clone();
        let mut request = request(Dialect::OpenAi, i);
        request.extensions_mut().insert(Deadline::after(DEADLINE));
        tasks.push(tokio::spawn(async move {
            if let Ok(response) = stack.oneshot(request).await
                && response.status().is_success()
            {
                response.into_body().collect().await.unwrap();
                let minute = (start.elapsed().as_secs() / 60) as usize;
                let mut answered = answered.lock().unwrap();
                let slot = minute.min(answered.len() - 1);
                answered[slot] += 1;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let (first, last) = (first_minute.unwrap(), sim.stats());
    let calls = last.received - first.received;
    let refused = rate_limited(&last) - rate_limited(&first);
    let answered = answered.lock().unwrap().clone();
    let goodput = answered[1..MINUTES as usize].iter().sum::<u64>() as f64
        / ((MINUTES - 1) * PER_MINUTE) as f64;
    let share = refused as f64 / calls.max(1) as f64;
    println!(
        "three processes, no headers, 2x a sliding minute of {PER_MINUTE}: answers per minute \
         {answered:?}; after the first minute {:.1} % of the limit, {refused} 429s in {calls} \
         upstream calls ({:.2} %)",
        goodput * 100.0,
        share * 100.0
    );
    assert!(goodput >= 0.85, "goodput {goodput:.3}");
    assert!(share <= 0.05, "429 share {share:.3}");
}
