//! The operator router: stats and a forced flush behind a bearer token.
#![cfg(feature = "admin")]

use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tempfile::TempDir;
use tollgate_core::Secret;
use tollgate_deferred::{DeferredConfig, DeferredQueue, admin_router, transport};
use tollgate_sim::{SimConfig, SimService};
use tower::ServiceExt;

async fn call(
    router: &axum::Router,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> (StatusCode, Value) {
    let mut request = Request::builder().method(method).uri(path);
    if let Some(token) = token {
        request = request.header("authorization", format!("Bearer {token}"));
    }
    let response = router
        .clone()
        .oneshot(request.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, serde_json::from_slice(&body).unwrap())
}

/// A queue over an in-process simulator, flushing only when asked, with its store in a fresh
/// directory (named after `name`) that is removed when dropped: keep it as long as the queue.
async fn open_queue(name: &str) -> (TempDir, DeferredQueue) {
    let sim = SimService::new(SimConfig::from_toml("seed = 1").unwrap()).unwrap();
    let net = transport(
        tower::ServiceBuilder::new()
            .map_err(
                |never: std::convert::Infallible| -> tollgate_core::BoxError { match never {} },
            )
            .service(sim),
    );
    let dir = tempfile::Builder::new()
        .prefix(&format!("tollgate-admin-{name}-"))
        .tempdir()
        .unwrap();
    let queue = DeferredQueue::builder(dir.path().join("queue.redb"), net)
        .config(DeferredConfig {
            interval: Duration::from_secs(3600),
            ..DeferredConfig::default()
        })
        .open()
        .await
        .unwrap();
    (dir, queue)
}

#[tokio::test(start_paused = true)]
async fn stats_and_a_forced_flush_behind_a_token() {
    let (_dir, queue) = open_queue("flush").await;
    for n in 0..3 {
        let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("q{n}")}]});
        queue
            .submit(
                Request::post("https://api.openai.com/v1/chat/completions")
                    .header("authorization", "Bearer sk-x")
                    .body(Bytes::from(body.to_string()))
                    .unwrap(),
            )
            .await
            .unwrap();
    }
    let router = admin_router(queue.clone(), Secret::new("op-token"));

    let (status, body) = call(&router, "GET", "/admin/batch-stats", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["error"], "a valid bearer token is required");
    let (status, _) = call(&router, "POST", "/admin/batch-process", Some("wrong")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);

    let (status, stats) = call(&router, "GET", "/admin/batch-stats", Some("op-token")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (stats["pending"].clone(), stats["done"].clone()),
        (json!(3), json!(0))
    );

    let (status, body) = call(&router, "POST", "/admin/batch-process", Some("op-token")).await;
    assert_eq!(status, StatusCode::ACCEPTED);
    assert_eq!(body["flushing"], true);
    let mut completions = queue.completions();
    for _ in 0..3 {
        completions.recv().await.unwrap();
    }
    let (_, stats) = call(&router, "GET", "/admin/batch-stats", Some("op-token")).await;
    assert_eq!(
        (stats["pending"].clone(), stats["done"].clone()),
        (json!(0), json!(3))
    );
    assert_eq!(stats["calls"], 3);
    queue.shutdown().await;
}

/// Anything but the token, in a Bearer scheme of any case, is a 401 on both routes: no token,
/// an empty one, one wrong in its first or last byte, a prefix, one byte more, another scheme.
#[tokio::test(start_paused = true)]
async fn only_the_exact_token_gets_in() {
    let (_dir, queue) = open_queue("tokens").await;
    let router = admin_router(queue.clone(), Secret::new("op-token-7c1e"));
    let send = |authorization: Option<&'static str>, path: &'static str| {
        let router = router.clone();
        async move {
            let method = if path.ends_with("process") {
                "POST"
            } else {
                "GET"
            };
            let mut request = Request::builder().method(method).uri(path);
            if let Some(value) = authorization {
                request = request.header("authorization", value);
            }
            let request = request.body(Body::empty()).unwrap();
            router.oneshot(request).await.unwrap()
        }
    };
    let refused = [
        None,
        Some("Bearer "),
        Some("Bearer Xp-token-7c1e"),
        Some("Bearer op-token-7c1X"),
        Some("Bearer op-token"),
        Some("Bearer op-token-7c1e0"),
        Some("Basic op-token-7c1e"),
        Some("op-token-7c1e"),
    ];
    for path in ["/admin/batch-stats", "/admin/batch-process"] {
        for authorization in refused {
            let response = send(authorization, path).await;
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{authorization:?} on {path}"
            );
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&body).unwrap();
            assert!(!body.to_string().contains("op-token"), "{body}");
        }
    }
    for authorization in ["Bearer op-token-7c1e", "bearer op-token-7c1e"] {
        let response = send(Some(authorization), "/admin/batch-stats").await;
        assert_eq!(response.status(), StatusCode::OK, "{authorization}");
    }
    queue.shutdown().await;
}
