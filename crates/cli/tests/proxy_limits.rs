//! The gateway's `/health` and `/admin/health` show each scope's rate limits and where they
//! come from: the provider's headers, or — for an upstream that sends none — its 429s.

mod support;

use http::StatusCode;
use serde_json::Value;

use support::{CLIENT_KEY, Proxy, bearer, call, chat, config, sim};

/// The requests limit `/health` shows for the one scope, as (source, per minute).
async fn requests_limit(proxy: &Proxy) -> Option<(String, f64)> {
    let health = support::send(support::get(&format!("{}/health", proxy.url)))
        .await
        .json();
    let scopes = health["scopes"].as_array().unwrap();
    let limits = scopes.first()?["rate_limits"].as_array()?.clone();
    limits
        .iter()
        .find(|l| l["dimension"] == "requests")
        .map(|l: &Value| {
            (
                l["source"].as_str().unwrap().to_owned(),
                l["per_minute"].as_f64().unwrap(),
            )
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_the_upstream_only_refuses_is_learned_and_shown() {
    // 600 a minute with a burst of 5, and not a rate-limit header: a burst of 20 meets 429s
    // that say only "try again in 100ms".
    let upstream = sim("requests_per_minute = 600\nburst = 5\nrate_limit_headers = false\n").await;
    let proxy = Proxy::start(&config(
        &upstream.url(),
        "[stack]\nrequest_timeout = \"30s\"\n[stack.cache]\nenabled = false\n",
    ));
    let body = chat(4, false);
    let calls = (0..20).map(|_| call(&proxy, "/v1/chat/completions", bearer(CLIENT_KEY), &body));
    for answer in futures_util::future::join_all(calls).await {
        assert_eq!(answer.status, StatusCode::OK, "every caller is answered");
    }
    let (source, per_minute) = requests_limit(&proxy).await.expect("a requests limit");
    assert_eq!(source, "refusals");
    // Learned from five answers in a second, then doubled while callers waited on it (a
    // guess from so few answers), until no one was waiting.
    assert!(per_minute >= 100.0, "{per_minute}");
    upstream.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_the_headers_report_says_so() {
    let upstream = sim("requests_per_minute = 500\n").await;
    let proxy = Proxy::start(&config(&upstream.url(), ""));
    let answer = support::ask(&proxy).await;
    assert_eq!(answer.status, StatusCode::OK);
    let (source, per_minute) = requests_limit(&proxy).await.expect("a requests limit");
    assert_eq!(source, "headers");
    assert_eq!(per_minute, 500.0);
    upstream.shutdown().await;
}
