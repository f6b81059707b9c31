//! With the `metrics` feature the pool reports each member's health score, and counts
//! cooldowns, failovers, requests no member could take, and affinity picks kept or moved;
//! members are labelled by their name, never their key.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::{DebuggingRecorder, Snapshotter};
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{BoxError, Secret};
use tollgate_pool::{
    Affinity, AffinityConfig, Member, NoMemberAvailable, Policy, Pool, Served, WhenExhausted,
};
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// This layer's series (see `tollgate_testkit::metrics::recorded`).
fn recorded(snapshotter: &Snapshotter) -> BTreeMap<String, String> {
    tollgate_testkit::metrics::recorded(snapshotter, &["tollgate_pool_"])
}

fn expect(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

const SECRETS: [&str; 2] = ["sk-pool-metrics-a", "sk-pool-metrics-b"];

/// A member that answers `status` (with a body that says why).
fn member(
    status: u16,
) -> impl tower::Service<
    Request<Full<Bytes>>,
    Response = Response<tollgate_core::body::ObservedBody<Full<Bytes>>>,
    Error = BoxError,
    Future = impl Send,
> + Clone
+ Send
+ 'static {
    let upstream = service_fn(move |_: Request<Full<Bytes>>| async move {
        let body = match status {
            429 => {
                r#"{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}"#
            }
            401 => {
                r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#
            }
            _ => r#"{"choices":[]}"#,
        };
        let mut response = Response::builder().status(status);
        if status == 429 {
            response = response.header("retry-after", "20");
        }
        Ok::<_, BoxError>(
            response
                .body(Full::new(Bytes::from_static(body.as_bytes())))
                .unwrap(),
        )
    });
    ServiceBuilder::new()
        .layer(ClassifyLayer::new())
        .service(upstream)
}

fn ask() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn scores_cooldowns_failovers_and_exhaustion_by_member_name() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);

    // a is rate limited; b answers once, then refuses its key.
    let b_calls = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let calls = b_calls.clone();
    let b = service_fn(move |request: Request<Full<Bytes>>| {
        let status = match calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            0 => 200,
            _ => 401,
        };
        member(status).oneshot(request)
    });
    let pool = Pool::builder()
        .member(
            Member::key("a", Secret::new(SECRETS[0])),
            tower::util::BoxCloneSyncService::new(member(429)),
        )
        .member(
            Member::key("b", Secret::new(SECRETS[1])),
            tower::util::BoxCloneSyncService::new(b),
        )
        .policy(Policy::Ordered)
        .when_exhausted(WhenExhausted::Fail)
        .build();
    let handle = pool.handle();
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .service(pool);

    // a's 429 fails over to b; b's 401 has nowhere to go; then nobody is left.
    let response = stack.clone().oneshot(ask()).await.unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    assert_eq!(stack.clone().oneshot(ask()).await.unwrap().status(), 401);
    let error = stack.clone().oneshot(ask()).await.unwrap_err();
    assert!(error.is::<NoMemberAvailable>(), "{error}");

    let scores: Vec<u8> = handle.snapshot().iter().map(|m| m.score).collect();
    assert_eq!(scores, [0, 0], "both out of rotation");
    let recorded = recorded(&snapshotter);
    assert_eq!(
        recorded,
        expect(&[
            (
                "tollgate_pool_cooldowns_total{member=a,reason=rate_limited}",
                "counter 1"
            ),
            (
                "tollgate_pool_cooldowns_total{member=b,reason=auth_error}",
                "counter 1"
            ),
            ("tollgate_pool_exhausted_total{}", "counter 1"),
            (
                "tollgate_pool_failovers_total{member=a,outcome=rate_limited}",
                "counter 1"
            ),
            (
                "tollgate_pool_failovers_total{member=b,outcome=auth_error}",
                "counter 1"
            ),
            ("tollgate_pool_member_score{member=a}", "gauge 0"),
            ("tollgate_pool_member_score{member=b}", "gauge 0"),
        ])
    );
    for secret in SECRETS {
        tollgate_testkit::metrics::assert_no_credential(&recorded, secret);
    }
}

#[tokio::test(start_paused = true)]
async fn affinity_picks_are_counted_kept_or_moved_by_the_keys_own_member() {
    let limited = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = limited.clone();
    let a = service_fn(move |request: Request<Full<Bytes>>| {
        let status = if flag.load(std::sync::atomic::Ordering::SeqCst) {
            429
        } else {
            200
        };
        member(status).oneshot(request)
    });
    let pool = || {
        Pool::builder()
            .member(
                Member::key("a", Secret::new(SECRETS[0])),
                tower::util::BoxCloneSyncService::new(a.clone()),
            )
            .member(
                Member::key("b", Secret::new(SECRETS[1])),
                tower::util::BoxCloneSyncService::new(member(200)),
            )
            .affinity(AffinityConfig::default())
            .build()
    };
    let ask_with = |key: u64| {
        let mut request = ask();
        request.extensions_mut().insert(Affinity(key));
        request
    };
    let served = async |pool: &Pool<_>, key: u64| {
        let response = ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .service(pool.clone())
            .oneshot(ask_with(key))
            .await
            .unwrap();
        response
            .extensions()
            .get::<Served>()
            .unwrap()
            .member
            .to_string()
    };
    // A key whose member is a, found before anything is recorded.
    let probe = pool();
    let mut key = 0;
    while served(&probe, key).await != "a" {
        key += 1;
    }

    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let pool = pool();
    for _ in 0..3 {
        assert_eq!(served(&pool, key).await, "a");
    }
    // a is rate limited: this call tries it, then moves to b; so does the next, a being out.
    limited.store(true, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(served(&pool, key).await, "b");
    assert_eq!(served(&pool, key).await, "b");
    let affinity: BTreeMap<String, String> = recorded(&snapshotter)
        .into_iter()
        .filter(|(series, _)| series.starts_with("tollgate_pool_affinity_total"))
        .collect();
    assert_eq!(
        affinity,
        expect(&[
            (
                "tollgate_pool_affinity_total{member=a,result=kept}",
                "counter 4"
            ),
            (
                "tollgate_pool_affinity_total{member=a,result=moved}",
                "counter 2"
            ),
        ])
    );
}
