//! Prompt-cache affinity: requests that share a session or a prompt prefix stay on one member
//! while it is in rotation, move when it goes out (only its own keys), and come back when it
//! returns.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use serde_json::{Value, json};
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::body::ObservedBody;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{BoxError, Secret};
use tollgate_pool::{
    Affinity, AffinityConfig, Member, MemberState, Policy, Pool, PoolBuilder, PoolHandle, Served,
};
use tower::util::BoxCloneSyncService;
use tower::{ServiceBuilder, ServiceExt, service_fn};

/// A member's stack, and the pool's.
type Stack =
    BoxCloneSyncService<Request<Full<Bytes>>, Response<ObservedBody<Full<Bytes>>>, BoxError>;

/// Members that answer at once, or after `delay`; a member in `limited` answers 429 (come back
/// in 20 s).
#[derive(Default)]
struct Upstream {
    limited: Mutex<HashSet<String>>,
    delay: Mutex<Duration>,
}

impl Upstream {
    fn limit(&self, member: &str, limited: bool) {
        let mut set = self.limited.lock().unwrap();
        if limited {
            set.insert(member.to_owned());
        } else {
            set.remove(member);
        }
    }
}

fn member(name: &str, upstream: &Arc<Upstream>) -> Stack {
    let (name, upstream) = (name.to_owned(), upstream.clone());
    let answer = service_fn(move |_: Request<Full<Bytes>>| {
        let limited = upstream.limited.lock().unwrap().contains(&name);
        let delay = *upstream.delay.lock().unwrap();
        async move {
            tokio::time::sleep(delay).await;
            let response = if limited {
                Response::builder()
                    .status(429)
                    .header("retry-after", "20")
                    .body(Full::new(Bytes::from_static(
                        br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
                    )))
            } else {
                Response::builder().body(Full::new(Bytes::from_static(br#"{"choices":[]}"#)))
            };
            Ok::<_, BoxError>(response.unwrap())
        }
    });
    BoxCloneSyncService::new(
        ServiceBuilder::new()
            .layer(ClassifyLayer::new())
            .service(answer),
    )
}

struct Members {
    upstream: Arc<Upstream>,
    stack: Stack,
    handle: PoolHandle,
}

fn pool(
    names: &[&str],
    configure: impl FnOnce(PoolBuilder<Stack>) -> PoolBuilder<Stack>,
) -> Members {
    let upstream = Arc::new(Upstream::default());
    let mut builder = Pool::builder();
    for name in names {
        builder = builder.member(Member::key(name, Secret::new("k")), member(name, &upstream));
    }
    let pool = configure(builder).build();
    let handle = pool.handle();
    let stack = ServiceBuilder::new()
        .layer(AnnotateLayer::new())
        .service(pool);
    Members {
        upstream,
        stack: BoxCloneSyncService::new(stack),
        handle,
    }
}

fn by_header() -> AffinityConfig {
    AffinityConfig {
        header: Some("x-session-id".into()),
        ..AffinityConfig::default()
    }
}

const FOUR: [&str; 4] = ["a", "b", "c", "d"];

/// A request: `body` to OpenAI's chat (or Anthropic's messages, when it has `system`), with
/// the header `x-session-id` when `session` is set.
fn ask(body: &Value, session: Option<&str>) -> Request<Full<Bytes>> {
    let uri = if body.get("system").is_some() {
        "https://api.anthropic.com/v1/messages"
    } else {
        "https://api.openai.com/v1/chat/completions"
    };
    let mut request = Request::post(uri);
    if let Some(session) = session {
        request = request.header("x-session-id", session);
    }
    request
        .body(Full::new(Bytes::from(serde_json::to_vec(body).unwrap())))
        .unwrap()
}

fn hi() -> Value {
    json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "hi"}]})
}

fn with_key(key: u64) -> Request<Full<Bytes>> {
    let mut request = ask(&hi(), None);
    request.extensions_mut().insert(Affinity(key));
    request
}

/// The member that answered, and how many were tried.
async fn served(members: &Members, request: Request<Full<Bytes>>) -> (String, u32) {
    let response = members.stack.clone().oneshot(request).await.unwrap();
    let served = response.extensions().get::<Served>().cloned().unwrap();
    assert_eq!(response.status(), 200);
    response.into_body().collect().await.unwrap();
    (served.member.to_string(), served.attempts)
}

async fn member_for(members: &Members, request: Request<Full<Bytes>>) -> String {
    served(members, request).await.0
}

#[tokio::test(start_paused = true)]
async fn a_session_stays_on_one_member_across_calls() {
    let members = pool(&FOUR, |b| b.affinity(by_header()));
    for session in ["s1", "s2", "s3", "s4", "s5"] {
        let first = member_for(&members, ask(&hi(), Some(session))).await;
        for _ in 0..20 {
            assert_eq!(member_for(&members, ask(&hi(), Some(session))).await, first);
        }
        // The caller's own key, from the same id, goes to the same member.
        let mut request = ask(&hi(), None);
        request.extensions_mut().insert(Affinity::of(session));
        assert_eq!(member_for(&members, request).await, first);
    }
}

#[tokio::test(start_paused = true)]
async fn sessions_spread_over_the_members_and_by_weight_under_weighted() {
    let members = pool(&FOUR, |b| b.affinity(by_header()));
    let mut counts: HashMap<String, usize> = HashMap::new();
    for n in 0..1000 {
        let session = format!("session-{n}");
        *counts
            .entry(member_for(&members, ask(&hi(), Some(&session))).await)
            .or_default() += 1;
    }
    assert_eq!(counts.len(), 4);
    assert!(
        counts.values().all(|n| (175..=325).contains(n)),
        "about 250 each: {counts:?}"
    );

    let upstream = Arc::new(Upstream::default());
    let pool = Pool::builder()
        .member(
            Member::key("heavy", Secret::new("k")).weight(3),
            member("heavy", &upstream),
        )
        .member(
            Member::key("light", Secret::new("k")),
            member("light", &upstream),
        )
        .policy(Policy::Weighted)
        .affinity(by_header())
        .build();
    let weighted = Members {
        upstream,
        handle: pool.handle(),
        stack: BoxCloneSyncService::new(
            ServiceBuilder::new()
                .layer(AnnotateLayer::new())
                .service(pool),
        ),
    };
    let mut heavy = 0;
    for n in 0..1000 {
        let session = format!("session-{n}");
        heavy += usize::from(member_for(&weighted, ask(&hi(), Some(&session))).await == "heavy");
    }
    assert!(
        (680..=820).contains(&heavy),
        "3:1 by weight: {heavy} of 1000"
    );
}

#[tokio::test(start_paused = true)]
async fn a_cooled_down_members_sessions_move_and_come_back_after_its_cooldown() {
    let members = pool(&FOUR, |b| b.affinity(by_header()));
    let sessions: Vec<String> = (0..200).map(|n| format!("session-{n}")).collect();
    let mut home = Vec::new();
    for session in &sessions {
        home.push(member_for(&members, ask(&hi(), Some(session))).await);
    }
    // The first session's member is rate limited: the call moves on, the member cools down.
    let out = home[0].clone();
    members.upstream.limit(&out, true);
    let (moved_to, attempts) = served(&members, ask(&hi(), Some(&sessions[0]))).await;
    assert_ne!(moved_to, out);
    assert_eq!(attempts, 2);
    members.upstream.limit(&out, false);
    assert!(matches!(
        state_of(&members.handle, &out),
        MemberState::CoolingDown { .. }
    ));
    let mut moved = 0;
    for (session, home) in sessions.iter().zip(&home) {
        let now = member_for(&members, ask(&hi(), Some(session))).await;
        if *home == out {
            moved += 1;
            assert_ne!(now, out);
            // Moved once, then kept where it went.
            assert_eq!(member_for(&members, ask(&hi(), Some(session))).await, now);
        } else {
            assert_eq!(now, *home, "only the cooled member's sessions move");
        }
    }
    assert!(moved > 20, "{moved} sessions were on {out}");
    // Back after the provider's retry-after: so are its sessions.
    tokio::time::sleep(Duration::from_secs(20)).await;
    for (session, home) in sessions.iter().zip(&home) {
        assert_eq!(member_for(&members, ask(&hi(), Some(session))).await, *home);
    }
}

fn state_of(handle: &PoolHandle, name: &str) -> MemberState {
    handle
        .snapshot()
        .into_iter()
        .find(|r| &*r.name == name)
        .unwrap()
        .state
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Rendezvous hashing: a member going out moves its own keys and no other.
    #[test]
    fn cooling_one_member_of_four_moves_only_its_keys(
        keys in proptest::collection::vec(any::<u64>(), 1..40),
        cooled in 0..4_usize,
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async {
            // No affinity settings: the caller's own key is enough.
            let members = pool(&FOUR, |b| b);
            let cooled = FOUR[cooled];
            let mut home = Vec::new();
            for key in &keys {
                home.push(member_for(&members, with_key(*key)).await);
            }
            let trigger = {
                let mut key = 0;
                while member_for(&members, with_key(key)).await != cooled {
                    key += 1;
                }
                key
            };
            members.upstream.limit(cooled, true);
            assert_eq!(served(&members, with_key(trigger)).await.1, 2);
            members.upstream.limit(cooled, false);
            for (key, home) in keys.iter().zip(&home) {
                let (now, attempts) = served(&members, with_key(*key)).await;
                assert_eq!(attempts, 1);
                if home == cooled {
                    assert_ne!(&now, cooled);
                } else {
                    assert_eq!(&now, home, "key {key} moved though its member is in rotation");
                }
            }
        });
    }
}

/// The first of `candidates` whose request goes to a member not in `taken`, with the member.
async fn one_elsewhere(
    members: &Members,
    taken: &[&str],
    candidates: impl Iterator<Item = Request<Full<Bytes>>>,
) -> (usize, String) {
    for (n, request) in candidates.enumerate() {
        let member = member_for(members, request).await;
        if !taken.contains(&member.as_str()) {
            return (n, member);
        }
    }
    panic!("every candidate went to {taken:?}");
}

fn long_prompt(seed: &str) -> String {
    format!("{seed}: ").repeat(3000 / (seed.len() + 2) + 1)
}

#[tokio::test(start_paused = true)]
async fn an_explicit_key_beats_the_header_which_beats_the_user_which_beats_the_prefix() {
    let names = ["a", "b", "c", "d", "e", "f", "g", "h"];
    let members = pool(&names, |b| b.affinity(by_header()));
    let system = long_prompt("You are a careful assistant");
    let body = |user: Option<&str>| {
        let mut body = json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": "hi"},
        ]});
        if let Some(user) = user {
            body["user"] = json!(user);
        }
        body
    };
    let by_prefix = member_for(&members, ask(&body(None), None)).await;

    let users = (0..).map(|n| format!("user-{n}"));
    let (n, by_user) = one_elsewhere(
        &members,
        &[&by_prefix],
        users
            .clone()
            .map(|u| ask(&json!({"model": "m", "messages": [], "user": u}), None)),
    )
    .await;
    let user = users.clone().nth(n).unwrap();
    assert_eq!(
        member_for(&members, ask(&body(Some(&user)), None)).await,
        by_user
    );
    // Anthropic's metadata.user_id is read as the same user.
    let anthropic = json!({"model": "claude", "system": system, "max_tokens": 10,
        "messages": [{"role": "user", "content": "hi"}], "metadata": {"user_id": user}});
    assert_eq!(member_for(&members, ask(&anthropic, None)).await, by_user);

    let sessions = (0..).map(|n| format!("session-{n}"));
    let (n, by_header) = one_elsewhere(
        &members,
        &[&by_user],
        sessions.clone().map(|s| ask(&hi(), Some(&s))),
    )
    .await;
    let session = sessions.clone().nth(n).unwrap();
    assert_eq!(
        member_for(&members, ask(&body(Some(&user)), Some(&session))).await,
        by_header
    );

    let (key, by_key) = one_elsewhere(&members, &[&by_header], (0..).map(with_key)).await;
    let mut request = ask(&body(Some(&user)), Some(&session));
    request.extensions_mut().insert(Affinity(key as u64));
    assert_eq!(member_for(&members, request).await, by_key);
}

#[tokio::test(start_paused = true)]
async fn a_shared_long_system_prompt_keeps_requests_together_whatever_their_last_message() {
    let members = pool(&FOUR, |b| b.affinity(AffinityConfig::default()));
    let system = long_prompt("You answer questions about the tax code");
    let openai = |question: &str| {
        json!({"model": "gpt-4o", "messages": [
            {"role": "system", "content": system},
            {"role": "user", "content": question},
        ]})
    };
    let anthropic = |question: &str| {
        json!({"model": "claude", "max_tokens": 100, "system": system,
            "messages": [{"role": "user", "content": question}]})
    };
    for shape in [&openai as &dyn Fn(&str) -> Value, &anthropic] {
        let first = member_for(&members, ask(&shape("question 0"), None)).await;
        for n in 1..20 {
            let question = format!("question {n}: {}", "why? ".repeat(n));
            assert_eq!(
                member_for(&members, ask(&shape(&question), None)).await,
                first
            );
        }
    }
    // Other system prompts go elsewhere.
    let mut spread = HashSet::new();
    for n in 0..40 {
        let other = long_prompt(&format!("You are assistant number {n}"));
        let body = json!({"model": "gpt-4o", "messages": [{"role": "system", "content": other}]});
        spread.insert(member_for(&members, ask(&body, None)).await);
    }
    assert!(spread.len() >= 3, "{spread:?}");
    // A prompt shorter than prefix_bytes has no key: the policy picks (in turn).
    let mut turns = HashSet::new();
    for _ in 0..4 {
        turns.insert(member_for(&members, ask(&hi(), None)).await);
    }
    assert_eq!(turns.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn without_affinity_a_session_header_or_user_changes_nothing() {
    let members = pool(&FOUR, |b| b);
    let body = json!({"model": "gpt-4o", "user": "u-1", "messages": [
        {"role": "system", "content": long_prompt("Be brief")},
    ]});
    let mut turns = HashSet::new();
    for _ in 0..4 {
        turns.insert(member_for(&members, ask(&body, Some("s1"))).await);
    }
    assert_eq!(turns.len(), 4, "healthiest, in turn: {turns:?}");
}

#[tokio::test(start_paused = true)]
async fn a_busy_member_passes_a_keys_calls_to_its_next_member_past_the_load_bound() {
    for (max_load_percent, home_at_most) in [(150, 8), (0, 10)] {
        let members = pool(&["a", "b"], |b| {
            b.affinity(AffinityConfig {
                max_load_percent,
                ..AffinityConfig::default()
            })
        });
        let home = member_for(&members, with_key(7)).await;
        *members.upstream.delay.lock().unwrap() = Duration::from_secs(10);
        let calls: Vec<_> = (0..10)
            .map(|_| tokio::spawn(members.stack.clone().oneshot(with_key(7))))
            .collect();
        tokio::time::sleep(Duration::from_millis(1)).await;
        let in_flight: HashMap<String, usize> = members
            .handle
            .snapshot()
            .into_iter()
            .map(|r| (r.name.to_string(), r.in_flight))
            .collect();
        assert_eq!(in_flight.values().sum::<usize>(), 10);
        assert_eq!(in_flight[&home], home_at_most, "{in_flight:?}");
        for call in calls {
            assert_eq!(call.await.unwrap().unwrap().status(), 200);
        }
    }
}
