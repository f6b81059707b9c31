//! `tollgate proxy`'s `/admin/*` routes over loopback: absent without `server.admin_token`;
//! with it, a 401 for a missing or wrong token, and with the token a full health report and
//! the breakers and the cache steered by hand.

mod support;

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use self::support::*;

const ADMIN_TOKEN: &str = "adm-5c1e9b7d2f4a8e60";
const ADMIN_ENV: &str = "TG_TEST_ADMIN_TOKEN";

fn admin_request(
    proxy: &Proxy,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&Value>,
) -> Request<Full<Bytes>> {
    let mut request = Request::builder()
        .method(method)
        .uri(format!("{}{path}", proxy.url));
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let body = body.map_or_else(Bytes::new, |b| Bytes::from(b.to_string()));
    request
        .header("content-type", "application/json")
        .body(Full::new(body))
        .unwrap()
}

async fn admin(proxy: &Proxy, method: &str, path: &str, body: Option<&Value>) -> Answer {
    send(admin_request(proxy, method, path, Some(ADMIN_TOKEN), body)).await
}

/// A gateway with the admin token (from the environment), the cache on and the default
/// retries: a call refused by a forced-open breaker is answered at once all the same (an
/// operator's breaker is not waited for).
async fn gateway() -> (tollgate_sim::SimHandle, Proxy) {
    let sim = sim("").await;
    let proxy = Proxy::start_with_env(
        &format!(
            "[server]\nadmin_token_env = \"{ADMIN_ENV}\"\n{}",
            config(&sim.url(), "[stack.cache]\nenabled = true\n")
                .strip_prefix("[server]\n")
                .unwrap()
        ),
        &[(ADMIN_ENV, ADMIN_TOKEN)],
    );
    (sim, proxy)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_admin_token_there_are_no_admin_routes() {
    let sim = sim("").await;
    let proxy = Proxy::start(&config(&sim.url(), ""));
    for (method, path) in [
        ("GET", "/admin/health"),
        ("POST", "/admin/circuit/open"),
        ("POST", "/admin/cache/clear"),
    ] {
        let answer = send(admin_request(&proxy, method, path, Some(ADMIN_TOKEN), None)).await;
        assert_eq!(answer.status, StatusCode::NOT_FOUND, "{method} {path}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_or_wrong_token_is_a_401_before_the_body_is_read() {
    let (sim, proxy) = gateway().await;
    let scope = json!({"provider": "openai_compatible", "model": "gpt-4o-mini"});
    for token in [
        None,
        Some("adm-wrong"),
        Some(CLIENT_KEY),
        Some(UPSTREAM_KEY),
    ] {
        for (method, path, body) in [
            ("GET", "/admin/health", None),
            ("POST", "/admin/circuit/open", Some(&scope)),
            (
                "POST",
                "/admin/circuit/reset",
                Some(&json!("not even an object")),
            ),
            ("POST", "/admin/cache/clear", None),
        ] {
            let answer = send(admin_request(&proxy, method, path, token, body)).await;
            assert_eq!(
                answer.status,
                StatusCode::UNAUTHORIZED,
                "{method} {path} {token:?}"
            );
            assert_eq!(answer.header("www-authenticate"), "Bearer");
            assert_eq!(answer.header("content-type"), "application/json");
            let body = answer.json();
            assert_eq!(body["error"]["type"], "authentication_error", "{body}");
        }
    }
    // The refused open did nothing.
    let answer = ask(&proxy).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(sim.log().len(), 1);
    let log = proxy.log();
    assert!(log.contains("admin request without a valid token"), "{log}");
    assert!(!log.contains(ADMIN_TOKEN), "{log}");
    proxy.assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_opens_and_resets_a_breaker_and_reads_full_health() {
    let (sim, proxy) = gateway().await;
    assert_eq!(ask(&proxy).await.status, StatusCode::OK);

    let health = admin(&proxy, "GET", "/admin/health", None).await;
    assert_eq!(health.status, StatusCode::OK);
    let health = health.json();
    assert_eq!(health["status"], "ok", "{health}");
    let scope = health["scopes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["model"] == "gpt-4o-mini")
        .unwrap_or_else(|| panic!("{health}"))
        .clone();
    assert_eq!(scope["provider"], "openai_compatible", "{scope}");
    assert!(
        scope["credential"].as_str().unwrap().starts_with("key-"),
        "{scope}"
    );
    assert_eq!(scope["circuit"]["state"], "closed", "{scope}");
    assert_eq!(scope["circuit"]["calls"], 1, "{scope}");
    assert_eq!(scope["circuit"]["failures"], 0, "{scope}");
    assert_eq!(scope["overload"], "normal", "{scope}");
    assert!(scope["limit"].as_u64().unwrap() >= 1, "{scope}");
    assert_eq!(scope["in_flight"], 0, "{scope}");
    assert!(health["cache"]["misses"].as_u64().is_some(), "{health}");

    let target = json!({"provider": "openai_compatible", "model": "gpt-4o-mini"});
    let opened = admin(&proxy, "POST", "/admin/circuit/open", Some(&target)).await;
    assert_eq!(opened.status, StatusCode::OK, "{:?}", opened.body);
    let opened = opened.json();
    assert_eq!(opened["circuit"], "forced_open", "{opened}");
    assert_eq!(
        opened["scope"], scope["scope"],
        "the same scope as the traffic's"
    );

    let refused = ask(&proxy).await;
    assert_eq!(
        refused.status,
        StatusCode::SERVICE_UNAVAILABLE,
        "{:?}",
        refused.body
    );
    let health = admin(&proxy, "GET", "/admin/health", None).await.json();
    assert_eq!(health["status"], "degraded", "{health}");
    let public = send(get(&format!("{}/health", proxy.url))).await.json();
    assert_eq!(public["status"], "degraded", "{public}");

    let reset = admin(&proxy, "POST", "/admin/circuit/reset", Some(&target)).await;
    assert_eq!(reset.status, StatusCode::OK);
    assert_eq!(reset.json()["circuit"], "closed");
    assert_eq!(ask(&proxy).await.status, StatusCode::OK);
    assert_eq!(sim.log().len(), 2, "the refused call never went upstream");

    // A scope that has seen no traffic can be opened ahead of it, and shows in the report.
    let other = json!({"provider": "openai", "model": "gpt-4.1", "credential": "key-other"});
    let opened = admin(&proxy, "POST", "/admin/circuit/open", Some(&other))
        .await
        .json();
    assert_eq!(opened["scope"], "openai/key-other/gpt-4.1", "{opened}");
    let health = admin(&proxy, "GET", "/admin/health", None).await.json();
    assert!(
        health["scopes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["model"] == "gpt-4.1"
                && s["circuit"]["state"] == "forced_open"
                && s["overload"].is_null()),
        "{health}"
    );

    for (body, want) in [
        (json!({"model": "gpt-4o-mini"}), "missing field `provider`"),
        (json!({"provider": "nobody", "model": "m"}), "nobody"),
        (
            json!({"provider": "openai", "modle": "m"}),
            "unknown field `modle`",
        ),
    ] {
        let answer = admin(&proxy, "POST", "/admin/circuit/open", Some(&body)).await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        let message = answer.json()["error"]["message"]
            .as_str()
            .unwrap()
            .to_owned();
        assert!(message.contains(want), "{message}");
    }
    proxy.assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_clears_the_cache() {
    let (sim, proxy) = gateway().await;
    let embeddings = json!({"model": "text-embedding-3-small", "input": ["cached"]});
    for _ in 0..2 {
        let answer = call(&proxy, "/v1/embeddings", bearer(CLIENT_KEY), &embeddings).await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
    assert_eq!(sim.log().len(), 1, "the second answer came from the cache");
    let cache = &admin(&proxy, "GET", "/admin/health", None).await.json()["cache"];
    assert_eq!(cache["hits"], 1, "{cache}");
    assert_eq!(cache["entries"], 1, "{cache}");

    let cleared = admin(&proxy, "POST", "/admin/cache/clear", None).await;
    assert_eq!(cleared.status, StatusCode::OK, "{:?}", cleared.body);
    let cleared = cleared.json();
    assert_eq!(cleared["cleared"], 1, "{cleared}");
    assert_eq!(cleared["entries"], 0, "{cleared}");

    let answer = call(&proxy, "/v1/embeddings", bearer(CLIENT_KEY), &embeddings).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert_eq!(
        sim.log().len(),
        2,
        "asked upstream again once the cache was cleared"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clearing_a_disabled_cache_is_a_409() {
    let sim = sim("").await;
    let proxy = Proxy::start_with_env(
        &format!(
            "[server]\nadmin_token_env = \"{ADMIN_ENV}\"\n{}",
            config(&sim.url(), "[stack.cache]\nenabled = false\n")
                .strip_prefix("[server]\n")
                .unwrap()
        ),
        &[(ADMIN_ENV, ADMIN_TOKEN)],
    );
    let answer = admin(&proxy, "POST", "/admin/cache/clear", None).await;
    assert_eq!(answer.status, StatusCode::CONFLICT);
    let health = admin(&proxy, "GET", "/admin/health", None).await.json();
    assert!(health["cache"].is_null(), "{health}");
}
