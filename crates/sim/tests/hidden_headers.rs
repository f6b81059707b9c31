//! `rate_limit_headers = false`: a provider that enforces its limits without announcing them.
//! No rate-limit headers on any response, no wait headers on a 429: a client learns the wait
//! only where the provider's error body says it, and that wait is the true one.

mod common;

use std::time::Duration;

use common::{Reply, call, chat, post, request};
use serde_json::json;
use tollgate_core::duration::parse_go_duration;
use tollgate_sim::{SimConfig, SimService};

fn sim(toml: &str) -> SimService {
    SimService::new(SimConfig::from_toml(toml).expect("a valid scenario")).expect("a valid config")
}

/// The headers that announce limits or waits, in any dialect.
fn announcing(reply: &Reply) -> Vec<String> {
    reply
        .headers
        .keys()
        .map(|name| name.as_str().to_owned())
        .filter(|name| name.contains("ratelimit") || name.contains("retry-after"))
        .collect()
}

async fn openai(sim: &SimService, key: &str) -> Reply {
    let body = chat("gpt-4o-mini", "x", 5);
    call(
        sim,
        request("http://sim", "/v1/chat/completions", key, &body),
    )
    .await
}

/// The wait in an OpenAI 429's message: "... Please try again in 1.2s. ...".
fn told(reply: &Reply) -> Duration {
    let body = reply.json();
    let message = body["error"]["message"].as_str().unwrap();
    let (_, rest) = message
        .split_once("Please try again in ")
        .unwrap_or_else(|| panic!("no wait in {message:?}"));
    let (wait, _) = rest.split_once(". ").unwrap();
    parse_go_duration(wait).unwrap_or_else(|| panic!("not a Go duration: {wait:?}"))
}

const QUIET_AND_LOUD: &str = r#"
    [[keys]]
    key = "sk-quiet"
    requests_per_minute = 50
    window = "leaky_bucket"
    rate_limit_headers = false

    [[keys]]
    key = "sk-loud"
    requests_per_minute = 50
    window = "leaky_bucket"
"#;

#[tokio::test(start_paused = true)]
async fn an_openai_key_without_headers_gets_the_wait_in_the_message_only() {
    let sim = sim(QUIET_AND_LOUD);
    let ok = openai(&sim, "sk-quiet").await;
    assert_eq!(ok.status, 200);
    assert_eq!(announcing(&ok), Vec::<String>::new(), "{:?}", ok.headers);
    assert!(
        ok.headers.contains_key("x-request-id"),
        "the other headers stay"
    );

    // 50 a minute, strictly spaced: the next one in 1.2 s.
    let refused = openai(&sim, "sk-quiet").await;
    assert_eq!(refused.status, 429);
    assert_eq!(
        announcing(&refused),
        Vec::<String>::new(),
        "{:?}",
        refused.headers
    );
    assert_eq!(refused.json()["error"]["code"], "rate_limit_exceeded");
    assert_eq!(told(&refused), Duration::from_millis(1_200));
    assert!(
        refused.json()["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Please try again in 1.2s."),
        "as OpenAI words it"
    );

    tokio::time::sleep(Duration::from_millis(1_150)).await;
    let refused = openai(&sim, "sk-quiet").await;
    assert_eq!(refused.status, 429);
    let wait = told(&refused);
    assert_eq!(wait, Duration::from_millis(50), "the true wait");
    tokio::time::sleep(wait - Duration::from_millis(1)).await;
    assert_eq!(openai(&sim, "sk-quiet").await.status, 429, "1 ms early");
    tokio::time::sleep(Duration::from_millis(1)).await;
    assert_eq!(openai(&sim, "sk-quiet").await.status, 200, "on time");

    // A key that keeps its headers is told the same wait in both places.
    assert_eq!(openai(&sim, "sk-loud").await.status, 200);
    let refused = openai(&sim, "sk-loud").await;
    assert_eq!(refused.header("retry-after-ms"), "1200");
    assert_eq!(refused.header("retry-after"), "2");
    assert_eq!(refused.header("x-ratelimit-limit-requests"), "50");
    assert_eq!(told(&refused), Duration::from_millis(1_200));
}

#[tokio::test(start_paused = true)]
async fn anthropic_without_headers_says_only_that_it_is_rate_limited() {
    let sim = sim(QUIET_AND_LOUD);
    let messages = |key: &'static str| {
        let body = chat("claude-sonnet-4-5", "x", 5);
        call(&sim, request("http://sim", "/v1/messages", key, &body))
    };
    let ok = messages("sk-quiet").await;
    assert_eq!(ok.status, 200);
    assert_eq!(announcing(&ok), Vec::<String>::new(), "{:?}", ok.headers);
    assert!(ok.headers.contains_key("request-id"));
    let refused = messages("sk-quiet").await;
    assert_eq!(refused.status, 429);
    assert_eq!(announcing(&refused), Vec::<String>::new());
    assert_eq!(refused.json()["error"]["type"], "rate_limit_error");

    assert_eq!(messages("sk-loud").await.status, 200);
    let refused = messages("sk-loud").await;
    assert_eq!(refused.header("retry-after"), "2");
    assert_eq!(refused.header("anthropic-ratelimit-requests-limit"), "50");
}

#[tokio::test(start_paused = true)]
async fn azure_without_headers_says_the_wait_in_whole_seconds_in_the_message() {
    let sim = sim(QUIET_AND_LOUD);
    let path = "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21";
    let body = chat("gpt-4o", "x", 5);
    let azure = || {
        call(
            &sim,
            post("http://sim", path, &[("api-key", "sk-quiet")], &body),
        )
    };
    let ok = azure().await;
    assert_eq!(ok.status, 200);
    assert_eq!(announcing(&ok), Vec::<String>::new(), "{:?}", ok.headers);
    let refused = azure().await;
    assert_eq!(refused.status, 429);
    assert_eq!(announcing(&refused), Vec::<String>::new());
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        message.contains("Please retry after 2 seconds."),
        "1.2 s rounded up: {message}"
    );
}

#[tokio::test(start_paused = true)]
async fn mistral_without_headers_sends_no_budget_and_no_retry_after() {
    let sim = sim(&format!("openai_flavor = \"mistral\"\n{QUIET_AND_LOUD}"));
    assert_eq!(openai(&sim, "sk-quiet").await.status, 200);
    let refused = openai(&sim, "sk-quiet").await;
    assert_eq!(refused.status, 429);
    assert_eq!(announcing(&refused), Vec::<String>::new());
    assert_eq!(refused.json()["type"], "rate_limited");

    let tokens_only = self::sim(
        "openai_flavor = \"mistral\"\n[[keys]]\nkey = \"sk-quiet\"\ntokens_per_minute = 50000\n\
         rate_limit_headers = false\n",
    );
    let ok = openai(&tokens_only, "sk-quiet").await;
    assert_eq!(ok.status, 200);
    assert_eq!(announcing(&ok), Vec::<String>::new(), "{:?}", ok.headers);
}

#[tokio::test(start_paused = true)]
async fn gemini_keeps_its_retry_info_either_way() {
    let sim = sim(QUIET_AND_LOUD);
    let path = "/v1beta/models/gemini-2.0-flash:generateContent";
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "x"}]}]});
    let gemini = || {
        call(
            &sim,
            post("http://sim", path, &[("x-goog-api-key", "sk-quiet")], &body),
        )
    };
    assert_eq!(gemini().await.status, 200);
    let refused = gemini().await;
    assert_eq!(refused.status, 429);
    assert_eq!(announcing(&refused), Vec::<String>::new());
    let details = refused.json()["error"]["details"].clone();
    assert_eq!(details[1]["retryDelay"], "2s", "1.2 s rounded up");
}

#[tokio::test(start_paused = true)]
async fn the_limits_table_hides_them_for_every_key_that_does_not_say_otherwise() {
    let sim = sim(r#"
        allow_unknown_keys = true

        [limits]
        requests_per_minute = 1
        rate_limit_headers = false

        [[keys]]
        key = "sk-loud"
        rate_limit_headers = true
    "#);
    for key in ["sk-anyone", "sk-else"] {
        let ok = openai(&sim, key).await;
        assert_eq!(ok.status, 200);
        assert_eq!(announcing(&ok), Vec::<String>::new(), "{key}");
        let refused = openai(&sim, key).await;
        assert_eq!(refused.status, 429);
        assert_eq!(announcing(&refused), Vec::<String>::new(), "{key}");
        assert_eq!(told(&refused), Duration::from_secs(60), "{key}");
    }
    let ok = openai(&sim, "sk-loud").await;
    assert_eq!(ok.header("x-ratelimit-limit-requests"), "1");
    let refused = openai(&sim, "sk-loud").await;
    assert_eq!(refused.header("retry-after"), "60");
}
