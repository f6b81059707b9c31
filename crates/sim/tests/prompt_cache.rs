//! Prompt caching per key: a long prefix the same key sent within the ttl is reported cached,
//! in each provider's usage field, counted in the stats; other keys, short prompts and stale
//! prefixes get nothing.

mod common;

use std::time::Duration;

use common::{Reply, call, post, request};
use serde_json::{Value, json};
use tollgate_sim::{SimConfig, SimService};

fn sim(toml: &str) -> SimService {
    SimService::new(SimConfig::from_toml(toml).expect("a valid scenario")).expect("a valid config")
}

/// Two named keys, OpenAI's caching rules (the defaults).
const KEYS: &str = r#"
[[keys]]
key = "sk-a"
name = "a"
[[keys]]
key = "sk-b"
name = "b"
"#;

/// `tokens` tokens of text, each word one token; `tag` makes it differ from another's.
fn document(tag: &str, tokens: usize) -> String {
    (0..tokens)
        .map(|i| format!("{tag}{i}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A chat request with a long system prompt and a question: the prompt is 3 tokens to prime,
/// 3 per message, the system prompt's and the question's.
fn chat(system: &str, question: &str) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": 16, "messages": [
        {"role": "system", "content": system},
        {"role": "user", "content": question}]})
}

async fn send(sim: &SimService, path: &str, key: &str, body: &Value) -> Reply {
    let reply = call(sim, request("http://sim", path, key, body)).await;
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    reply
}

/// `usage.prompt_tokens_details.cached_tokens` of a chat completion.
async fn cached(sim: &SimService, key: &str, body: &Value) -> u64 {
    let reply = send(sim, "/v1/chat/completions", key, body).await;
    reply.json()["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn the_same_key_and_a_long_prefix_are_cached_the_second_time() {
    let sim = sim(KEYS);
    // 3 + 3 + 1,500 + 3 + 1 = 1,510 tokens: blocks of 128 from 1,024 on, up to 1,408.
    let body = chat(&document("w", 1_500), "why");
    assert_eq!(cached(&sim, "sk-a", &body).await, 0);
    let reply = send(&sim, "/v1/chat/completions", "sk-a", &body).await;
    let usage = &reply.json()["usage"];
    assert_eq!(usage["prompt_tokens"], 1_510);
    assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], 1_408);

    let stats = sim.stats();
    assert_eq!(
        (stats.input_tokens, stats.cached_input_tokens),
        (2 * 1_510, 1_408)
    );
    let a = stats.keys["a"];
    assert_eq!((a.input_tokens, a.cached_input_tokens), (2 * 1_510, 1_408));
    assert!((stats.cached_share() - 1_408.0 / 3_020.0).abs() < 1e-9);
    assert_eq!(sim.log()[1].cached_input_tokens, 1_408);
}

#[tokio::test(start_paused = true)]
async fn another_key_of_the_same_account_shares_nothing() {
    let sim = sim(KEYS);
    let body = chat(&document("w", 1_500), "why");
    assert_eq!(cached(&sim, "sk-a", &body).await, 0);
    assert_eq!(cached(&sim, "sk-b", &body).await, 0, "b has its own cache");
    assert_eq!(
        cached(&sim, "sk-b", &body).await,
        1_408,
        "which b now warmed"
    );
    let stats = sim.stats();
    assert_eq!(stats.keys["a"].cached_input_tokens, 0);
    assert_eq!(stats.keys["b"].cached_input_tokens, 1_408);
}

#[tokio::test(start_paused = true)]
async fn a_different_suffix_reads_the_common_prefix_rounded_down_to_blocks() {
    let sim = sim(KEYS);
    let shared = document("w", 1_200);
    let first = chat(&format!("{shared} {}", document("x", 400)), "why");
    let second = chat(&format!("{shared} {}", document("y", 400)), "why");
    assert_eq!(cached(&sim, "sk-a", &first).await, 0);
    // In common: 3 + 3 + 1,200 = 1,206 tokens, so 9 × 128 = 1,152.
    assert_eq!(cached(&sim, "sk-a", &second).await, 1_152);
    // Another model has its own cache too.
    let mut other_model = first.clone();
    other_model["model"] = json!("gpt-4o");
    assert_eq!(cached(&sim, "sk-a", &other_model).await, 0);
}

#[tokio::test(start_paused = true)]
async fn short_prompts_are_never_cached() {
    let sim = sim(KEYS);
    // 3 + 3 + 1,000 + 3 + 1 = 1,010 tokens: under the 1,024 minimum.
    let body = chat(&document("w", 1_000), "why");
    for _ in 0..3 {
        assert_eq!(cached(&sim, "sk-a", &body).await, 0);
    }
    assert_eq!(sim.stats().cached_input_tokens, 0);
}

#[tokio::test(start_paused = true)]
async fn a_prefix_unused_for_the_ttl_is_gone_and_each_use_starts_it_over() {
    let sim = sim(KEYS);
    let body = chat(&document("w", 1_500), "why");
    assert_eq!(cached(&sim, "sk-a", &body).await, 0);
    tokio::time::advance(Duration::from_secs(4 * 60)).await;
    assert_eq!(cached(&sim, "sk-a", &body).await, 1_408);
    tokio::time::advance(Duration::from_secs(4 * 60)).await;
    assert_eq!(
        cached(&sim, "sk-a", &body).await,
        1_408,
        "the last use counts"
    );
    tokio::time::advance(Duration::from_secs(5 * 60)).await;
    assert_eq!(cached(&sim, "sk-a", &body).await, 0, "five minutes unused");
}

#[tokio::test(start_paused = true)]
async fn every_dialect_reports_the_cached_tokens_in_its_own_field() {
    let sim = sim(KEYS);
    let system = document("w", 1_500);

    // Anthropic: input_tokens leaves the cached tokens out.
    let messages = json!({"model": "claude-sonnet-4-5", "max_tokens": 16, "system": system,
        "messages": [{"role": "user", "content": "why"}]});
    send(&sim, "/v1/messages", "sk-a", &messages).await;
    let usage = send(&sim, "/v1/messages", "sk-a", &messages).await.json()["usage"].clone();
    // 3 + 1,500 + 3 + 1 = 1,507 tokens (a system string has no framing).
    assert_eq!(
        (&usage["input_tokens"], &usage["cache_read_input_tokens"]),
        (&json!(1_507 - 1_408), &json!(1_408))
    );

    // The Responses API: the instructions are the system message.
    let body = json!({"model": "gpt-4o-mini", "instructions": system, "input": "why"});
    send(&sim, "/v1/responses", "sk-a", &body).await;
    let usage = send(&sim, "/v1/responses", "sk-a", &body).await.json()["usage"].clone();
    assert_eq!(usage["input_tokens"], 1_510);
    assert_eq!(
        usage["input_tokens_details"],
        json!({"cached_tokens": 1_408, "cache_write_tokens": 0})
    );
    // A chat request with the same prompt reads the same cache.
    assert_eq!(cached(&sim, "sk-a", &chat(&system, "why")).await, 1_408);

    // Gemini: cachedContentTokenCount, only when some were.
    let path = "/v1beta/models/gemini-2.0-flash:generateContent";
    let gemini = json!({"contents": [{"role": "user", "parts": [{"text": system}]}]});
    let first = call(
        &sim,
        post("http://sim", path, &[("x-goog-api-key", "sk-a")], &gemini),
    )
    .await;
    let usage = &first.json()["usageMetadata"];
    assert_eq!(usage["promptTokenCount"], 1_500);
    assert_eq!(usage.get("cachedContentTokenCount"), None);
    let second = call(
        &sim,
        post("http://sim", path, &[("x-goog-api-key", "sk-a")], &gemini),
    )
    .await;
    assert_eq!(
        second.json()["usageMetadata"]["cachedContentTokenCount"],
        1_408
    );
}

#[tokio::test(start_paused = true)]
async fn streams_report_the_cached_tokens_too() {
    let sim = sim(KEYS);
    let mut body = chat(&document("w", 1_500), "why");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    send(&sim, "/v1/chat/completions", "sk-a", &body).await;
    let reply = send(&sim, "/v1/chat/completions", "sk-a", &body).await;
    let events = reply.events();
    let (_, usage) = &events[events.len() - 2];
    let usage: Value = serde_json::from_str(usage).unwrap();
    assert_eq!(
        usage["usage"]["prompt_tokens_details"]["cached_tokens"],
        1_408
    );

    let messages = json!({"model": "claude", "max_tokens": 16, "stream": true,
        "messages": [{"role": "user", "content": document("w", 1_500)}]});
    send(&sim, "/v1/messages", "sk-b", &messages).await;
    let reply = send(&sim, "/v1/messages", "sk-b", &messages).await;
    let start: Value = serde_json::from_str(&reply.events()[0].1).unwrap();
    assert_eq!(start["message"]["usage"]["cache_read_input_tokens"], 1_408);
}

#[tokio::test(start_paused = true)]
async fn a_conversation_kept_on_one_key_caches_more_than_one_spread_over_keys() {
    let system = document("w", 2_000);
    let turn = |i: usize| chat(&system, &format!("question {i}"));
    let affine = sim(KEYS);
    let spread = sim(KEYS);
    for i in 0..10 {
        send(&affine, "/v1/chat/completions", "sk-a", &turn(i)).await;
        let key = if i % 2 == 0 { "sk-a" } else { "sk-b" };
        send(&spread, "/v1/chat/completions", key, &turn(i)).await;
    }
    let (affine, spread) = (affine.stats(), spread.stats());
    assert_eq!(affine.input_tokens, spread.input_tokens);
    // 9 of 10 hit on one key, 8 of 10 over two (each key's first misses).
    assert_eq!(affine.cached_input_tokens, 9 * 1_920);
    assert_eq!(spread.cached_input_tokens, 8 * 1_920);
    assert!(affine.cached_share() > spread.cached_share());
}

#[tokio::test(start_paused = true)]
async fn the_rules_are_configurable_and_caching_can_be_off() {
    let sim = self::sim(&format!(
        "{KEYS}[prompt_cache]\nmin_tokens = 100\nblock_tokens = 50\nttl = \"10s\"\n"
    ));
    // 3 + 3 + 200 + 3 + 1 = 210 tokens: 200 cached.
    let body = chat(&document("w", 200), "why");
    assert_eq!(cached(&sim, "sk-a", &body).await, 0);
    assert_eq!(cached(&sim, "sk-a", &body).await, 200);
    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(cached(&sim, "sk-a", &body).await, 0);

    let off = self::sim(&format!("{KEYS}[prompt_cache]\nenabled = false\n"));
    let body = chat(&document("w", 1_500), "why");
    assert_eq!(cached(&off, "sk-a", &body).await, 0);
    assert_eq!(cached(&off, "sk-a", &body).await, 0);

    // Embeddings are never cached.
    let sim = self::sim(KEYS);
    let input = json!({"model": "text-embedding-3-small", "input": document("w", 2_000)});
    for _ in 0..2 {
        send(&sim, "/v1/embeddings", "sk-a", &input).await;
    }
    assert_eq!(sim.stats().cached_input_tokens, 0);
    assert_eq!(sim.stats().input_tokens, 4_000);
}

#[tokio::test(start_paused = true)]
async fn a_reset_empties_the_caches() {
    let sim = sim(KEYS);
    let body = chat(&document("w", 1_500), "why");
    cached(&sim, "sk-a", &body).await;
    sim.reset();
    assert_eq!(cached(&sim, "sk-a", &body).await, 0);
}

#[test]
fn bad_cache_settings_name_the_field() {
    for (toml, field) in [
        ("[prompt_cache]\nmin_tokens = 0", "prompt_cache.min_tokens"),
        (
            "[prompt_cache]\nblock_tokens = 0",
            "prompt_cache.block_tokens",
        ),
        ("[prompt_cache]\nttl = \"0s\"", "prompt_cache.ttl"),
        (
            "[prompt_cache]\nmax_entries = 0",
            "prompt_cache.max_entries",
        ),
    ] {
        let error = SimConfig::from_toml(toml).unwrap_err().to_string();
        assert!(error.contains(field), "{toml}: {error}");
    }
}
