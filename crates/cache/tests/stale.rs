//! Stale on error, composed as the crate docs show it: Annotate → `FallbackLayer` (the cache's
//! stale lookup) → Cache (60 s to live, 10 min of staleness) → Classify → tollgate-sim, scripted
//! healthy for two minutes, then down. In-process simulator, paused time.
//!
//! During the outage an answer stored while healthy comes back stale (a 200, marked, the same
//! bytes, a stream as the same events); a request never answered, and one whose entry is past
//! `time_to_live + max_staleness`, get the upstream's failure unchanged; so does a refused key
//! unless the fallback is asked to cover it, and a request that says `no-store`.

mod common;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Either, Full};
use tollgate_cache::{CacheConfig, CacheLayer, CacheStatus};
use tollgate_core::BoxError;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_fallback::{DEGRADED_HEADER, Degraded, FallbackLayer, Trigger, Triggers};
use tollgate_sim::SimService;
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt};

use common::{Reply, Stack, calls, chat, chat_stream, send, sim};

const TTL: Duration = Duration::from_secs(60);
const MAX_STALENESS: Duration = Duration::from_secs(600);

/// Healthy for two minutes, then `down` for an hour.
fn scripted(down: &str, keys: &str) -> SimService {
    sim(&format!(
        r#"
        {keys}
        [[phases]]
        name = "healthy"
        duration = "2m"
        [[phases]]
        name = "down"
        duration = "1h"
        [phases.faults]
        {down}
        "#
    ))
}

/// The stack of the crate docs over `sim`, falling back on `triggers`.
fn stack(sim: &SimService, triggers: Triggers) -> (Stack, tollgate_cache::CacheHandle) {
    let cache = CacheLayer::new(CacheConfig {
        time_to_live: TTL,
        max_staleness: MAX_STALENESS,
        ..CacheConfig::default()
    })
    .unwrap();
    let handle = cache.handle();
    let service = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(FallbackLayer::new(handle.stale_lookup()).with_policy(triggers))
        .layer(cache)
        .layer(ClassifyLayer::new())
        .service(sim.clone());
    let service = ServiceExt::<Request<Full<Bytes>>>::map_response(service, |response| {
        response.map(|body: Either<_, _>| body.map_err(Into::<BoxError>::into).boxed_unsync())
    });
    (BoxCloneSyncService::new(service), handle)
}

fn age(reply: &Reply) -> u64 {
    reply.head.headers["age"].to_str().unwrap().parse().unwrap()
}

fn degraded(reply: &Reply) -> Option<&Degraded> {
    reply.head.extensions.get::<Degraded>()
}

/// Asserts `reply` is the upstream's own failure with `status`, untouched by the fallback.
fn upstream_failure(reply: &Reply, status: u16) {
    upstream_failure_as(reply, status, CacheStatus::Miss);
}

fn upstream_failure_as(reply: &Reply, status: u16, cache: CacheStatus) {
    assert_eq!(reply.head.status, status);
    assert_eq!(reply.cache, cache);
    assert!(degraded(reply).is_none());
    assert!(!reply.head.headers.contains_key(DEGRADED_HEADER));
    assert!(!reply.head.headers.contains_key("x-tollgate-cache"));
}

async fn outage(down: &str, status: u16, trigger: Trigger) {
    let sim = scripted(down, "");
    let (llm, handle) = stack(&sim, Triggers::default());

    // Healthy: answered, and stored.
    let first = send(&llm, chat("sk-a", "Hi")).await;
    assert_eq!(
        (first.head.status.as_u16(), first.cache),
        (200, CacheStatus::Miss)
    );
    let streamed = send(&llm, chat_stream("sk-a", "Tell me")).await;
    assert_eq!(streamed.cache, CacheStatus::Miss);
    assert!(streamed.frames.len() > 2, "a stream of events");
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(send(&llm, chat("sk-a", "Hi")).await.cache, CacheStatus::Hit);
    assert_eq!(calls(&sim), 2);

    // Down, three minutes after: past the time to live, within the staleness allowed.
    tokio::time::advance(Duration::from_secs(150)).await;
    let stale = send(&llm, chat("sk-a", "Hi")).await;
    assert_eq!(calls(&sim), 3, "the upstream was asked first");
    assert_eq!(stale.head.status, 200);
    assert_eq!(stale.head.headers["x-tollgate-cache"], "stale");
    assert_eq!(stale.head.headers[DEGRADED_HEADER], trigger.as_str());
    assert_eq!(age(&stale), 180);
    assert_eq!(
        stale.cache,
        CacheStatus::Stale {
            age: Duration::from_secs(180)
        }
    );
    let mark = degraded(&stale).expect("marked degraded");
    assert_eq!(
        (mark.trigger, mark.outcome.status),
        (trigger, http::StatusCode::from_u16(status).ok())
    );
    assert_eq!(stale.bytes(), first.bytes(), "the same answer");
    assert!(stale.error.is_none());

    let replayed = send(&llm, chat_stream("sk-a", "Tell me")).await;
    assert_eq!(
        replayed.cache,
        CacheStatus::Stale {
            age: Duration::from_secs(180)
        }
    );
    assert_eq!(replayed.frames, streamed.frames, "event by event");

    // Never answered: the upstream's failure, as it was.
    let never = send(&llm, chat("sk-a", "Something new")).await;
    upstream_failure(&never, status);
    // Asked not to touch the cache: the same.
    let mut no_store = chat("sk-a", "Hi");
    no_store
        .headers_mut()
        .insert("cache-control", "no-store".parse().unwrap());
    upstream_failure_as(&send(&llm, no_store).await, status, CacheStatus::Bypass);
    assert_eq!(handle.snapshot().stale_hits, 2);

    // Just within `time_to_live + max_staleness`, then just past it.
    tokio::time::advance(Duration::from_secs(479)).await;
    let last = send(&llm, chat("sk-a", "Hi")).await;
    assert_eq!(age(&last), 659);
    tokio::time::advance(Duration::from_secs(1)).await;
    upstream_failure(&send(&llm, chat("sk-a", "Hi")).await, status);
    assert_eq!(handle.snapshot().stale_hits, 3);
    assert_eq!(handle.snapshot().hits, 1);
}

#[tokio::test(start_paused = true)]
async fn an_overloaded_upstream_is_answered_stale() {
    outage("overload_rate = 1.0", 529, Trigger::Overloaded).await;
}

#[tokio::test(start_paused = true)]
async fn a_failing_upstream_is_answered_stale() {
    outage("error_rate = 1.0", 500, Trigger::ServerError).await;
}

#[tokio::test(start_paused = true)]
async fn a_refused_key_is_not_answered_stale_unless_asked() {
    let keys = "[[keys]]\nkey = \"sk-a\"\nrevoked_after = \"2m\"\n";
    let sim = scripted("", keys);
    let (llm, handle) = stack(&sim, Triggers::default());
    let (covering, covering_handle) = stack(&sim, Triggers::default().with(Trigger::AuthError));
    let first = send(&llm, chat("sk-a", "Hi")).await;
    assert_eq!(first.head.status, 200);
    let covered = send(&covering, chat("sk-a", "Hi")).await;
    assert_eq!(covered.head.status, 200);

    // Revoked, and past the time to live: the caller must hear about it.
    tokio::time::advance(Duration::from_secs(180)).await;
    upstream_failure(&send(&llm, chat("sk-a", "Hi")).await, 401);
    assert_eq!(handle.snapshot().stale_hits, 0);

    // Unless the fallback is asked to cover refused keys too.
    let stale = send(&covering, chat("sk-a", "Hi")).await;
    assert_eq!(stale.head.status, 200);
    assert_eq!(stale.head.headers[DEGRADED_HEADER], "auth_error");
    assert_eq!(stale.bytes(), covered.bytes());
    assert_eq!(covering_handle.snapshot().stale_hits, 1);
}
