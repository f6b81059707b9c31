//! Keys: canonical JSON (any key order, any whitespace, one key; any other value, another),
//! and isolation (one credential or tenant never sees another's answers).

mod common;

use bytes::Bytes;
use common::{cached, calls, chat, post, send, sim, status};
use http_body_util::Full;
use proptest::prelude::*;
use serde_json::{Map, Value};
use tollgate_cache::{CacheLayer, CacheStatus, Tenant};
use tollgate_core::{CredentialId, EndpointKind, LlmRequest, Provider};

#[tokio::test(start_paused = true)]
async fn one_credential_never_sees_anothers_answers() {
    let sim = sim("");
    let (stack, _) = cached(&sim);
    let alice = send(&stack, chat("sk-alice", "same question")).await;
    let bob = send(&stack, chat("sk-bob", "same question")).await;
    assert_eq!(bob.cache, CacheStatus::Miss);
    assert_ne!(alice.bytes(), bob.bytes());
    assert_eq!(calls(&sim), 2);
    assert_eq!(
        send(&stack, chat("sk-alice", "same question"))
            .await
            .bytes(),
        alice.bytes()
    );
    assert_eq!(
        send(&stack, chat("sk-bob", "same question")).await.bytes(),
        bob.bytes()
    );
    assert_eq!(calls(&sim), 2);
}

fn as_tenant(mut request: http::Request<Full<Bytes>>, tenant: &str) -> http::Request<Full<Bytes>> {
    request.extensions_mut().insert(Tenant::new(tenant));
    request
}

#[tokio::test(start_paused = true)]
async fn tenants_replace_credentials_in_the_key() {
    let sim = sim("");
    let (stack, _) = cached(&sim);
    // One provider key, two customers of a gateway: apart.
    let acme = send(&stack, as_tenant(chat("sk-shared", "q"), "acme")).await;
    let other = send(&stack, as_tenant(chat("sk-shared", "q"), "globex")).await;
    assert_eq!(other.cache, CacheStatus::Miss);
    assert_ne!(acme.bytes(), other.bytes());
    // One customer, two of its keys: together.
    let again = send(&stack, as_tenant(chat("sk-second", "q"), "acme")).await;
    assert_eq!(again.cache, CacheStatus::Hit);
    assert_eq!(again.bytes(), acme.bytes());
    assert_eq!(calls(&sim), 2);

    // A layer's tenant applies to requests without one.
    let layer = CacheLayer::default().with_tenant(Tenant::new("acme"));
    let scoped = common::stack(layer, &sim);
    send(&scoped, chat("sk-one", "r")).await;
    assert_eq!(status(&scoped, chat("sk-two", "r")).await, CacheStatus::Hit);
    assert_eq!(
        status(&scoped, as_tenant(chat("sk-one", "r"), "globex")).await,
        CacheStatus::Miss
    );
}

/// An annotated chat request with `body`, as the layer sees it.
fn annotated(body: &str, credential: &str) -> http::Request<Full<Bytes>> {
    let mut request = http::Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap();
    let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
    llm.credential = Some(CredentialId::named(credential));
    request.extensions_mut().insert(llm);
    request
}

/// Any JSON value, a few levels deep.
fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(Value::from),
        "[a-z\"\\\\ é\n]{0,8}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// A xorshift step.
fn next(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// `value` written with its object members in an order drawn from `seed`, and whitespace
/// drawn from it too.
fn write_shuffled(value: &Value, seed: &mut u64, out: &mut String) {
    let space = |n: u64| [" ", "", "\n  ", "\t", ""][(n % 5) as usize];
    match value {
        Value::Object(members) => {
            let mut members: Vec<_> = members.iter().collect();
            for i in (1..members.len()).rev() {
                members.swap(i, (next(seed) % (i as u64 + 1)) as usize);
            }
            out.push('{');
            for (i, (key, member)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(space(next(seed)));
                out.push_str(&Value::String(key.clone()).to_string());
                out.push_str(space(next(seed)));
                out.push(':');
                out.push_str(space(next(seed)));
                write_shuffled(member, seed, out);
            }
            out.push_str(space(next(seed)));
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(space(next(seed)));
                write_shuffled(item, seed, out);
            }
            out.push(']');
        }
        leaf => out.push_str(&leaf.to_string()),
    }
}

proptest! {
    #[test]
    fn any_key_order_and_whitespace_is_one_key(value in json(), seed in 1..u64::MAX) {
        let layer = CacheLayer::default();
        let mut seed = seed;
        let mut shuffled = String::new();
        write_shuffled(&value, &mut seed, &mut shuffled);
        let compact = value.to_string();
        prop_assert_eq!(
            layer.key(&annotated(&compact, "k")),
            layer.key(&annotated(&shuffled, "k")),
            "{} vs {}", compact, shuffled
        );
    }

    #[test]
    fn any_other_value_is_another_key(a in json(), b in json()) {
        prop_assume!(a != b);
        let layer = CacheLayer::default();
        let wrap = |v: &Value| {
            let mut body = Map::new();
            body.insert("model".into(), "m".into());
            body.insert("input".into(), v.clone());
            Value::Object(body).to_string()
        };
        prop_assert_ne!(layer.key(&annotated(&wrap(&a), "k")), layer.key(&annotated(&wrap(&b), "k")));
    }

    #[test]
    fn another_credential_is_another_key(body in json()) {
        let layer = CacheLayer::default();
        let body = body.to_string();
        prop_assert_ne!(layer.key(&annotated(&body, "a")), layer.key(&annotated(&body, "b")));
    }
}

#[test]
fn a_body_that_is_not_json_counts_byte_for_byte() {
    let layer = CacheLayer::default();
    let key = |body: &str| layer.key(&post("/v1/chat/completions", "sk", body));
    assert_eq!(key("plain text"), key("plain text"));
    assert_ne!(key("plain text"), key("plain  text"));
}
