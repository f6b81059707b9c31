//! Routing, cooldowns, failover and fallback under paused time, with scripted members.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::Value;
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::body::ObservedBody;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::error::RateLimited;
use tollgate_core::{BoxError, Deadline, Secret};
use tollgate_pool::{
    Auth, Member, MemberState, NoMemberAvailable, Policy, Pool, Reason, Rewrite, Served,
    WhenExhausted,
};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

type Inner =
    BoxCloneSyncService<Request<Full<Bytes>>, Response<ObservedBody<Full<Bytes>>>, BoxError>;

/// What each member saw (its name → the bodies it got), and what it answers.
#[derive(Default)]
struct Upstream {
    seen: Mutex<HashMap<String, Vec<(String, Value)>>>,
    script: Mutex<HashMap<String, VecDeque<(u16, &'static str)>>>,
}

impl Upstream {
    fn answer(&self, member: &str, answers: &[(u16, &'static str)]) {
        self.script
            .lock()
            .unwrap()
            .insert(member.to_owned(), answers.iter().copied().collect());
    }

    fn calls(&self, member: &str) -> usize {
        self.seen.lock().unwrap().get(member).map_or(0, Vec::len)
    }
}

const OK: (u16, &str) = (200, r#"{"id":"c","object":"chat.completion","choices":[]}"#);
const RATE_LIMITED: (u16, &str) = (
    429,
    r#"{"error":{"message":"Rate limit reached for requests","type":"requests","code":"rate_limit_exceeded"}}"#,
);
const QUOTA: (u16, &str) = (
    429,
    r#"{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}"#,
);
const UNAUTHORIZED: (u16, &str) = (
    401,
    r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#,
);
const OVERLOADED: (u16, &str) = (
    529,
    r#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
);
const TOO_LONG: (u16, &str) = (
    400,
    r#"{"error":{"message":"This model's maximum context length is 8192 tokens.","type":"invalid_request_error","code":"context_length_exceeded"}}"#,
);

/// A member's own stack: classify over a scripted upstream that records what it got.
fn member_stack(name: &str, upstream: &Arc<Upstream>) -> Inner {
    let name = name.to_owned();
    let upstream = upstream.clone();
    let service = service_fn(move |request: Request<Full<Bytes>>| {
        let name = name.clone();
        let upstream = upstream.clone();
        async move {
            let auth = request
                .headers()
                .get("authorization")
                .or_else(|| request.headers().get("api-key"))
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            let body: Value =
                serde_json::from_slice(&request.into_body().collect().await?.to_bytes())?;
            upstream
                .seen
                .lock()
                .unwrap()
                .entry(name.clone())
                .or_default()
                .push((auth, body));
            let (status, text) = upstream
                .script
                .lock()
                .unwrap()
                .get_mut(&name)
                .and_then(VecDeque::pop_front)
                .unwrap_or(OK);
            let mut response = Response::builder().status(status);
            // A rate limit says when to come back; an unpaid bill does not.
            if status == 429 && !text.contains("insufficient_quota") {
                response = response.header("retry-after", "20");
            }
            Ok::<_, BoxError>(
                response
                    .body(Full::new(Bytes::from_static(text.as_bytes())))
                    .unwrap(),
            )
        }
    });
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(ClassifyLayer::new())
            .service(service),
    )
}

type Stack =
    BoxCloneSyncService<Request<Full<Bytes>>, Response<ObservedBody<Full<Bytes>>>, BoxError>;

fn pool(
    members: Vec<Member>,
    upstream: &Arc<Upstream>,
    configure: impl FnOnce(tollgate_pool::PoolBuilder<Inner>) -> tollgate_pool::PoolBuilder<Inner>,
) -> (Stack, tollgate_pool::PoolHandle) {
    let mut builder = Pool::builder();
    for member in members {
        let stack = member_stack(member.name(), upstream);
        builder = builder.member(member, stack);
    }
    let pool = configure(builder).build();
    let handle = pool.handle();
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .service(pool);
    (BoxCloneSyncService::new(stack), handle)
}

fn ask() -> Request<Full<Bytes>> {
    Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::new(Bytes::from_static(
            br#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap()
}

async fn send(stack: &Stack) -> Result<(u16, Served), BoxError> {
    let response = stack.clone().oneshot(ask()).await?;
    let served = response
        .extensions()
        .get::<Served>()
        .cloned()
        .expect("served by a member");
    let status = response.status().as_u16();
    response.into_body().collect().await?;
    Ok((status, served))
}

fn state_of(handle: &tollgate_pool::PoolHandle, name: &str) -> MemberState {
    handle
        .snapshot()
        .into_iter()
        .find(|r| &*r.name == name)
        .unwrap()
        .state
}

#[tokio::test(start_paused = true)]
async fn a_429_on_one_key_moves_the_next_request_to_another() {
    let upstream = Arc::new(Upstream::default());
    upstream.answer("a", &[RATE_LIMITED]);
    let (stack, handle) = pool(
        vec![
            Member::key("a", Secret::new("sk-a")),
            Member::key("b", Secret::new("sk-b")),
        ],
        &upstream,
        |b| b.policy(Policy::Ordered),
    );
    // The 429 is answered by b within the same call.
    let (status, served) = send(&stack).await.unwrap();
    assert_eq!((status, &*served.member, served.attempts), (200, "b", 2));
    assert_eq!(
        state_of(&handle, "a"),
        MemberState::CoolingDown {
            reason: Reason::RateLimited,
            left: Duration::from_secs(20)
        },
        "for the provider's retry-after"
    );
    // The next request goes straight to b.
    let (_, served) = send(&stack).await.unwrap();
    assert_eq!((&*served.member, served.attempts), ("b", 1));
    assert_eq!(upstream.calls("a"), 1);
    // Each member got its own key.
    {
        let seen = upstream.seen.lock().unwrap();
        assert_eq!(seen["a"][0].0, "Bearer sk-a");
        assert_eq!(seen["b"][0].0, "Bearer sk-b");
    }
    // After the wait, a is back.
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert_eq!(state_of(&handle, "a"), MemberState::Available);
    assert_eq!(&*send(&stack).await.unwrap().1.member, "a");
}

#[tokio::test(start_paused = true)]
async fn a_refused_key_is_parked_for_an_hour_and_an_exhausted_quota_until_reset() {
    let upstream = Arc::new(Upstream::default());
    upstream.answer("revoked", &[UNAUTHORIZED]);
    upstream.answer("broke", &[QUOTA]);
    let (stack, handle) = pool(
        vec![
            Member::key("revoked", Secret::new("sk-1")),
            Member::key("broke", Secret::new("sk-2")),
            Member::key("fine", Secret::new("sk-3")),
        ],
        &upstream,
        |b| b.policy(Policy::Ordered),
    );
    let (status, served) = send(&stack).await.unwrap();
    assert_eq!((status, &*served.member, served.attempts), (200, "fine", 3));
    assert_eq!(
        state_of(&handle, "revoked"),
        MemberState::CoolingDown {
            reason: Reason::AuthError,
            left: Duration::from_secs(3600)
        }
    );
    assert_eq!(
        state_of(&handle, "broke"),
        MemberState::Parked {
            reason: Reason::QuotaExhausted
        }
    );
    tokio::time::sleep(Duration::from_secs(3600)).await;
    assert_eq!(state_of(&handle, "revoked"), MemberState::Available);
    assert_eq!(
        state_of(&handle, "broke"),
        MemberState::Parked {
            reason: Reason::QuotaExhausted
        }
    );
    assert!(handle.reset("broke"));
    assert_eq!(state_of(&handle, "broke"), MemberState::Available);
    let report = handle.snapshot();
    assert_eq!(report[1].counters.quota_exhausted, 1);
    assert_eq!(report[0].counters.auth_errors, 1);
}

#[tokio::test(start_paused = true)]
async fn the_fallback_model_serves_only_after_the_primary_fails() {
    let upstream = Arc::new(Upstream::default());
    let (stack, _) = pool(
        vec![
            Member::key("gpt-4o", Secret::new("sk-p")),
            Member::with_adapter(
                "gpt-4o-mini",
                Rewrite::default()
                    .key(Secret::new("sk-p"), Auth::Bearer)
                    .model("gpt-4o-mini"),
            )
            .tier(1),
        ],
        &upstream,
        |b| b,
    );
    for _ in 0..5 {
        assert_eq!(&*send(&stack).await.unwrap().1.member, "gpt-4o");
    }
    assert_eq!(
        upstream.calls("gpt-4o-mini"),
        0,
        "healthy primary: no fallback"
    );
    upstream.answer("gpt-4o", &[OVERLOADED]);
    let (status, served) = send(&stack).await.unwrap();
    assert_eq!((status, &*served.member), (200, "gpt-4o-mini"));
    let seen = upstream.seen.lock().unwrap();
    assert_eq!(
        seen["gpt-4o-mini"][0].1["model"], "gpt-4o-mini",
        "the model was rewritten"
    );
    assert_eq!(seen["gpt-4o"][0].1["model"], "gpt-4o");
}

#[tokio::test(start_paused = true)]
async fn a_context_length_error_falls_back_to_a_larger_window_only() {
    let upstream = Arc::new(Upstream::default());
    upstream.answer("small", &[TOO_LONG]);
    let (stack, _) = pool(
        vec![
            Member::key("small", Secret::new("k")).context_window(8_192),
            Member::key("same", Secret::new("k"))
                .context_window(8_192)
                .tier(1),
            Member::key("large", Secret::new("k"))
                .context_window(128_000)
                .tier(2),
        ],
        &upstream,
        |b| b,
    );
    let (status, served) = send(&stack).await.unwrap();
    assert_eq!((status, &*served.member), (200, "large"));
    assert_eq!(upstream.calls("same"), 0, "a window no larger cannot help");
    // A request the small model can take still goes there.
    assert_eq!(&*send(&stack).await.unwrap().1.member, "small");
}

#[tokio::test(start_paused = true)]
async fn with_every_member_out_a_request_waits_or_fails_as_configured() {
    let upstream = Arc::new(Upstream::default());
    upstream.answer("only", &[RATE_LIMITED]);
    let (stack, _) = pool(
        vec![Member::key("only", Secret::new("k"))],
        &upstream,
        |b| b.when_exhausted(WhenExhausted::Fail),
    );
    // The 429 itself comes back (nobody else could serve it).
    assert_eq!(send(&stack).await.unwrap().0, 429);
    let error = send(&stack).await.unwrap_err();
    let out = error
        .downcast_ref::<NoMemberAvailable>()
        .expect("NoMemberAvailable");
    assert_eq!(out.retry_after, Some(Duration::from_secs(20)));
    // Seen as a local rate limit by the layers above.
    let limited = std::error::Error::source(out).expect("a source");
    assert_eq!(
        limited.downcast_ref::<RateLimited>().map(|l| l.retry_after),
        Some(Some(Duration::from_secs(20)))
    );

    let upstream = Arc::new(Upstream::default());
    upstream.answer("only", &[RATE_LIMITED]);
    let (stack, _) = pool(
        vec![Member::key("only", Secret::new("k"))],
        &upstream,
        |b| b,
    );
    assert_eq!(send(&stack).await.unwrap().0, 429);
    let start = tokio::time::Instant::now();
    assert_eq!(send(&stack).await.unwrap().0, 200);
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(20),
        "waited for the member to be back"
    );
    // Not beyond the request's deadline.
    upstream.answer("only", &[RATE_LIMITED]);
    assert_eq!(send(&stack).await.unwrap().0, 429);
    let mut request = ask();
    request
        .extensions_mut()
        .insert(Deadline::after(Duration::from_secs(5)));
    let error = stack.clone().oneshot(request).await.unwrap_err();
    assert!(error.is::<NoMemberAvailable>(), "{error}");
}

#[tokio::test(start_paused = true)]
async fn retries_go_back_through_the_pool_to_another_member() {
    let upstream = Arc::new(Upstream::default());
    upstream.answer(
        "a",
        &[(500, r#"{"error":{"message":"boom","type":"server_error"}}"#)],
    );
    let mut builder = Pool::builder().policy(Policy::Ordered).max_attempts(1);
    for name in ["a", "b"] {
        builder = builder.member(
            Member::key(name, Secret::new("k")),
            member_stack(name, &upstream),
        );
    }
    let pool = builder.build();
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .layer(tollgate_retry::RetryLayer::new().with_seed(1))
        .service(pool);
    let response = stack.oneshot(ask()).await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(&*response.extensions().get::<Served>().unwrap().member, "b");
    assert_eq!((upstream.calls("a"), upstream.calls("b")), (1, 1));
}

#[tokio::test(start_paused = true)]
async fn the_pool_shows_no_secret() {
    let upstream = Arc::new(Upstream::default());
    let mut builder = Pool::builder();
    builder = builder.member(
        Member::key("a", Secret::new("sk-live-XYZ")),
        member_stack("a", &upstream),
    );
    let pool = builder.build();
    assert!(!format!("{pool:?}").contains("sk-live-XYZ"));
    assert!(!format!("{:?}", pool.handle().snapshot()).contains("sk-live-XYZ"));
}

#[tokio::test(start_paused = true)]
async fn weighted_and_least_loaded_spread_the_load() {
    let upstream = Arc::new(Upstream::default());
    let (stack, _) = pool(
        vec![
            Member::key("heavy", Secret::new("k")).weight(3),
            Member::key("light", Secret::new("k")),
        ],
        &upstream,
        |b| b.policy(Policy::Weighted),
    );
    for _ in 0..400 {
        send(&stack).await.unwrap();
    }
    let (heavy, light) = (upstream.calls("heavy"), upstream.calls("light"));
    assert!(
        (250..=350).contains(&heavy),
        "3:1 by weight: {heavy} / {light}"
    );

    let upstream = Arc::new(Upstream::default());
    let (stack, _) = pool(
        vec![
            Member::key("x", Secret::new("k")),
            Member::key("y", Secret::new("k")),
        ],
        &upstream,
        |b| b.policy(Policy::LeastLoaded),
    );
    for _ in 0..200 {
        send(&stack).await.unwrap();
    }
    assert_eq!(upstream.calls("x") + upstream.calls("y"), 200);
    assert!(upstream.calls("x") > 50 && upstream.calls("y") > 50);
}

#[tokio::test(start_paused = true)]
async fn an_open_breaker_takes_its_member_out_until_its_wait() {
    let open = service_fn(|_: Request<Full<Bytes>>| async {
        Err::<Response<ObservedBody<Full<Bytes>>>, BoxError>(Box::new(
            tollgate_core::error::CircuitOpen::new(Some(Duration::from_secs(5))),
        ))
    });
    let upstream = Arc::new(Upstream::default());
    let pool = Pool::builder()
        .policy(Policy::Ordered)
        .member(
            Member::key("tripped", Secret::new("k")),
            BoxCloneSyncService::new(open) as Inner,
        )
        .member(
            Member::key("ok", Secret::new("k")),
            member_stack("ok", &upstream),
        )
        .build();
    let handle = pool.handle();
    let stack: Stack = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .service(pool),
    );
    let (status, served) = send(&stack).await.unwrap();
    assert_eq!((status, &*served.member), (200, "ok"));
    assert_eq!(
        state_of(&handle, "tripped"),
        MemberState::CoolingDown {
            reason: Reason::BreakerOpen,
            left: Duration::from_secs(5)
        }
    );
    assert_eq!(handle.snapshot()[0].counters.breaker_open, 1);
}

#[tokio::test(start_paused = true)]
async fn a_refusal_by_a_members_own_limits_fails_over_without_costing_it_health() {
    // The member's own concurrency queue gives up: the upstream never saw the call.
    let busy = service_fn(|_: Request<Full<Bytes>>| async {
        Err::<Response<ObservedBody<Full<Bytes>>>, BoxError>(Box::new(
            tollgate_core::error::QueueTimeout {
                waited: Duration::from_secs(1),
            },
        ))
    });
    let upstream = Arc::new(Upstream::default());
    let pool = Pool::builder()
        .policy(Policy::Ordered)
        .member(
            Member::key("busy", Secret::new("k")),
            BoxCloneSyncService::new(busy) as Inner,
        )
        .member(
            Member::key("ok", Secret::new("k")),
            member_stack("ok", &upstream),
        )
        .build();
    let handle = pool.handle();
    let stack: Stack = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .service(pool),
    );
    for _ in 0..5 {
        let (status, served) = send(&stack).await.unwrap();
        assert_eq!((status, &*served.member, served.attempts), (200, "ok", 2));
    }
    let busy = &handle.snapshot()[0];
    assert_eq!(busy.state, MemberState::Available, "no cooldown");
    assert_eq!(busy.score, 100, "no score lost");
    assert_eq!(busy.counters.timeouts, 0);
    assert_eq!(busy.counters.calls, 0, "nothing reached its upstream");
    assert_eq!(busy.counters.refused_locally, 5);
}

#[tokio::test(start_paused = true)]
async fn the_callers_own_deadline_running_out_is_not_held_against_a_member() {
    let cut = service_fn(|_: Request<Full<Bytes>>| async {
        Err::<Response<ObservedBody<Full<Bytes>>>, BoxError>(Box::new(
            tollgate_core::error::DeadlineExceeded,
        ))
    });
    let upstream = Arc::new(Upstream::default());
    let pool = Pool::builder()
        .policy(Policy::Ordered)
        .member(
            Member::key("cut", Secret::new("k")),
            BoxCloneSyncService::new(cut) as Inner,
        )
        .member(
            Member::key("ok", Secret::new("k")),
            member_stack("ok", &upstream),
        )
        .build();
    let handle = pool.handle();
    let stack: Stack = BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new())
            .service(pool),
    );
    let error = send(&stack).await.unwrap_err();
    assert!(
        error.is::<tollgate_core::error::DeadlineExceeded>(),
        "{error}"
    );
    assert_eq!(
        upstream.calls("ok"),
        0,
        "no time left to try another member"
    );
    let cut = &handle.snapshot()[0];
    assert_eq!(cut.state, MemberState::Available);
    assert_eq!((cut.score, cut.counters.timeouts), (100, 0));
}

#[tokio::test(start_paused = true)]
async fn healthiest_shares_calls_evenly_among_the_members_it_may_use() {
    let upstream = Arc::new(Upstream::default());
    // "c" is out for a minute: "a" and "b" are tied, and take turns.
    upstream.answer("c", &[RATE_LIMITED]);
    let (stack, handle) = pool(
        vec![
            Member::key("a", Secret::new("ka")),
            Member::key("b", Secret::new("kb")),
            Member::key("c", Secret::new("kc")),
        ],
        &upstream,
        |b| b,
    );
    for _ in 0..60 {
        assert_eq!(send(&stack).await.unwrap().0, 200);
    }
    assert!(matches!(
        state_of(&handle, "c"),
        MemberState::CoolingDown { .. }
    ));
    let (a, b) = (upstream.calls("a"), upstream.calls("b"));
    assert_eq!(a + b, 60, "the 429 moved on within its call");
    assert!(a.abs_diff(b) <= 1, "in turn: a {a}, b {b}");
}
