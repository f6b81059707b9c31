//! Three pools ("replicas") over one redis-server and one simulator, sharing cooldowns: a key
//! revoked upstream is out of rotation on every replica within a second of the first 401; a
//! 429's cooldown holds on all of them for its duration; a reset on one puts the member back
//! on all; with Redis paused or killed, calls never wait on it, each replica goes on alone, and
//! sharing resumes when Redis answers. Real time (the round trips to Redis are real), each
//! test a few seconds; one thread, so that the logs of every replica's task are captured.
#![cfg(feature = "redis")]

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::time::Instant;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{BoxError, Provider, Secret};
use tollgate_pool::{
    Member, MemberState, Policy, Pool, PoolHandle, Reason, RedisPoolState, Served, WhenExhausted,
};
use tollgate_sim::{SimConfig, SimService};
use tollgate_testkit::redis::RedisServer;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

const KEYS: [&str; 3] = [
    "sk-fleet-alpha-1111",
    "sk-fleet-bravo-2222",
    "sk-fleet-charlie-3333",
];
const PASSWORD: &str = "fleet-redis-password-9876";
/// How late a replica may apply another's cooldown (the acceptance bound).
const BOUND: Duration = Duration::from_secs(1);

type Stack = BoxCloneSyncService<
    Request<Full<Bytes>>,
    http::Response<tollgate_core::body::ObservedBody<tollgate_sim::SimBody>>,
    BoxError,
>;

/// One simulator for the fleet; `key0` is appended to the first key's table.
fn sim(key0: &str) -> SimService {
    let mut toml = String::from(
        "seed = 7\n[latency]\ntime_to_first_token = \"1ms\"\nper_output_token = \"0ms\"\n\
         [output]\nmin_tokens = 2\nmax_tokens = 2\n",
    );
    for (i, key) in KEYS.iter().enumerate() {
        toml.push_str(&format!("[[keys]]\nkey = \"{key}\"\n"));
        if i == 0 {
            toml.push_str(key0);
            toml.push('\n');
        }
    }
    SimService::new(SimConfig::from_toml(&toml).unwrap()).unwrap()
}

/// A replica: the three keys in order (key-0 first while it may serve) over the simulator,
/// its cooldowns shared through Redis at `url`.
async fn replica(sim: &SimService, url: &str) -> (Stack, PoolHandle) {
    let mut builder = Pool::builder()
        .policy(Policy::Ordered)
        .when_exhausted(WhenExhausted::Fail);
    for (i, key) in KEYS.iter().enumerate() {
        let stack = ServiceBuilder::new()
            .layer(ClassifyLayer::new())
            .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
            .service(sim.clone());
        builder = builder.member(
            Member::key(&format!("key-{i}"), Secret::new(*key)),
            BoxCloneSyncService::new(stack),
        );
    }
    let shared = RedisPoolState::connect(url).await.unwrap();
    let pool = builder.with_shared(shared).build();
    let handle = pool.handle();
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new().with_provider(Provider::OpenAi))
        .service(pool);
    (BoxCloneSyncService::new(stack), handle)
}

async fn fleet(sim: &SimService, url: &str) -> [(Stack, PoolHandle); 3] {
    [
        replica(sim, url).await,
        replica(sim, url).await,
        replica(sim, url).await,
    ]
}

/// One call: its status, the member that answered and how many were tried, and how long it
/// took.
async fn call(stack: &Stack) -> (u16, String, u32, Duration) {
    let start = Instant::now();
    let request = Request::post("https://api.openai.com/v1/chat/completions")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o-mini","max_tokens":2,"messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let response = stack.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let served = response.extensions().get::<Served>().cloned().unwrap();
    response.into_body().collect().await.unwrap();
    (
        status,
        served.member.to_string(),
        served.attempts,
        start.elapsed(),
    )
}

fn state(handle: &PoolHandle, member: usize) -> MemberState {
    handle.snapshot()[member].state
}

/// Waits (up to `within`, checking every 5 ms) until `done` holds; how long it took.
async fn until(within: Duration, mut done: impl FnMut() -> bool) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < within {
        if done() {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    done().then(|| start.elapsed())
}

fn out_for(handle: &PoolHandle, reason: Reason) -> bool {
    match state(handle, 0) {
        MemberState::CoolingDown { reason: r, .. } | MemberState::Parked { reason: r } => {
            r == reason
        }
        MemberState::Available => false,
    }
}

fn statuses(sim: &SimService, status: u16) -> usize {
    sim.log().iter().filter(|e| e.status == status).count()
}

/// Every log line of the test's thread. Every test captures its own, at DEBUG: a callsite's
/// interest is cached across the binary's threads, and a thread without a subscriber would
/// have it cached as "never" for the others.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
    }
}

fn capture() -> (Captured, tracing::subscriber::DefaultGuard) {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    (captured, tracing::subscriber::set_default(subscriber))
}

/// Replica A meets a revoked key's 401; B and C take it out of rotation within a second and
/// never send it a call.
async fn revoked_key_leaves_every_replica(url: &str) {
    let sim = sim("revoked_after = \"0s\"");
    let [(a, _), (b, hb), (c, hc)] = fleet(&sim, url).await;

    let seen = Instant::now();
    let (status, member, attempts, _) = call(&a).await;
    assert_eq!((status, member.as_str(), attempts), (200, "key-1", 2));
    assert_eq!(statuses(&sim, 401), 1, "replica A saw the 401");

    let on_b = until(BOUND * 2, || out_for(&hb, Reason::AuthError)).await;
    let on_c = until(BOUND * 2, || out_for(&hc, Reason::AuthError)).await;
    // `until` for C started when B was done: C's time counts from the 401 too.
    let (on_b, on_c) = (on_b.map(|_| seen.elapsed()), on_c.map(|_| seen.elapsed()));
    println!("after replica A's 401: out of rotation on B after {on_b:?}, on C after {on_c:?}");
    assert!(on_b.is_some_and(|t| t < BOUND), "B: {on_b:?}");
    assert!(on_c.is_some_and(|t| t < BOUND), "C: {on_c:?}");
    let MemberState::CoolingDown { left, .. } = state(&hb, 0) else {
        panic!("B holds the 1 h auth cooldown");
    };
    assert!(left > Duration::from_secs(3590), "{left:?}");

    // B and C send their next calls to another key at once: no 401 of their own.
    for stack in [&b, &c] {
        for _ in 0..5 {
            let (status, member, attempts, _) = call(stack).await;
            assert_eq!((status, member.as_str(), attempts), (200, "key-1", 1));
        }
    }
    assert_eq!(
        statuses(&sim, 401),
        1,
        "only replica A ever sent the revoked key"
    );
}

#[tokio::test]
async fn on_a_redis_cluster_a_revoked_key_leaves_every_replica_and_health_is_shared() {
    let (_logs, _guard) = capture();
    let cluster = tollgate_testkit::redis::RedisCluster::start();
    revoked_key_leaves_every_replica(&cluster.url()).await;
    let keys = cluster.keys("{tollgate:pool}:*");
    assert!(keys.iter().any(|k| k.contains(":cooldown:")), "{keys:?}");
    assert!(keys.iter().any(|k| k.contains(":counters:")), "{keys:?}");
    // A fresh cluster: the revoked key's cooldown would keep the failing calls off key-0.
    drop(cluster);
    let cluster = tollgate_testkit::redis::RedisCluster::start();
    failures_on_one_replica_score_members_down_on_another(&cluster.url()).await;
}

#[tokio::test]
async fn a_key_revoked_upstream_is_out_on_every_replica_within_a_second_of_the_first_401() {
    let (logs, _guard) = capture();
    let redis = RedisServer::start(&[]);
    revoked_key_leaves_every_replica(&redis.url()).await;

    // Redis holds the member by name and fingerprint, never by key.
    let client = redis::Client::open(redis.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let all: Vec<String> = redis::cmd("KEYS")
        .arg("{tollgate:pool}:*")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        all.iter().all(|k| KEYS.iter().all(|key| !k.contains(key))),
        "{all:?}"
    );
    let id = tollgate_core::CredentialId::from_secret(KEYS[0].as_bytes());
    let keys: Vec<&String> = all.iter().filter(|k| k.contains(":cooldown:")).collect();
    assert_eq!(keys, [&format!("{{tollgate:pool}}:cooldown:key-0:{id}")]);
    assert!(
        all.contains(&format!("{{tollgate:pool}}:counters:key-0:{id}")),
        "{all:?}"
    );
    let value: String = redis::cmd("GET")
        .arg(keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    let ttl: i64 = redis::cmd("PTTL")
        .arg(keys[0])
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(value.starts_with("auth_error:"), "{value}");
    assert!(
        (3_590_000..=3_600_000).contains(&ttl),
        "expires with the cooldown: {ttl}"
    );
    let logged = logs.text();
    for key in KEYS {
        assert!(!logged.contains(key) && !value.contains(key));
        assert!(!keys[0].contains(key));
    }
    assert!(logged.contains("seen elsewhere in the fleet"), "{logged}");
}

#[tokio::test]
async fn a_rate_limit_on_one_replica_holds_on_all_for_its_duration() {
    let (_logs, _guard) = capture();
    let redis = RedisServer::start(&[]);
    // One request every 2 s on key-0: a second one within that is a 429 with its wait.
    let sim = sim("requests_per_minute = 30\nwindow = \"leaky_bucket\"");
    let [(a, ha), (b, hb), (c, hc)] = fleet(&sim, &redis.url()).await;

    assert_eq!(call(&a).await.1, "key-0");
    let (status, member, attempts, _) = call(&a).await;
    assert_eq!((status, member.as_str(), attempts), (200, "key-1", 2));
    assert_eq!(statuses(&sim, 429), 1);
    let MemberState::CoolingDown { left: on_a, .. } = state(&ha, 0) else {
        panic!("A cools key-0 down");
    };
    let ends = Instant::now() + on_a;
    assert!(on_a > Duration::from_millis(1500), "{on_a:?}");

    let seen = until(BOUND, || {
        out_for(&hb, Reason::RateLimited) && out_for(&hc, Reason::RateLimited)
    })
    .await;
    println!("a {on_a:?} rate-limit cooldown on A is out on B and C after {seen:?}");
    assert!(
        seen.is_some(),
        "B and C apply A's cooldown within {BOUND:?}"
    );
    for handle in [&hb, &hc] {
        let MemberState::CoolingDown { left, .. } = state(handle, 0) else {
            panic!("cooling down");
        };
        let expected = ends.saturating_duration_since(Instant::now());
        let skew = left.abs_diff(expected);
        assert!(
            skew < Duration::from_millis(20),
            "ends with A's: {skew:?} apart"
        );
    }
    // For its duration, B and C leave key-0 alone.
    while Instant::now() + Duration::from_millis(100) < ends {
        for stack in [&b, &c] {
            let (_, member, attempts, _) = call(stack).await;
            assert_eq!((member.as_str(), attempts), ("key-1", 1));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        statuses(&sim, 429),
        1,
        "no replica sent key-0 while it cooled down"
    );
    // And then it is back everywhere (for its duration only: not a minute, the default).
    tokio::time::sleep_until(ends + Duration::from_millis(150)).await;
    for (stack, handle) in [(&a, &ha), (&b, &hb), (&c, &hc)] {
        assert_eq!(state(handle, 0), MemberState::Available);
        assert_eq!(call(stack).await.1, "key-0");
        // Spaced out by the simulator's limit again: the next is key-1's.
        tokio::time::sleep(Duration::from_millis(2_050)).await;
    }
}

#[tokio::test]
async fn a_reset_on_one_replica_puts_the_member_back_on_all() {
    let (_logs, _guard) = capture();
    let redis = RedisServer::start(&[]);
    let sim = sim("quota_exhausted = true");
    let [(a, ha), (_b, hb), (_c, hc)] = fleet(&sim, &redis.url()).await;

    let (status, member, _, _) = call(&a).await;
    assert_eq!((status, member.as_str()), (200, "key-1"));
    let parked = MemberState::Parked {
        reason: Reason::QuotaExhausted,
    };
    assert_eq!(state(&ha, 0), parked);
    let seen = until(BOUND, || state(&hb, 0) == parked && state(&hc, 0) == parked).await;
    assert!(seen.is_some(), "parked on every replica");

    // Reset on C, which never saw the 429 itself: back on A and B too.
    assert!(hc.reset("key-0"));
    assert_eq!(state(&hc, 0), MemberState::Available);
    let back = until(BOUND, || {
        state(&ha, 0) == MemberState::Available && state(&hb, 0) == MemberState::Available
    })
    .await;
    println!("a reset on C is seen on A and B after {back:?}");
    assert!(
        back.is_some(),
        "A: {:?}, B: {:?}",
        state(&ha, 0),
        state(&hb, 0)
    );
    // And it stays back: the old cooldown is not read again.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for handle in [&ha, &hb, &hc] {
        assert_eq!(state(handle, 0), MemberState::Available);
    }

    // A cooldown after the reset is shared again, and reset_all clears it everywhere.
    let (_, member, attempts, _) = call(&a).await;
    assert_eq!((member.as_str(), attempts), ("key-1", 2));
    assert!(
        until(BOUND, || state(&hb, 0) == parked && state(&hc, 0) == parked)
            .await
            .is_some()
    );
    hb.reset_all();
    assert!(
        until(BOUND, || {
            [&ha, &hc]
                .iter()
                .all(|h| state(h, 0) == MemberState::Available)
        })
        .await
        .is_some()
    );
}

#[tokio::test]
async fn with_redis_paused_calls_never_wait_each_replica_goes_on_alone_and_sharing_resumes() {
    let (logs, _guard) = capture();
    let redis = RedisServer::start(&["--requirepass", PASSWORD]);
    let url = format!("redis://:{PASSWORD}@127.0.0.1:{}", redis.port);
    let sim = sim("revoked_after = \"0s\"");
    let [(a, ha), (b, hb), (_c, hc)] = fleet(&sim, &url).await;
    tokio::time::sleep(Duration::from_millis(300)).await;

    redis.pause();
    // Calls never touch Redis: the 401 and the failover take the simulator's time only.
    let (status, member, attempts, took) = call(&a).await;
    assert_eq!((status, member.as_str(), attempts), (200, "key-1", 2));
    assert!(took < Duration::from_millis(100), "a call waited {took:?}");
    assert!(until(BOUND, || ha.is_degraded()).await.is_some());
    // B goes on alone: it finds the revoked key itself, and cools it down itself.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(state(&hb, 0), MemberState::Available, "B cannot hear of it");
    let (status, member, attempts, took) = call(&b).await;
    assert_eq!((status, member.as_str(), attempts), (200, "key-1", 2));
    assert!(took < Duration::from_millis(100), "a call waited {took:?}");
    for _ in 0..10 {
        let (_, _, _, took) = call(&a).await;
        assert!(took < Duration::from_millis(100), "a call waited {took:?}");
    }

    redis.resume();
    let resumed = Instant::now();
    let shared = until(Duration::from_secs(3), || out_for(&hc, Reason::AuthError)).await;
    println!("Redis answers again: C holds A's cooldown after {shared:?}");
    assert!(
        shared.is_some_and(|t| t < Duration::from_millis(2_500)),
        "{shared:?}"
    );
    assert!(
        until(Duration::from_secs(2), || !ha.is_degraded()
            && !hb.is_degraded())
        .await
        .is_some()
    );
    println!(
        "all replicas sharing again {:?} after SIGCONT",
        resumed.elapsed()
    );

    let logged = logs.text();
    let warnings = logged.matches("redis unreachable").count();
    assert_eq!(warnings, 3, "one warning per replica per outage:\n{logged}");
    assert!(logged.contains("redis answers again"));
    assert!(!logged.contains(PASSWORD), "the password in the logs");
    assert!(!format!("{:?}", RedisPoolState::connect(&url).await.unwrap()).contains(PASSWORD));
    for key in KEYS {
        assert!(!logged.contains(key), "a key in the logs");
    }
}

#[tokio::test]
async fn a_redis_that_restarts_empty_gets_the_cooldowns_back() {
    let (_logs, _guard) = capture();
    let mut redis = RedisServer::start(&[]);
    let sim = sim("revoked_after = \"0s\"");
    let [(a, ha), (_b, hb), (c, hc)] = fleet(&sim, &redis.url()).await;

    redis.kill();
    let (status, member, attempts, took) = call(&a).await;
    assert_eq!((status, member.as_str(), attempts), (200, "key-1", 2));
    assert!(took < Duration::from_millis(100), "a call waited {took:?}");
    assert!(until(BOUND, || ha.is_degraded()).await.is_some());
    for _ in 0..5 {
        let (status, _, _, took) = call(&c).await;
        assert_eq!(status, 200);
        assert!(took < Duration::from_millis(100), "a call waited {took:?}");
    }

    redis.restart();
    let restarted = Instant::now();
    // C found the key revoked itself meanwhile; B learns it from A (or C) once Redis is back.
    let shared = until(Duration::from_secs(3), || out_for(&hb, Reason::AuthError)).await;
    println!(
        "Redis restarted empty: B holds the cooldown after {shared:?} ({:?} since restart)",
        restarted.elapsed()
    );
    assert!(
        shared.is_some_and(|t| t < Duration::from_millis(2_500)),
        "{shared:?}"
    );
    assert!(out_for(&hc, Reason::AuthError));
    assert!(!ha.is_degraded());
}

#[tokio::test]
async fn what_one_replicas_calls_meet_moves_every_replicas_scores_and_counts() {
    let (_logs, _guard) = capture();
    let redis = RedisServer::start(&[]);
    failures_on_one_replica_score_members_down_on_another(&redis.url()).await;
}

/// Ten calls fail on one replica: another that sent none scores the members alike, and both
/// show the fleet's counts.
async fn failures_on_one_replica_score_members_down_on_another(url: &str) {
    // One replica reaches the keys through a provider that fails every call, the other
    // through one that answers.
    let failing = {
        let mut config = SimConfig::from_toml(
            "seed = 7\n[faults]\nerror_rate = 1.0\n[latency]\ntime_to_first_token = \"1ms\"\n",
        )
        .unwrap();
        config.keys = sim("").config().keys.clone();
        SimService::new(config).unwrap()
    };
    let good = sim("");
    let (failing_stack, failing_handle) = replica(&failing, url).await;
    let (_, other) = replica(&good, url).await;
    for _ in 0..10 {
        let (status, ..) = call(&failing_stack).await;
        assert_eq!(status, 500);
    }
    let own = failing_handle.snapshot()[0].clone();
    assert_eq!(own.counters.server_errors, 10, "{own:?}");

    // Within a second the other replica has the fleet's counts and its scores have dropped,
    // though it sent no call of its own.
    let seen = until(BOUND, || {
        other.snapshot()[0]
            .fleet
            .is_some_and(|fleet| fleet.server_errors == 10)
    })
    .await;
    assert!(seen.is_some(), "{:?}", other.snapshot()[0]);
    let members = other.snapshot();
    for (mine, theirs) in members.iter().zip(failing_handle.snapshot()) {
        assert_eq!(mine.counters.calls, 0, "no call of its own");
        assert_eq!(mine.fleet.unwrap().calls, theirs.counters.calls);
        assert_eq!(mine.score, theirs.score, "{mine:?} against {theirs:?}");
        assert!(mine.score < 100, "{mine:?}");
    }
    assert!(members[0].score <= 60, "{:?}", members[0]);
    // The failing replica's own calls are not taken in twice.
    until(BOUND, || failing_handle.snapshot()[0].fleet.is_some()).await;
    assert_eq!(failing_handle.snapshot()[0].score, own.score);
}
