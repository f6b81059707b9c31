//! Done when: killing redis-server in the middle of a fleet's run and starting it again leaves
//! every request answered exactly once (an upstream answer or a typed error), panics nowhere,
//! keeps the fleet within the key's limits while Redis is away (fail-open: each process its local
//! share; fail-closed: refusals with `RateLimited`), and puts every store back on the shared
//! limits within one retry interval (plus the worker's tick) of Redis answering again, after
//! which the limits hold.
//!
//! Four stacks, `Annotate → RateLimit(its own RedisStore) → Classify → tollgate-sim`, as in
//! `fleet.rs`, each offering a steady stream of requests at half the key's limit (the fleet
//! offers twice the limit, so the limiter is what keeps it there; requests that cannot get a
//! turn within two seconds fail with `RateLimited`). Tokio's clock is paused: minutes of traffic
//! take seconds, and a round trip to Redis (real I/O) holds the clock still (see `fleet.rs`).
//! Killing and restarting the server blocks the test's only thread, so it takes no simulated
//! time: the outage starts and ends at exact instants of the simulated run.
//!
//! The restarted server has lost its keys (no persistence), so the fleet's shared buckets come
//! back full while the provider's is nearly empty: what keeps the fleet under the limit then is
//! header sync, the provider's `x-ratelimit-remaining-*` tightening Redis with the first answers.
//! (With header sync off, one run of these tests met one 429 just after the restart fail-open
//! and three fail-closed, each pausing the whole fleet through Redis: the 429's `retry-after`
//! did the tightening instead.)
#![cfg(feature = "redis")]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::body::ObservedBody;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::error::RateLimited;
use tollgate_core::{BoxError, Provider};
use tollgate_ratelimit::{QuotaTable, Quotas, RateLimitLayer, RedisStore};
use tollgate_sim::{LogEntry, SimBody, SimConfig, SimService};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

use tollgate_testkit::redis::RedisServer;

const STACKS: usize = 4;
/// The key's limit: four requests a second.
const RPM: u64 = 240;
/// Tokens are not what this test is about: a limit that never binds.
const TPM: u64 = 10_000_000;
/// Each stack sends one request every 500 ms: half the limit each, twice it for the fleet.
const EVERY: Duration = Duration::from_millis(500);
/// How long a request may wait for its turn before failing with `RateLimited`.
const MAX_WAIT: Duration = Duration::from_secs(2);
/// How often a degraded store tries Redis again (the default, documented as the probe interval).
const RETRY: Duration = Duration::from_secs(1);
/// The worker's tick with the default one-second lease hold and retry interval.
const TICK: Duration = Duration::from_millis(250);
/// The most one stack leases at a time: 2 % of the quota (the default fraction), rounded up.
const LEASE: u64 = RPM.div_ceil(50);

const SECOND: Duration = Duration::from_secs(1);

/// Request `i` of stack `s`, whose model names the stack in the simulator's log (the limiter
/// and the simulator limit the key across models).
fn request(s: usize, i: usize) -> http::Request<Full<Bytes>> {
    let mut body = json!({
        "model": format!("gpt-4o-mini-{s}"),
        "max_tokens": 32,
        "messages": [{"role": "user", "content": format!("request {i}: say something short")}],
    });
    if i % 5 == 1 {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    http::Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-fleet")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid request")
}

type Stack =
    BoxCloneService<http::Request<Full<Bytes>>, http::Response<ObservedBody<SimBody>>, BoxError>;

fn simulator() -> SimService {
    let scenario = format!(
        "seed = 11\n[latency]\ntime_to_first_token = \"200ms\"\nper_output_token = \"2ms\"\n\
         [output]\nmin_tokens = 8\nmax_tokens = 32\n\
         [[keys]]\nkey = \"sk-fleet\"\nrequests_per_minute = {RPM}\ntokens_per_minute = {TPM}\n"
    );
    SimService::new(SimConfig::from_toml(&scenario).expect("a valid scenario")).expect("valid")
}

/// One process of the fleet: its own store (connection, scopes, leases), a quarter of each
/// quota while Redis is away.
async fn stack(url: &str, sim: &SimService, fail_open: bool) -> (RedisStore, Stack) {
    let store = RedisStore::connect(url, QuotaTable::new(Quotas::per_minute(RPM, TPM)))
        .await
        .expect("redis answers")
        .with_local_share(1.0 / STACKS as f64)
        .with_fail_open(fail_open)
        .with_retry_interval(RETRY)
        // A refused connection fails at once; this only keeps a busy test thread from counting
        // as an outage (see `fleet.rs`).
        .with_command_timeout(Duration::from_secs(5));
    let service = ServiceBuilder::new()
        .layer(AnnotateLayer::new().with_provider(Provider::OpenAi))
        .layer(
            RateLimitLayer::from_store(store.clone())
                .with_per_model_limits(false)
                .with_max_wait(MAX_WAIT),
        )
        .layer(ClassifyLayer::new())
        .service(sim.clone());
    (store, BoxCloneService::new(service))
}

/// How one request ended.
#[derive(Debug)]
enum Ended {
    /// The simulator answered with this status (the body read to its end).
    Answered(u16),
    /// The limiter refused it, with the wait it gave.
    Refused(Option<Duration>),
}

/// One request's story, from the client's side.
#[derive(Debug)]
struct Record {
    stack: usize,
    /// When it was sent, since the start.
    sent: Duration,
    ended: Ended,
}

async fn send(stack: Stack, s: usize, i: usize, start: Instant) -> Result<Record, BoxError> {
    let sent = start.elapsed();
    let ended = match stack.oneshot(request(s, i * STACKS + s)).await {
        Ok(response) => {
            let status = response.status().as_u16();
            response.into_body().collect().await?;
            Ended::Answered(status)
        }
        Err(error) => match error.downcast_ref::<RateLimited>() {
            Some(refused) => Ended::Refused(refused.retry_after),
            None => return Err(error),
        },
    };
    Ok(Record {
        stack: s,
        sent,
        ended,
    })
}

/// A stack's sender: the handles of the requests it sent.
type Driver = JoinHandle<Vec<JoinHandle<Result<Record, BoxError>>>>;

/// Each stack sends one request every [`EVERY`] until `end`; the handles of every request.
fn drive(stacks: &[Stack], start: Instant, end: Duration) -> Vec<Driver> {
    stacks
        .iter()
        .enumerate()
        .map(|(s, stack)| {
            let stack = stack.clone();
            tokio::spawn(async move {
                // The stacks start a little apart, as processes would.
                tokio::time::sleep(EVERY / STACKS as u32 * s as u32).await;
                let mut sent = Vec::new();
                let mut i = 0;
                while start.elapsed() < end {
                    sent.push(tokio::spawn(send(stack.clone(), s, i, start)));
                    i += 1;
                    tokio::time::sleep(EVERY).await;
                }
                sent
            })
        })
        .collect()
}

/// How every request sent ended, in the order sent per stack; panics if any task panicked.
async fn collect(drivers: Vec<Driver>) -> Vec<Result<Record, BoxError>> {
    let mut ended = Vec::new();
    for driver in drivers {
        for task in driver.await.expect("the driver does not panic") {
            ended.push(task.await.expect("no request panics"));
        }
    }
    ended
}

/// Polls every 10 ms (simulated) until `done` holds for every store, or `limit` has passed;
/// how long each store took.
async fn until(
    stores: &[RedisStore],
    limit: Duration,
    done: impl Fn(&RedisStore) -> bool,
) -> Vec<Option<Duration>> {
    let from = Instant::now();
    let mut took = vec![None; stores.len()];
    while from.elapsed() <= limit {
        for (store, took) in stores.iter().zip(&mut took) {
            if took.is_none() && done(store) {
                *took = Some(from.elapsed());
            }
        }
        if took.iter().all(Option::is_some) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    took
}

/// What the simulator saw in `from..to` (since its start): requests it admitted, and 429s.
fn window(log: &[LogEntry], from: Duration, to: Duration) -> (u64, u64) {
    let within = log.iter().filter(|e| e.at >= from && e.at < to);
    let (mut admitted, mut refused) = (0, 0);
    for entry in within {
        match entry.status {
            429 => refused += 1,
            _ => admitted += 1,
        }
    }
    (admitted, refused)
}

/// What the simulator admitted in `from..to` from each stack.
fn admitted_per_stack(log: &[LogEntry], from: Duration, to: Duration) -> Vec<u64> {
    let mut counts = vec![0; STACKS];
    let within = log
        .iter()
        .filter(|e| e.at >= from && e.at < to && e.status != 429);
    for entry in within {
        let model = entry.model.as_deref().unwrap_or_default();
        let s: usize = model
            .rsplit('-')
            .next()
            .and_then(|s| s.parse().ok())
            .expect("a stack");
        counts[s] += 1;
    }
    counts
}

/// What the key's limit allows in `length`: its refill (the bucket's burst is the slack).
fn refill(length: Duration) -> f64 {
    RPM as f64 * length.as_secs_f64() / 60.0
}

/// How the clients saw `from..to`: per stack, requests answered 200 and refused locally.
fn per_stack(records: &[Record], from: Duration, to: Duration) -> Vec<(u64, u64)> {
    let mut counts = vec![(0, 0); STACKS];
    for record in records.iter().filter(|r| r.sent >= from && r.sent < to) {
        match record.ended {
            Ended::Answered(200) => counts[record.stack].0 += 1,
            Ended::Refused(_) => counts[record.stack].1 += 1,
            Ended::Answered(_) => {}
        }
    }
    counts
}

/// The checks both modes share: every request sent ended in an answer or a typed refusal (its
/// task returned once, without panicking), and the simulator saw each answered request once
/// and no refused one. The records of those requests.
fn ended_once(ended: Vec<Result<Record, BoxError>>, log: &[LogEntry]) -> Vec<Record> {
    let sent = ended.len();
    let (records, untyped): (Vec<_>, Vec<_>) = ended.into_iter().partition(Result::is_ok);
    let untyped: Vec<String> = untyped
        .into_iter()
        .filter_map(Result::err)
        .map(|e| e.to_string())
        .collect();
    assert!(
        untyped.is_empty(),
        "errors other than RateLimited: {untyped:?}"
    );
    let records: Vec<Record> = records.into_iter().filter_map(Result::ok).collect();
    assert_eq!(records.len(), sent);
    let answered = records
        .iter()
        .filter(|r| matches!(r.ended, Ended::Answered(_)))
        .count();
    assert_eq!(
        answered,
        log.len(),
        "each answered request reached the simulator once, and no refused one did"
    );
    records
}

#[tokio::test(start_paused = true)]
async fn fail_open_keeps_the_fleet_within_the_limit_through_a_redis_restart() {
    const KILL: Duration = Duration::from_secs(75);
    const RESTART: Duration = Duration::from_secs(135);
    const END: Duration = Duration::from_secs(225);

    let mut redis = RedisServer::start(&[]);
    let url = redis.url();
    let sim = simulator();
    let start = Instant::now();
    let mut stores = Vec::new();
    let mut stacks = Vec::new();
    for _ in 0..STACKS {
        let (store, stack) = stack(&url, &sim, true).await;
        stores.push(store);
        stacks.push(stack);
    }
    let drivers = drive(&stacks, start, END);

    tokio::time::sleep_until(start + KILL).await;
    redis.kill();
    let degraded = until(&stores, SECOND, RedisStore::is_degraded).await;
    tokio::time::sleep_until(start + RESTART).await;
    assert!(
        stores.iter().all(RedisStore::is_degraded),
        "degraded until Redis answers"
    );
    redis.restart();
    let recovered = until(&stores, 2 * RETRY, |store| !store.is_degraded()).await;
    let ended = collect(drivers).await;

    let log = sim.log();
    let sent = ended.len();
    let records = ended_once(ended, &log);
    let healthy = window(&log, Duration::from_secs(60), KILL);
    let outage = window(&log, KILL, RESTART);
    let after = window(&log, RESTART, END);
    let settled = window(&log, RESTART + Duration::from_secs(60), END);
    let refused_locally = records
        .iter()
        .filter(|r| matches!(r.ended, Ended::Refused(_)))
        .count();
    println!(
        "fail-open, {STACKS} stacks offering {:.0} RPM against {RPM} RPM, redis killed at {KILL:?} \
         and restarted at {RESTART:?}: {sent} requests, {} answered, {refused_locally} refused \
         locally (RateLimited)",
        refill(Duration::from_secs(60)) * 2.0,
        log.len()
    );
    println!(
        "  stores degraded after {degraded:?} of the kill; back on Redis after {recovered:?} of \
         the restart (retry interval {RETRY:?})"
    );
    for (name, (from, to), (admitted, rejected)) in [
        (
            "healthy, after the first minute",
            (Duration::from_secs(60), KILL),
            healthy,
        ),
        ("redis down", (KILL, RESTART), outage),
        ("after the restart", (RESTART, END), after),
        (
            "from a minute after the restart",
            (RESTART + Duration::from_secs(60), END),
            settled,
        ),
    ] {
        let minutes = (to - from).as_secs_f64() / 60.0;
        println!(
            "  {name} ({from:?}..{to:?}): the simulator admitted {admitted} ({:.1} a minute, \
             limit {RPM}), answered {rejected} with 429",
            admitted as f64 / minutes
        );
    }
    let shares = admitted_per_stack(&log, KILL, RESTART);
    println!(
        "  while redis was down, per stack: admitted by the simulator {shares:?} (a quarter of \
         the refill is {:.0}); (answered, refused) by time sent {:?}",
        refill(RESTART - KILL) / STACKS as f64,
        per_stack(&records, KILL, RESTART)
    );

    assert!(
        degraded.iter().all(Option::is_some),
        "every store noticed the outage within a second: {degraded:?}"
    );
    for took in &recovered {
        let took = took.expect("every store found Redis again");
        assert!(took <= RETRY + TICK, "back on Redis after {took:?}");
    }
    // Healthy: the shared limits hold to the request.
    assert!(healthy.0 as f64 <= refill(KILL - Duration::from_secs(60)) + 1.0);
    assert_eq!(healthy.1, 0, "no 429 with Redis up");
    // Down: each process its quarter, starting from its quarter of what Redis last said (about
    // nothing, the fleet being at the limit) plus its lease.
    let slack = (STACKS as u64 * LEASE) as f64;
    assert!(
        outage.0 as f64 <= refill(RESTART - KILL) + slack,
        "{} admitted while Redis was down",
        outage.0
    );
    assert!(
        outage.0 as f64 >= refill(RESTART - KILL) * 0.9,
        "the fleet kept using its limit while Redis was down: {}",
        outage.0
    );
    assert_eq!(outage.1, 0, "no 429 while Redis was down");
    for (s, admitted) in shares.into_iter().enumerate() {
        let share = refill(RESTART - KILL) / STACKS as f64;
        assert!(
            admitted as f64 <= share + LEASE as f64,
            "stack {s} kept to its local share: {admitted}"
        );
        assert!(
            admitted as f64 >= share * 0.9,
            "stack {s} kept serving on its local share: {admitted}"
        );
    }
    // Back: the shared limits hold again.
    assert_eq!(after.1, 0, "no 429 after the restart");
    assert!(
        settled.0 as f64 <= refill(END - RESTART - Duration::from_secs(60)) + 1.0,
        "{} admitted in the last minute",
        settled.0
    );
}

#[tokio::test(start_paused = true)]
async fn fail_closed_refuses_while_redis_is_down_and_recovers() {
    const KILL: Duration = Duration::from_secs(70);
    const RESTART: Duration = Duration::from_secs(100);
    const END: Duration = Duration::from_secs(170);

    let mut redis = RedisServer::start(&[]);
    let url = redis.url();
    let sim = simulator();
    let start = Instant::now();
    let mut stores = Vec::new();
    let mut stacks = Vec::new();
    for _ in 0..STACKS {
        let (store, stack) = stack(&url, &sim, false).await;
        stores.push(store);
        stacks.push(stack);
    }
    let drivers = drive(&stacks, start, END);

    tokio::time::sleep_until(start + KILL).await;
    redis.kill();
    let degraded = until(&stores, SECOND, RedisStore::is_degraded).await;
    tokio::time::sleep_until(start + RESTART).await;
    redis.restart();
    let recovered = until(&stores, 2 * RETRY, |store| !store.is_degraded()).await;
    let ended = collect(drivers).await;

    let log = sim.log();
    let sent = ended.len();
    let records = ended_once(ended, &log);
    // Requests that met the outage: sent after the stores noticed it and given up before Redis
    // was back (a request waits at most MAX_WAIT).
    let noticed = KILL + degraded.iter().flatten().max().copied().unwrap_or_default();
    let outage = window(&log, noticed, RESTART);
    // Before a store notices, its lease still serves.
    let unnoticed = window(&log, KILL, noticed);
    let met: Vec<_> = records
        .iter()
        .filter(|r| r.sent >= noticed && r.sent + MAX_WAIT < RESTART)
        .collect();
    let refusals: Vec<_> = met
        .iter()
        .filter_map(|r| match r.ended {
            Ended::Refused(wait) => Some(wait),
            Ended::Answered(_) => None,
        })
        .collect();
    let after = window(&log, RESTART, END);
    let settled = window(&log, RESTART + Duration::from_secs(60), END);
    println!(
        "fail-closed, redis killed at {KILL:?} and restarted at {RESTART:?}: {sent} requests, {} \
         answered; stores degraded after {degraded:?}, back after {recovered:?}",
        log.len()
    );
    println!(
        "  redis down: the simulator admitted {} before the stores noticed (leases), {} in \
         {noticed:?}..{RESTART:?}; {} requests met the outage and {} were refused with \
         RateLimited (waits: {:?})",
        unnoticed.0,
        outage.0,
        met.len(),
        refusals.len(),
        refusals.iter().collect::<std::collections::BTreeSet<_>>()
    );
    println!(
        "  after the restart: the simulator admitted {} ({:.1} a minute from a minute after it), \
         answered {} with 429",
        after.0,
        settled.0 as f64 / ((END - RESTART).as_secs_f64() / 60.0 - 1.0),
        after.1
    );

    assert!(degraded.iter().all(Option::is_some), "{degraded:?}");
    for took in &recovered {
        let took = took.expect("every store found Redis again");
        assert!(took <= RETRY + TICK, "back on Redis after {took:?}");
    }
    assert_eq!(
        outage.0, 0,
        "nothing reaches the provider while Redis is down"
    );
    assert!(
        unnoticed.0 <= STACKS as u64 * LEASE,
        "{unnoticed:?} from leases"
    );
    assert!(!met.is_empty());
    assert_eq!(
        refusals.len(),
        met.len(),
        "every request that met the outage was refused"
    );
    assert!(
        refusals
            .iter()
            .all(|wait| wait.is_none_or(|wait| wait == RETRY)),
        "a refusal waits for the next probe: {refusals:?}"
    );
    assert_eq!(after.1, 0, "no 429 after the restart");
    assert!(settled.0 as f64 <= refill(END - RESTART - Duration::from_secs(60)) + 1.0);
    let served = per_stack(&records, RESTART + 2 * RETRY, END);
    assert!(
        served.iter().all(|(answered, _)| *answered > 0),
        "{served:?}"
    );
}
