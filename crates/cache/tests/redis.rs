//! The shared second level against a real redis-server (started on a free port by each test): two processes' caches share answers through it, a
//! stream comes back byte for byte, entries carry their time to live, and a Redis that goes
//! away makes misses, not errors.
#![cfg(feature = "redis")]

mod common;

use std::time::Duration;

use common::{annotate, calls, chat, chat_stream, send, sim, stack};
use tollgate_cache::redis::RedisStore;
use tollgate_cache::{CacheConfig, CacheHandle, CacheLayer, CacheStatus};
use tollgate_sim::SimService;
use tollgate_testkit::redis::RedisServer;

/// One process of a fleet: its own memory, the shared Redis.
async fn process(server: &RedisServer, sim: &SimService) -> (common::Stack, CacheHandle) {
    let store = RedisStore::connect(&server.url())
        .await
        .expect("connects")
        .with_command_timeout(Duration::from_secs(2));
    let layer = CacheLayer::new(CacheConfig::default())
        .unwrap()
        .with_second_level(store);
    let handle = layer.handle();
    (stack(layer, sim), handle)
}

#[tokio::test]
async fn an_answer_one_process_paid_for_serves_another() {
    let server = RedisServer::start(&[]);
    let sim = sim("");
    let (first, _) = process(&server, &sim).await;
    let (second, second_handle) = process(&server, &sim).await;
    let paid = send(&first, chat("sk", "fleet")).await;
    assert_eq!(paid.cache, CacheStatus::Miss);
    let shared = send(&second, chat("sk", "fleet")).await;
    assert_eq!(shared.cache, CacheStatus::Hit);
    assert_eq!(shared.marker(), Some("hit"));
    assert_eq!(shared.bytes(), paid.bytes());
    assert_eq!(calls(&sim), 1);
    let stats = second_handle.snapshot();
    assert_eq!(
        (stats.second_level_hits, stats.misses, stats.hits),
        (1, 1, 0)
    );
    // Now in the second process's memory too.
    assert_eq!(
        send(&second, chat("sk", "fleet")).await.cache,
        CacheStatus::Hit
    );
    assert_eq!(second_handle.snapshot().hits, 1);
}

#[tokio::test]
async fn a_stream_comes_back_from_redis_event_by_event() {
    let server = RedisServer::start(&[]);
    let sim = sim("");
    let (first, _) = process(&server, &sim).await;
    let (second, _) = process(&server, &sim).await;
    let original = send(&first, chat_stream("sk", "stream")).await;
    let replay = send(&second, chat_stream("sk", "stream")).await;
    assert_eq!(replay.cache, CacheStatus::Hit);
    assert_eq!(replay.frames, original.frames);
    assert_eq!(calls(&sim), 1);
}

#[tokio::test]
async fn entries_live_in_redis_as_long_as_in_memory() {
    let server = RedisServer::start(&[]);
    let sim = sim("");
    let store = RedisStore::connect(&server.url()).await.unwrap();
    let config = CacheConfig {
        time_to_live: Duration::from_secs(90),
        ..CacheConfig::default()
    };
    let layer = CacheLayer::new(config)
        .unwrap()
        .with_second_level(store.clone());
    let key = {
        let annotated = annotate(chat("sk", "ttl")).await;
        layer.key(&annotated)
    };
    let stack = stack(layer, &sim);
    send(&stack, chat("sk", "ttl")).await;
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let left: i64 = redis::cmd("PTTL")
        .arg(store.redis_key(&key))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!((85_000..=90_000).contains(&left), "{left} ms left");
}

#[tokio::test]
async fn without_redis_a_lookup_is_a_miss_not_an_error() {
    let mut server = RedisServer::start(&[]);
    let sim = sim("");
    let (stack, handle) = process(&server, &sim).await;
    server.kill();
    for _ in 0..2 {
        let reply = send(&stack, chat("sk", "alone")).await;
        assert_eq!(reply.head.status, 200);
    }
    assert_eq!(calls(&sim), 1, "memory still works");
    assert_eq!(handle.snapshot().second_level_hits, 0);
}

#[tokio::test]
async fn a_clear_reaches_every_process_and_redis() {
    let server = RedisServer::start(&[]);
    let sim = sim("");
    let (first, first_handle) = process(&server, &sim).await;
    let (second, second_handle) = process(&server, &sim).await;
    send(&first, chat("sk", "one")).await;
    send(&first, chat("sk", "two")).await;
    // Both answers in the second process's memory too.
    assert_eq!(
        send(&second, chat("sk", "one")).await.cache,
        CacheStatus::Hit
    );
    assert_eq!(
        send(&second, chat("sk", "two")).await.cache,
        CacheStatus::Hit
    );
    assert_eq!(calls(&sim), 2);
    // Something else under another prefix stays.
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let () = redis::cmd("SET")
        .arg("other:1:x")
        .arg("kept")
        .query_async(&mut conn)
        .await
        .unwrap();

    let removed = first_handle
        .clear_everywhere()
        .await
        .expect("redis answers");
    assert_eq!(removed, Some(2), "both entries left redis");
    first_handle.run_pending_tasks();
    assert_eq!(first_handle.snapshot().entries, 0);
    assert_eq!(server.keys("tollgate:cache:1:*").len(), 0);
    assert_eq!(server.keys("other:*").len(), 1);

    // The second process clears its memory within a check interval.
    tokio::time::sleep(tollgate_cache::redis::CLEAR_CHECK_INTERVAL * 2).await;
    second_handle.run_pending_tasks();
    assert_eq!(second_handle.snapshot().entries, 0);
    assert_eq!(
        send(&second, chat("sk", "one")).await.cache,
        CacheStatus::Miss
    );
    assert_eq!(calls(&sim), 3, "paid again after the clear");
}

#[tokio::test]
async fn a_clear_without_redis_says_so_after_clearing_memory() {
    let server = RedisServer::start(&[]);
    let sim = sim("");
    let (first, handle) = process(&server, &sim).await;
    send(&first, chat("sk", "one")).await;
    drop(server);
    let error = handle.clear_everywhere().await.unwrap_err();
    assert!(!error.to_string().is_empty());
    handle.run_pending_tasks();
    assert_eq!(handle.snapshot().entries, 0, "memory cleared all the same");
}
