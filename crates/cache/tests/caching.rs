//! The cache over the in-process simulator: what is stored, what is served, for how long, and
//! what is never stored. Every upstream call is counted in the simulator's log.

mod common;

use std::time::Duration;

use common::{cached, cached_with, calls, chat, chat_stream, post, send, sim, status};
use http::HeaderName;
use tollgate_cache::{CacheConfig, CacheLayer, CacheStatus};
use tollgate_core::{EndpointKind, LlmRequest};

#[tokio::test(start_paused = true)]
async fn an_identical_request_costs_once() {
    let sim = sim("");
    let (stack, handle) = cached(&sim);
    let first = send(&stack, chat("sk-a", "hello")).await;
    assert_eq!(first.head.status, 200);
    assert_eq!(first.cache, CacheStatus::Miss);
    assert_eq!(first.marker(), None);
    let again = send(&stack, chat("sk-a", "hello")).await;
    assert_eq!(again.cache, CacheStatus::Hit);
    assert_eq!(again.marker(), Some("hit"));
    assert_eq!(again.bytes(), first.bytes());
    assert_eq!(
        again.head.headers["content-length"],
        first.bytes().len().to_string()
    );
    assert_eq!(
        again.head.headers.get("x-request-id"),
        first.head.headers.get("x-request-id"),
        "the original's headers are replayed"
    );
    assert_eq!(calls(&sim), 1);
    let other = send(&stack, chat("sk-a", "something else")).await;
    assert_eq!(other.cache, CacheStatus::Miss);
    assert_eq!(calls(&sim), 2);
    let stats = handle.snapshot();
    assert_eq!((stats.hits, stats.misses, stats.stored), (1, 2, 2));
    assert_eq!(stats.entries, 2);
    assert!(stats.bytes > first.bytes().len() as u64, "{stats:?}");
}

#[tokio::test(start_paused = true)]
async fn json_key_order_and_whitespace_do_not_change_the_key() {
    let sim = sim("");
    let (stack, _) = cached(&sim);
    let compact =
        r#"{"model":"gpt-4o-mini","temperature":0,"messages":[{"role":"user","content":"hi"}]}"#;
    let shuffled = "{\n  \"messages\": [ { \"content\": \"hi\", \"role\": \"user\" } ],\n  \"temperature\": 0,\n  \"model\": \"gpt-4o-mini\"\n}";
    let first = send(&stack, post("/v1/chat/completions", "sk", compact)).await;
    let second = send(&stack, post("/v1/chat/completions", "sk", shuffled)).await;
    assert_eq!(second.cache, CacheStatus::Hit);
    assert_eq!(second.bytes(), first.bytes());
    assert_eq!(calls(&sim), 1);
}

#[tokio::test(start_paused = true)]
async fn entries_expire_after_their_time_to_live_on_tokios_clock() {
    let sim = sim("");
    let config = CacheConfig {
        time_to_live: Duration::from_secs(60),
        ..CacheConfig::default()
    };
    let (stack, handle) = cached_with(config, &sim);
    assert_eq!(status(&stack, chat("sk", "ttl")).await, CacheStatus::Miss);
    tokio::time::advance(Duration::from_secs(59)).await;
    assert_eq!(status(&stack, chat("sk", "ttl")).await, CacheStatus::Hit);
    assert_eq!(calls(&sim), 1);
    tokio::time::advance(Duration::from_secs(1)).await;
    assert_eq!(status(&stack, chat("sk", "ttl")).await, CacheStatus::Miss);
    assert_eq!(calls(&sim), 2);
    assert_eq!(handle.snapshot().expirations, 1);
    // The fresh answer lives its own hour.
    tokio::time::advance(Duration::from_secs(30)).await;
    assert_eq!(status(&stack, chat("sk", "ttl")).await, CacheStatus::Hit);
    assert_eq!(calls(&sim), 2);
}

#[tokio::test(start_paused = true)]
async fn entries_nobody_asks_for_expire_after_the_idle_timeout() {
    let sim = sim("");
    let config = CacheConfig {
        time_to_idle: Some(Duration::from_secs(10)),
        ..CacheConfig::default()
    };
    let (stack, _) = cached_with(config, &sim);
    send(&stack, chat("sk", "idle")).await;
    for _ in 0..5 {
        tokio::time::advance(Duration::from_secs(9)).await;
        assert_eq!(status(&stack, chat("sk", "idle")).await, CacheStatus::Hit);
    }
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(status(&stack, chat("sk", "idle")).await, CacheStatus::Miss);
    assert_eq!(calls(&sim), 2);
}

#[tokio::test(start_paused = true)]
async fn a_streamed_answer_is_replayed_as_the_same_events() {
    let sim = sim("[latency]\nper_output_token = \"20ms\"\n");
    let (stack, _) = cached(&sim);
    let first = send(&stack, chat_stream("sk", "stream me")).await;
    assert_eq!(first.cache, CacheStatus::Miss);
    assert!(
        first.frames.len() > 3,
        "a stream: {} frames",
        first.frames.len()
    );
    let replay = send(&stack, chat_stream("sk", "stream me")).await;
    assert_eq!(replay.cache, CacheStatus::Hit);
    assert_eq!(replay.bytes(), first.bytes(), "byte for byte");
    assert_eq!(replay.frames, first.frames, "event by event");
    assert_eq!(
        replay.head.headers["content-type"],
        first.head.headers["content-type"]
    );
    assert!(!replay.head.headers.contains_key("content-length"));
    assert!(
        String::from_utf8(replay.bytes())
            .unwrap()
            .ends_with("data: [DONE]\n\n")
    );
    assert_eq!(calls(&sim), 1);
    // A streamed and a plain request are not the same request.
    assert_eq!(
        status(&stack, chat("sk", "stream me")).await,
        CacheStatus::Miss
    );
}

#[tokio::test(start_paused = true)]
async fn embeddings_are_cached_and_random_chats_are_not_unless_forced() {
    let sim = sim("[output]\nembedding_dimensions = 8\n");
    let (stack, handle) = cached(&sim);
    let embed = || {
        post(
            "/v1/embeddings",
            "sk",
            r#"{"model":"text-embedding-3-small","input":"x"}"#,
        )
    };
    send(&stack, embed()).await;
    assert_eq!(status(&stack, embed()).await, CacheStatus::Hit);

    let random = r#"{"model":"gpt-4o-mini","temperature":0.7,"messages":[{"role":"user","content":"a poem"}]}"#;
    for _ in 0..2 {
        let reply = send(&stack, post("/v1/chat/completions", "sk", random)).await;
        assert_eq!(reply.cache, CacheStatus::Bypass);
    }
    let forced = || {
        let mut request = post("/v1/chat/completions", "sk", random);
        request
            .headers_mut()
            .insert("x-tollgate-cache", "force".parse().unwrap());
        request
    };
    assert_eq!(status(&stack, forced()).await, CacheStatus::Miss);
    assert_eq!(status(&stack, forced()).await, CacheStatus::Hit);
    assert_eq!(calls(&sim), 1 + 2 + 1);
    assert_eq!(handle.snapshot().bypasses, 2);
}

#[tokio::test(start_paused = true)]
async fn no_cache_refreshes_and_no_store_leaves_the_cache_alone() {
    let sim = sim("");
    let (stack, handle) = cached(&sim);
    let with = |value: &str| {
        let mut request = chat("sk", "directives");
        request
            .headers_mut()
            .insert("cache-control", value.parse().unwrap());
        request
    };
    let stored = send(&stack, chat("sk", "directives")).await;
    // no-store: upstream, and the stored answer is untouched.
    let skipped = send(&stack, with("no-store")).await;
    assert_eq!(skipped.cache, CacheStatus::Bypass);
    assert_eq!(calls(&sim), 2);
    assert_eq!(
        send(&stack, chat("sk", "directives")).await.bytes(),
        stored.bytes()
    );
    // no-cache: upstream, and the fresh answer replaces the stored one.
    let fresh = send(&stack, with("no-cache")).await;
    assert_eq!(fresh.cache, CacheStatus::Miss);
    assert_eq!(calls(&sim), 3);
    assert_ne!(fresh.bytes(), stored.bytes(), "the simulator answers anew");
    let after = send(&stack, chat("sk", "directives")).await;
    assert_eq!(after.cache, CacheStatus::Hit);
    assert_eq!(after.bytes(), fresh.bytes());
    assert_eq!(calls(&sim), 3);
    assert_eq!(handle.snapshot().stored, 2);
}

#[tokio::test(start_paused = true)]
async fn errors_are_not_stored() {
    let sim = sim("[[keys]]\nkey = \"sk-known\"\n");
    let (stack, handle) = cached(&sim);
    for _ in 0..2 {
        let refused = send(&stack, chat("sk-unknown", "who am i")).await;
        assert_eq!(refused.head.status, 401);
        assert_eq!(refused.cache, CacheStatus::Miss);
    }
    assert_eq!(calls(&sim), 2);
    assert_eq!(handle.snapshot().stored, 0);
    assert_eq!(handle.snapshot().not_stored, 2);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_fails_midway_is_not_stored() {
    for fault in ["stream_error_rate", "stream_disconnect_rate"] {
        let sim = sim(&format!(
            "[output]\nmin_tokens = 20\n[faults]\n{fault} = 1.0\n"
        ));
        let (stack, handle) = cached(&sim);
        for _ in 0..2 {
            let broken = send(&stack, chat_stream("sk", "break")).await;
            assert_eq!(broken.head.status, 200, "{fault}");
            assert_eq!(broken.cache, CacheStatus::Miss, "{fault}");
            if fault == "stream_disconnect_rate" {
                assert!(broken.error.is_some(), "the cut reaches the caller");
            }
        }
        assert_eq!(calls(&sim), 2, "{fault}");
        assert_eq!(handle.snapshot().stored, 0, "{fault}");
    }
}

#[tokio::test(start_paused = true)]
async fn an_answer_over_the_entry_cap_is_served_but_not_stored() {
    let sim = sim("[output]\nembedding_dimensions = 512\n");
    let config = CacheConfig {
        max_entry_bytes: 2_000,
        ..CacheConfig::default()
    };
    let (stack, handle) = cached_with(config, &sim);
    let embed = || post("/v1/embeddings", "sk", r#"{"model":"e","input":"big"}"#);
    let first = send(&stack, embed()).await;
    assert!(first.bytes().len() > 2_000);
    assert_eq!(status(&stack, embed()).await, CacheStatus::Miss);
    assert_eq!(calls(&sim), 2);
    assert_eq!(handle.snapshot().not_stored, 2);
}

#[tokio::test(start_paused = true)]
async fn invalidation_by_key_and_clear() {
    let sim = sim("");
    let layer = tollgate_cache::CacheLayer::default();
    let handle = layer.handle();
    let key = layer.key(&common::annotate(chat("sk", "gone")).await);
    let stack = common::stack(layer, &sim);
    send(&stack, chat("sk", "gone")).await;
    handle.invalidate(&key);
    assert_eq!(status(&stack, chat("sk", "gone")).await, CacheStatus::Miss);
    handle.clear();
    assert_eq!(status(&stack, chat("sk", "gone")).await, CacheStatus::Miss);
    assert_eq!(calls(&sim), 3);
}

#[tokio::test(start_paused = true)]
async fn the_header_the_marking_and_the_policy_are_the_layers_to_choose() {
    let sim = sim("");
    let random =
        r#"{"model":"gpt-4o-mini","temperature":1,"messages":[{"role":"user","content":"x"}]}"#;
    let forced = || {
        let mut request = post("/v1/chat/completions", "sk", random);
        request
            .headers_mut()
            .insert("x-cache", "force".parse().unwrap());
        request
    };
    let named = CacheLayer::default().with_header_name(HeaderName::from_static("x-cache"));
    let stack = common::stack(named, &sim);
    send(&stack, forced()).await;
    let hit = send(&stack, forced()).await;
    assert_eq!(hit.cache, CacheStatus::Hit);
    assert_eq!(hit.head.headers["x-cache"], "hit");
    assert!(!hit.head.headers.contains_key("x-tollgate-cache"));

    let unmarked = common::stack(CacheLayer::default().with_marking(false), &sim);
    send(&unmarked, chat("sk", "quiet")).await;
    let hit = send(&unmarked, chat("sk", "quiet")).await;
    assert_eq!(hit.cache, CacheStatus::Hit);
    assert_eq!(hit.marker(), None);

    // A policy of one's own: every chat, whatever its temperature.
    let everything =
        CacheLayer::default().with_policy(|_: &http::request::Parts, llm: &LlmRequest| {
            llm.endpoint == EndpointKind::ChatCompletions
        });
    let stack = common::stack(everything, &sim);
    let request = || post("/v1/chat/completions", "sk", random);
    send(&stack, request()).await;
    assert_eq!(status(&stack, request()).await, CacheStatus::Hit);
}
