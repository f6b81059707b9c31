//! `RedisStore` against a real redis-server, started on a free port by each test: the `Store`
//! contract (the scenarios of the in-memory GCRA's tests), leases, key expiry, two stores
//! sharing limits, and what happens when Redis goes away and comes back.
//!
//! Tokio's clock is paused: a round trip to Redis holds it still (see `RedisStore`'s command
//! timeout), so the departures are exact.
#![cfg(feature = "redis")]

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;
use tollgate_core::{Provider, RateLimitSnapshot, RateLimitWindow, Scope};
use tollgate_ratelimit::{
    Charges, Dimension, MemoryStore, QuotaTable, Quotas, RedisScope, RedisStore, Refusal, Store,
};

use tollgate_testkit::redis::RedisServer;

fn scope() -> Scope {
    Scope::new(Provider::OpenAi).with_model(Some("gpt-4o-mini".into()))
}

fn model(name: &str) -> Scope {
    scope().with_model(Some(name.into()))
}

/// A store of this test's server (a generous command timeout: tests run side by side on a
/// busy machine, and a late reply would count as Redis unreachable).
async fn connect(server: &RedisServer, quotas: Quotas) -> RedisStore {
    let store = RedisStore::connect(&server.url(), QuotaTable::new(quotas)).await;
    store.expect("connects").with_command_timeout(2 * SECOND)
}

/// A store without leases: one round trip per reservation, exactly the in-memory limits.
async fn exact(server: &RedisServer, quotas: Quotas) -> RedisStore {
    connect(server, quotas).await.with_lease_fraction(0.0)
}

/// Reserves `charges` now, without waiting.
async fn take(store: &RedisStore, scope: &Arc<RedisScope>, charges: Charges) -> Reserved {
    store
        .reserve(scope, charges, Instant::now(), Duration::ZERO)
        .await
}

/// What the fleet has left of `dimension`, once everything queued has reached Redis.
async fn remaining(store: &RedisStore, scope: &RedisScope, dimension: Dimension) -> u64 {
    store.flush().await;
    let view = store.fleet_view(scope, dimension).await;
    view.expect("redis answers").expect("limited").remaining
}

/// The provider's count of `dimension` (requests or tokens) at `at`.
fn count(dimension: Dimension, limit: u64, left: u64, at: Instant) -> RateLimitSnapshot {
    let window = RateLimitWindow {
        limit: Some(limit),
        remaining: Some(left),
        ..Default::default()
    };
    let mut snapshot = RateLimitSnapshot {
        sent_at: Some(at),
        ..Default::default()
    };
    match dimension {
        Dimension::Tokens => snapshot.tokens = Some(window),
        _ => snapshot.requests = Some(window),
    }
    snapshot
}

type Reserved = Result<Instant, Refusal>;

fn wait(dimension: Dimension, wait: Duration) -> Reserved {
    Err(Refusal::Wait { dimension, wait })
}

const ONE: Charges = Charges::request(0, 0);
const SECOND: Duration = Duration::from_secs(1);
const REQUESTS: Dimension = Dimension::Requests;
const TOKENS: Dimension = Dimension::Tokens;

#[tokio::test(start_paused = true)]
async fn a_full_bucket_then_one_per_interval_in_arrival_order() {
    let server = RedisServer::start(&[]);
    let store = exact(&server, Quotas::per_minute(60, 0)).await;
    let (now, s) = (Instant::now(), store.scope(&scope(), Instant::now()));
    for _ in 0..60 {
        assert_eq!(take(&store, &s, ONE).await, Ok(now));
    }
    assert_eq!(take(&store, &s, ONE).await, wait(REQUESTS, SECOND));
    let queued = store.reserve(&s, ONE, now, 2 * SECOND).await;
    assert_eq!(queued, Ok(now + SECOND), "queued");
    let next = store.reserve(&s, ONE, now, 2 * SECOND).await;
    assert_eq!(next, Ok(now + 2 * SECOND), "in order");
    assert_eq!(remaining(&store, &s, REQUESTS).await, 0);
}

#[tokio::test(start_paused = true)]
async fn all_or_nothing_and_costs_release_charge() {
    let server = RedisServer::start(&[]);
    let store = exact(&server, Quotas::per_minute(60, 6_000)).await;
    let (now, s) = (Instant::now(), store.scope(&scope(), Instant::now()));
    let tokens = |n| Charges::request(n, 0);
    assert_eq!(take(&store, &s, tokens(4_000)).await, Ok(now));
    assert_eq!(
        take(&store, &s, tokens(4_000)).await,
        wait(TOKENS, 20 * SECOND)
    );
    assert_eq!(
        remaining(&store, &s, REQUESTS).await,
        59,
        "no request taken"
    );
    store.release(&s, tokens(3_000));
    assert_eq!(remaining(&store, &s, TOKENS).await, 5_000);
    store.charge(&s, tokens(1_000));
    assert_eq!(remaining(&store, &s, TOKENS).await, 4_000);
    let never = Refusal::Never {
        dimension: TOKENS,
        requested: 6_001,
        limit: 6_000,
    };
    assert_eq!(take(&store, &s, tokens(6_001)).await, Err(never));
    let whole = store.reserve(&s, tokens(6_000), now, Duration::MAX).await;
    assert_eq!(whole, Ok(now + 20 * SECOND), "the whole quota fits, later");
}

#[tokio::test(start_paused = true)]
async fn provider_counts_only_tighten_and_pauses_hold_everyone() {
    let server = RedisServer::start(&[]);
    let store = exact(&server, Quotas::per_minute(600, 0)).await;
    let (now, s) = (Instant::now(), store.scope(&scope(), Instant::now()));
    store.observe(&s, &count(REQUESTS, 600, 100, now), false, now);
    assert_eq!(remaining(&store, &s, REQUESTS).await, 100);
    store.observe(&s, &count(REQUESTS, 600, 500, now), false, now);
    assert_eq!(remaining(&store, &s, REQUESTS).await, 100, "never loosens");

    // A count taken 10 s ago has refilled since.
    let other = store.scope(&model("o3"), now);
    store.observe(&other, &count(REQUESTS, 600, 0, now), false, now);
    store.flush().await;
    tokio::time::advance(10 * SECOND).await;
    assert_eq!(remaining(&store, &other, REQUESTS).await, 100);

    // A pause holds everyone back, then lets one request through per interval, no burst.
    let (now, paused) = (Instant::now(), store.scope(&model("o4"), now));
    store.pause(&paused, &[REQUESTS], now + 5 * SECOND, ONE);
    let first = store.reserve(&paused, ONE, now, Duration::MAX).await;
    assert_eq!(first, Ok(now + 5 * SECOND));
    let next = store.reserve(&paused, ONE, now, Duration::MAX).await;
    assert_eq!(next, Ok(now + 5 * SECOND + SECOND / 10));
}

#[tokio::test(start_paused = true)]
async fn two_stores_share_limits_and_learn_them() {
    let server = RedisServer::start(&[]);
    let a = exact(&server, Quotas::per_minute(60, 0)).await;
    let b = exact(&server, Quotas::per_minute(60, 0)).await;
    let (sa, sb) = (
        a.scope(&scope(), Instant::now()),
        b.scope(&scope(), Instant::now()),
    );
    for _ in 0..40 {
        assert!(take(&a, &sa, ONE).await.is_ok());
    }
    for _ in 0..20 {
        assert!(take(&b, &sb, ONE).await.is_ok());
    }
    assert_eq!(take(&b, &sb, ONE).await, wait(REQUESTS, SECOND));
    assert_eq!(take(&a, &sa, ONE).await, wait(REQUESTS, SECOND));

    // A limit nobody configured is learned from the provider's headers.
    let (now, learner) = (Instant::now(), exact(&server, Quotas::unlimited()).await);
    let s = learner.scope(&model("o3"), now);
    assert!(learner.view(&s, REQUESTS, now).is_none());
    learner.observe(&s, &count(REQUESTS, 60, 0, now), true, now);
    assert_eq!(take(&learner, &s, ONE).await, wait(REQUESTS, SECOND));
}

/// Op for op, with leases off, the fleet's view in Redis is the in-memory store's view.
#[tokio::test(start_paused = true)]
async fn any_sequence_of_operations_matches_the_memory_store() {
    let server = RedisServer::start(&[]);
    let quotas = Quotas::per_minute(600, 100_000);
    let redis = exact(&server, quotas).await;
    let memory = MemoryStore::new(QuotaTable::new(quotas));
    let (rs, ms) = (
        redis.scope(&scope(), Instant::now()),
        memory.scope(&scope(), Instant::now()),
    );
    // Provider counts are up to 500 ms old: none from before the memory store's epoch.
    tokio::time::advance(SECOND).await;
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut draw = |n: u64| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % n
    };
    for step in 0..600 {
        let now = Instant::now();
        let charges = Charges::request(draw(500), draw(300));
        match draw(10) {
            0..=4 => {
                let expected = memory.reserve(&ms, charges, now, Duration::ZERO).await;
                let reserved = redis.reserve(&rs, charges, now, Duration::ZERO).await;
                assert_eq!(reserved, expected, "step {step}: reserve {charges:?}");
            }
            5 => {
                memory.release(&ms, charges.tokens_only());
                redis.release(&rs, charges.tokens_only());
            }
            6 => {
                memory.charge(&ms, charges.tokens_only());
                redis.charge(&rs, charges.tokens_only());
            }
            7 => {
                let at = now - Duration::from_millis(draw(500));
                let snapshot = count(TOKENS, 100_000, draw(100_000), at);
                memory.observe(&ms, &snapshot, false, now);
                redis.observe(&rs, &snapshot, false, now);
            }
            _ => tokio::time::advance(Duration::from_millis(draw(400))).await,
        }
        for dimension in [REQUESTS, TOKENS] {
            let expected = memory
                .view(&ms, dimension, Instant::now())
                .unwrap()
                .remaining;
            let shared = remaining(&redis, &rs, dimension).await;
            // Whole nanoseconds since the caller's second, against since the memory's epoch.
            let close = shared.abs_diff(expected) <= 1;
            assert!(close, "step {step}, {dimension}: {shared} vs {expected}");
        }
    }
}

#[tokio::test(start_paused = true)]
async fn leases_serve_locally_and_go_back_when_idle() {
    let server = RedisServer::start(&[]);
    // 600 a minute: 100 ms per request; a lease of 60; one second of refill in reserve.
    let store = connect(&server, Quotas::per_minute(600, 0)).await;
    let store = store.with_lease_fraction(0.1).with_lease_hold(SECOND);
    let (start, s) = (Instant::now(), store.scope(&scope(), Instant::now()));
    assert_eq!(take(&store, &s, ONE).await, Ok(start));
    let asked = store.round_trips().reservations;
    assert_eq!(
        asked, 1,
        "the first asks Redis for itself and a lease of 60"
    );
    for _ in 0..29 {
        assert_eq!(take(&store, &s, ONE).await, Ok(start));
    }
    let asked = store.round_trips().reservations;
    assert_eq!(asked, 1, "the next 29 come from the lease");
    // Redis counts all 61 as taken: (59 s − 6.1 s) / 100 ms.
    assert_eq!(remaining(&store, &s, REQUESTS).await, 529);
    assert_eq!(store.view(&s, REQUESTS, start).unwrap().remaining, 529 + 31);

    // Idle past the hold, the 31 unspent go back: at 2 s, 30 taken at 0 leave 580.
    tokio::time::sleep_until(start + 2 * SECOND).await;
    assert_eq!(remaining(&store, &s, REQUESTS).await, 580);
    assert_eq!(
        s.key(REQUESTS),
        "tollgate:rl:{openai/-/gpt-4o-mini}:requests"
    );
}

#[tokio::test(start_paused = true)]
async fn keys_live_one_period_past_their_tat() {
    let server = RedisServer::start(&[]);
    let store = exact(&server, Quotas::per_minute(60, 0))
        .await
        .with_prefix("fleet-a");
    let s = store.scope(&scope(), Instant::now());
    let key = s.key(REQUESTS);
    assert!(key.starts_with("fleet-a:{"), "{key}");
    assert!(take(&store, &s, ONE).await.is_ok());
    // A blocking connection: an async one would time out on the paused clock.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_connection().unwrap();
    let ttl: i64 = redis::cmd("PTTL").arg(&key).query(&mut conn).unwrap();
    assert!(
        (59_000..=61_000).contains(&ttl),
        "a TAT 1 s ahead, plus a minute: {ttl} ms"
    );
    // Two minutes later the bucket has been full for a period: the next write drops the key.
    tokio::time::advance(120 * SECOND).await;
    store.release(&s, ONE);
    store.flush().await;
    let exists: bool = redis::cmd("EXISTS").arg(&key).query(&mut conn).unwrap();
    assert!(!exists);
}

#[tokio::test(start_paused = true)]
async fn fail_open_degrades_to_the_local_share_and_recovers() {
    let mut server = RedisServer::start(&[]);
    let store = exact(&server, Quotas::per_minute(60, 0)).await;
    let store = store.with_local_share(0.5).with_retry_interval(SECOND);
    let (now, s) = (Instant::now(), store.scope(&scope(), Instant::now()));
    for _ in 0..10 {
        assert!(take(&store, &s, ONE).await.is_ok());
    }
    server.kill();
    // Redis is gone: locally, half of what it had left (50), then half of its refill.
    for i in 0..25 {
        assert_eq!(take(&store, &s, ONE).await, Ok(now), "local request {i}");
    }
    assert!(store.is_degraded());
    assert_eq!(
        take(&store, &s, ONE).await,
        wait(REQUESTS, 2 * SECOND),
        "30 a minute"
    );

    server.restart();
    tokio::time::sleep(2 * SECOND).await;
    assert!(!store.is_degraded(), "a probe found Redis again");
    let before = store.round_trips().reservations;
    assert!(take(&store, &s, ONE).await.is_ok());
    assert_eq!(
        store.round_trips().reservations,
        before + 1,
        "shared limits again"
    );
    assert_eq!(remaining(&store, &s, REQUESTS).await, 59, "a fresh Redis");
}

#[tokio::test(start_paused = true)]
async fn fail_closed_refuses_until_redis_answers() {
    let mut server = RedisServer::start(&[]);
    let store = exact(&server, Quotas::per_minute(60, 0))
        .await
        .with_fail_open(false);
    let s = store.scope(&scope(), Instant::now());
    server.kill();
    assert_eq!(take(&store, &s, ONE).await, wait(REQUESTS, SECOND));
    assert_eq!(take(&store, &s, ONE).await, wait(REQUESTS, SECOND));
    server.restart();
    tokio::time::sleep(2 * SECOND).await;
    assert!(take(&store, &s, ONE).await.is_ok());
}

#[tokio::test]
async fn the_password_never_shows() {
    let server = RedisServer::start(&["--requirepass", "s3cret-pw"]);
    let url = format!("redis://:s3cret-pw@127.0.0.1:{}/0", server.port);
    let store = RedisStore::connect(&url, QuotaTable::default()).await;
    let shown = format!("{:?}", store.expect("authenticates"));
    assert!(
        !shown.contains("s3cret-pw") && shown.contains(":***@"),
        "{shown}"
    );
    let wrong = format!("redis://:wrong-pw@127.0.0.1:{}", server.port);
    let error = RedisStore::connect(&wrong, QuotaTable::default())
        .await
        .unwrap_err();
    assert!(!error.to_string().contains("wrong-pw"), "{error}");
}

#[tokio::test(start_paused = true)]
async fn a_store_full_of_busy_scopes_does_not_grow_and_loses_no_refund() {
    let server = RedisServer::start(&[]);
    // 600 a minute with a lease of 60 and a second of refill in reserve: 590 free at rest.
    let store = connect(&server, Quotas::per_minute(600, 0)).await;
    let store = store
        .with_lease_fraction(0.1)
        .with_lease_hold(SECOND)
        .with_max_scopes(1);
    let kept = store.scope(&model("kept"), Instant::now());
    assert_eq!(take(&store, &kept, ONE).await, Ok(Instant::now()));
    // The one kept scope holds a lease: a new scope's state is made, used, and not kept.
    let made_up = store.scope(&model("made-up"), Instant::now());
    assert_eq!(take(&store, &made_up, ONE).await, Ok(Instant::now()));
    assert_eq!(store.len(), 1);
    assert!(
        !Arc::ptr_eq(&made_up, &store.scope(&model("made-up"), Instant::now())),
        "not kept"
    );
    // Its refund and its lease reach Redis once its request lets go of it.
    store.release(&made_up, ONE);
    drop(made_up);
    assert_eq!(
        remaining(
            &store,
            &store.scope(&model("made-up"), Instant::now()),
            REQUESTS
        )
        .await,
        590
    );
    assert_eq!(store.len(), 1);
}
