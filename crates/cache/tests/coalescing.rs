//! Single flight over the in-process simulator: identical requests in flight at once make one
//! upstream call (counted in the simulator's log), every waiter gets the whole answer, a
//! cancelled first caller strands nobody, and a call nobody waits for any more is dropped.

mod common;

use std::time::Duration;

use common::{cached, cached_with, calls, chat, chat_stream, send, sim, status};
use tokio::task::JoinSet;
use tollgate_cache::{CacheConfig, CacheStatus};

/// An upstream that takes a second to answer.
const SLOW: &str = "[latency]\ntime_to_first_token = \"1s\"\nper_output_token = \"10ms\"\n";

#[tokio::test(start_paused = true)]
async fn a_hundred_identical_requests_make_one_upstream_call() {
    let sim = sim(SLOW);
    let (stack, handle) = cached(&sim);
    let mut callers = JoinSet::new();
    for _ in 0..100 {
        let stack = stack.clone();
        callers.spawn(async move { send(&stack, chat_stream("sk", "together")).await });
    }
    let replies = callers.join_all().await;
    assert_eq!(calls(&sim), 1, "one upstream call: {:?}", sim.log());
    let first = &replies[0];
    assert_eq!(first.head.status, 200);
    for reply in &replies {
        assert_eq!(reply.bytes(), first.bytes());
        assert_eq!(
            reply.frames.len(),
            first.frames.len(),
            "each waiter streams"
        );
    }
    let count = |status| replies.iter().filter(|r| r.cache == status).count();
    assert_eq!(count(CacheStatus::Miss), 1);
    assert_eq!(count(CacheStatus::Coalesced), 99);
    assert!(
        replies
            .iter()
            .filter(|r| r.cache == CacheStatus::Coalesced)
            .all(|r| r.marker() == Some("coalesced"))
    );
    let stats = handle.snapshot();
    assert_eq!((stats.misses, stats.coalesced, stats.stored), (1, 99, 1));
    assert_eq!(stats.in_flight, 0);
    // And the next one is a hit.
    assert_eq!(
        status(&stack, chat_stream("sk", "together")).await,
        CacheStatus::Hit
    );
    assert_eq!(calls(&sim), 1);
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_first_caller_does_not_strand_the_others() {
    let sim = sim(SLOW);
    let (stack, _) = cached(&sim);
    let leader = tokio::spawn({
        let stack = stack.clone();
        async move { send(&stack, chat("sk", "lead")).await }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut followers = JoinSet::new();
    for _ in 0..10 {
        let stack = stack.clone();
        followers.spawn(async move { send(&stack, chat("sk", "lead")).await });
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    leader.abort();
    assert!(leader.await.unwrap_err().is_cancelled());
    let replies = followers.join_all().await;
    assert_eq!(calls(&sim), 1);
    for reply in &replies {
        assert_eq!(reply.head.status, 200);
        assert_eq!(reply.cache, CacheStatus::Coalesced);
        assert!(reply.error.is_none());
        assert_eq!(reply.bytes(), replies[0].bytes());
    }
    assert_eq!(status(&stack, chat("sk", "lead")).await, CacheStatus::Hit);
}

#[tokio::test(start_paused = true)]
async fn a_follower_that_joins_mid_stream_reads_it_from_the_start() {
    let sim = sim("[output]\nmin_tokens = 16\n[latency]\nper_output_token = \"100ms\"\n");
    let (stack, _) = cached(&sim);
    let first = tokio::spawn({
        let stack = stack.clone();
        async move { send(&stack, chat_stream("sk", "late")).await }
    });
    // 16 tokens at 100 ms: half way through.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let late = send(&stack, chat_stream("sk", "late")).await;
    let first = first.await.unwrap();
    assert_eq!(late.cache, CacheStatus::Coalesced);
    assert_eq!(late.bytes(), first.bytes());
    assert_eq!(calls(&sim), 1);
}

#[tokio::test(start_paused = true)]
async fn when_every_caller_leaves_the_upstream_call_is_dropped() {
    let sim = sim("[latency]\ntime_to_first_token = \"1s\"\nper_output_token = \"100ms\"\n");
    let (stack, handle) = cached(&sim);
    let mut callers = JoinSet::new();
    for _ in 0..5 {
        let stack = stack.clone();
        callers.spawn(async move { send(&stack, chat_stream("sk", "nobody")).await });
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert_eq!(sim.stats().in_flight, 1, "the stream is under way");
    callers.shutdown().await;
    tokio::task::yield_now().await;
    assert_eq!(sim.stats().in_flight, 0, "and dropped with its last caller");
    assert_eq!(handle.snapshot().in_flight, 0);
    assert_eq!(handle.snapshot().stored, 0);
    // A new request starts afresh.
    assert_eq!(
        status(&stack, chat_stream("sk", "nobody")).await,
        CacheStatus::Miss
    );
    assert_eq!(calls(&sim), 2);
}

#[tokio::test(start_paused = true)]
async fn a_failed_shared_call_fails_every_waiter_and_is_not_stored() {
    let sim = sim(&format!("{SLOW}[faults]\nerror_rate = 1.0\n"));
    let (stack, handle) = cached(&sim);
    let mut callers = JoinSet::new();
    for _ in 0..10 {
        let stack = stack.clone();
        callers.spawn(async move { send(&stack, chat("sk", "fails")).await });
    }
    for reply in callers.join_all().await {
        assert_eq!(reply.head.status, 500);
    }
    assert_eq!(calls(&sim), 1);
    assert_eq!(handle.snapshot().stored, 0);
    send(&stack, chat("sk", "fails")).await;
    assert_eq!(calls(&sim), 2, "a failure is not served again");
}

#[tokio::test(start_paused = true)]
async fn without_coalescing_each_request_makes_its_own_call() {
    let sim = sim(SLOW);
    let config = CacheConfig {
        coalesce: false,
        ..CacheConfig::default()
    };
    let (stack, _) = cached_with(config, &sim);
    let mut callers = JoinSet::new();
    for _ in 0..3 {
        let stack = stack.clone();
        callers.spawn(async move { send(&stack, chat("sk", "alone")).await });
    }
    callers.join_all().await;
    assert_eq!(calls(&sim), 3);
}
