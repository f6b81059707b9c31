//! With the `metrics` feature every counter of `CacheStats` is also a metric: lookups by
//! result, stores, evictions, and the entries and bytes held (stored, and by calls in flight)
//! as gauges.
#![cfg(feature = "metrics")]

mod common;

use std::collections::BTreeMap;

use common::{cached, calls, chat_stream, post, send, sim, status};
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use tokio::task::JoinSet;
use tollgate_cache::CacheStatus;

/// This layer's series (see `tollgate_testkit::metrics::recorded`).
fn recorded(snapshotter: &Snapshotter) -> BTreeMap<String, String> {
    tollgate_testkit::metrics::recorded(snapshotter, &["tollgate_cache_"])
}

/// An upstream that takes a second to answer.
const SLOW: &str = "[latency]\ntime_to_first_token = \"1s\"\nper_output_token = \"10ms\"\n";

#[tokio::test(start_paused = true)]
async fn lookups_stores_and_levels_match_the_stats() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    let sim = sim(SLOW);
    let (stack, handle) = cached(&sim);
    // Ten identical requests at once: one miss, nine coalesced, one answer stored.
    let mut callers = JoinSet::new();
    for _ in 0..10 {
        let stack = stack.clone();
        callers.spawn(async move { send(&stack, chat_stream("sk-cache", "once")).await });
    }
    callers.join_all().await;
    // Then a hit, and a chat at the default temperature, which is not cached.
    assert_eq!(
        status(&stack, chat_stream("sk-cache", "once")).await,
        CacheStatus::Hit
    );
    let random = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let bypass = post("/v1/chat/completions", "sk-cache", random);
    assert_eq!(status(&stack, bypass).await, CacheStatus::Bypass);
    assert_eq!(calls(&sim), 2);

    let stats = handle.snapshot();
    assert_eq!((stats.entries, stats.stored), (1, 1));
    assert!(stats.bytes > 0);
    assert_eq!(stats.in_flight_bytes, 0, "every call ended and was read");
    let lookups = |result: &str| format!("tollgate_cache_lookups_total{{result={result}}}");
    let expected = BTreeMap::from([
        (lookups("bypass"), "counter 1".to_owned()),
        (lookups("coalesced"), "counter 9".to_owned()),
        (lookups("hit"), "counter 1".to_owned()),
        (lookups("miss"), "counter 1".to_owned()),
        (lookups("second_level_hit"), "counter 0".to_owned()),
        (lookups("stale"), "counter 0".to_owned()),
        (
            "tollgate_cache_bytes{}".to_owned(),
            format!("gauge {}", stats.bytes),
        ),
        ("tollgate_cache_entries{}".to_owned(), "gauge 1".to_owned()),
        (
            "tollgate_cache_in_flight_bytes{}".to_owned(),
            "gauge 0".to_owned(),
        ),
        (
            "tollgate_cache_evictions_total{}".to_owned(),
            "counter 0".to_owned(),
        ),
        (
            "tollgate_cache_expirations_total{}".to_owned(),
            "counter 0".to_owned(),
        ),
        (
            "tollgate_cache_not_stored_total{}".to_owned(),
            "counter 0".to_owned(),
        ),
        (
            "tollgate_cache_stored_total{}".to_owned(),
            "counter 1".to_owned(),
        ),
    ]);
    assert_eq!(recorded(&snapshotter), expected);
}
