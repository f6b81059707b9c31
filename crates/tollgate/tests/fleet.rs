//! `[redis]`, the one setting that makes several processes' stacks one fleet: two stacks built
//! from one file (two replicas of a worker) share one key's rate limit and the cache's second
//! level through a real redis-server that wants a password, given through the environment.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use tokio::task::JoinSet;
use tollgate::{LlmService, LlmStack, StackConfig};
use tollgate_sim::{Sim, SimConfig};
use tollgate_testkit::redis::RedisServer;
use tower::ServiceExt;

const PASSWORD: &str = "fleet-pw-61d0";

const CONFIG: &str = r#"
preset = "balanced"

[redis]
url = "REDIS_URL"
password_env = "FLEET_REDIS_PASSWORD"
local_share = 0.5

[rate_limit]
max_wait = "20ms"
[rate_limit.quotas]
requests_per_minute = 20

[retry]
max_attempts = 1
"#;

fn chat(url: &str, prompt: &str) -> Request<Full<Bytes>> {
    let body = json!({"model": "gpt-4o-mini", "temperature": 0, "max_tokens": 8,
        "messages": [{"role": "user", "content": prompt}]});
    Request::post(format!("{url}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-fleet")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

/// A status, and the cache's verdict.
async fn send(llm: LlmService, request: Request<Full<Bytes>>) -> (u16, Option<String>) {
    match llm.oneshot(request).await {
        Ok(response) => {
            let status = response.status().as_u16();
            let cache = response
                .headers()
                .get("x-tollgate-cache")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let _ = response.into_body().collect().await;
            (status, cache)
        }
        Err(_) => (0, None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_one_file_share_the_limit_and_the_cache_through_redis() {
    let redis = RedisServer::start(&["--requirepass", PASSWORD]);
    let sim = Sim::start(
        SimConfig::from_toml("seed = 5\n[[keys]]\nkey = \"sk-fleet\"\nname = \"fleet\"\n").unwrap(),
    )
    .await
    .unwrap();
    let config = StackConfig::from_toml(&CONFIG.replace("REDIS_URL", &redis.url())).unwrap();
    let env = |name: &str| (name == "FLEET_REDIS_PASSWORD").then(|| PASSWORD.to_owned());

    // A wrong password: the field, the server, and Redis's own word as the cause; never the
    // password.
    let wrong = |name: &str| (name == "FLEET_REDIS_PASSWORD").then(|| "not-it".to_owned());
    let error = LlmStack::connect_with_env(&config, &wrong)
        .await
        .unwrap_err();
    let message = format!("{error}: {}", std::error::Error::source(&*error).unwrap());
    assert!(
        message.contains("rate_limit") || message.contains("redis"),
        "{message}"
    );
    assert!(message.contains(&redis.url()), "{message}");
    assert!(!message.contains("not-it"), "{message}");

    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let replicas: Vec<LlmService> = [
        LlmStack::connect_with_env(&config, &env).await.unwrap(),
        LlmStack::connect_with_env(&config, &env).await.unwrap(),
    ]
    .iter()
    .map(|stack| stack.service(client.clone()).0)
    .collect();

    // A question one replica had answered is answered by the other from Redis.
    let first = send(replicas[0].clone(), chat(&sim.url(), "a common question")).await;
    assert_eq!(first, (200, None), "asked upstream");
    // The answer is written to Redis once its body has been read, in the background.
    for _ in 0..200 {
        if !redis.keys("tollgate:cache:*").is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let second = send(replicas[1].clone(), chat(&sim.url(), "a common question")).await;
    assert_eq!(
        second,
        (200, Some("hit".to_owned())),
        "from the shared second level"
    );
    assert_eq!(sim.stats().keys["fleet"].requests, 1);

    // Forty different questions, twenty to each replica, at once: the key's twenty a minute
    // (one spent above) hold for the two together.
    let mut calls = JoinSet::new();
    for i in 0..40 {
        let llm = replicas[i % 2].clone();
        let request = chat(&sim.url(), &format!("question {i}"));
        calls.spawn(async move { (i % 2, send(llm, request).await.0) });
    }
    let mut served = [0; 2];
    while let Some(call) = calls.join_next().await {
        let (replica, status) = call.unwrap();
        if status == 200 {
            served[replica] += 1;
        }
    }
    let upstream = sim.stats().keys["fleet"].requests;
    println!("served {served:?}; the provider saw {upstream} in all");
    assert_eq!(upstream, 1 + (served[0] + served[1]) as u64);
    assert!(
        upstream <= 20,
        "the fleet kept to the key's 20 a minute: {upstream}"
    );
    assert!(
        upstream >= 10,
        "the limit was shared, not halved: {upstream}"
    );
    assert!(served[0] > 0 && served[1] > 0, "{served:?}");
}

const BUDGETED: &str = r#"
preset = "balanced"

[redis]
url = "REDIS_URL"

[retry]
max_attempts = 1

[budget]
[[budget.budgets]]
name = "team"
usd = 0.0001
window = "day"
# The simulator on loopback is an OpenAI-compatible server: its model at OpenAI's list price.
[[budget.prices.models]]
provider = "openai-compatible"
model = "gpt-4o-mini"
input = 0.15
output = 0.60
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_of_one_file_share_one_budget_through_redis() {
    let redis = RedisServer::start(&[]);
    let sim = Sim::start(
        SimConfig::from_toml(
            "seed = 8\n[output]\nmin_tokens = 1\nmax_tokens = 8\n\
             [[keys]]\nkey = \"sk-fleet\"\nname = \"fleet\"\n",
        )
        .unwrap(),
    )
    .await
    .unwrap();
    let config = StackConfig::from_toml(&BUDGETED.replace("REDIS_URL", &redis.url())).unwrap();
    assert!(
        LlmStack::new(&config).is_err(),
        "budgets kept in Redis need a connection"
    );
    let env = |_: &str| None;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let stack = LlmStack::connect_with_env(&config, &env).await.unwrap();
        replicas.push(stack.service(client.clone()));
    }
    // Both replicas spend at once until each is refused: together, never past the budget.
    let mut calls = JoinSet::new();
    for (r, (llm, _)) in replicas.iter().enumerate() {
        for i in 0..40 {
            let (llm, url) = (llm.clone(), sim.url());
            calls.spawn(
                async move { send(llm, chat(&url, &format!("replica {r} asks {i}"))).await },
            );
        }
    }
    let mut answered = 0;
    while let Some(call) = calls.join_next().await {
        if call.unwrap().0 == 200 {
            answered += 1;
        }
    }
    // The shipped price of OpenAI's gpt-4o-mini is the one configured above.
    let prices = tollgate::budget::PriceTable::shipped();
    let price = prices
        .lookup(tollgate::core::Provider::OpenAi, "gpt-4o-mini")
        .unwrap();
    let cost = sim
        .log()
        .iter()
        .fold(tollgate::budget::Usd::ZERO, |sum, e| {
            sum + price.cost(&tollgate::core::Usage::new(e.input_tokens, e.output_tokens))
        });
    println!(
        "{answered} of 80 calls answered, costing ${:.7} of $0.0001",
        cost.as_dollars_f64()
    );
    assert_eq!(sim.log().len(), answered);
    assert!(
        answered > 0 && answered < 80,
        "the budget refused some: {answered}"
    );
    assert!(
        cost.as_dollars_f64() <= 0.0001,
        "the fleet never spent past the budget"
    );
    // Each replica's books, once every replica has sent its own and read them again, say what
    // the fleet spent, exactly.
    let books: Vec<_> = replicas
        .iter()
        .map(|(_, handle)| match &handle.budget {
            Some(tollgate::Books::Fleet(books)) => books.clone(),
            other => panic!("the books are in Redis: {other:?}"),
        })
        .collect();
    for replica in &books {
        replica.flush().await.unwrap();
    }
    for replica in &books {
        replica.flush().await.unwrap();
        let spent = replica.snapshot()[0].spent.usd;
        assert_eq!(
            spent, cost,
            "the books in Redis: {spent} vs the provider's {cost}"
        );
    }
}

const ON_A_CLUSTER: &str = r#"
preset = "balanced"

[redis]
url = "REDIS_URL"
local_share = 0.5

[rate_limit]
max_wait = "20ms"
[rate_limit.quotas]
requests_per_minute = 20

[retry]
max_attempts = 1

[budget]
[[budget.budgets]]
name = "team"
usd = 1.0
window = "day"
[[budget.prices.models]]
provider = "openai-compatible"
model = "gpt-4o-mini"
input = 0.15
output = 0.60
"#;

/// The same fleet on a Redis Cluster of three primaries: every layer's keys and scripts work
/// across its slots.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_share_limit_cache_budget_and_breaker_on_a_redis_cluster() {
    use tollgate::circuit::CircuitState;
    use tollgate_testkit::redis::RedisCluster;

    let cluster = RedisCluster::start();
    let sim = Sim::start(
        SimConfig::from_toml("seed = 9\n[[keys]]\nkey = \"sk-fleet\"\nname = \"fleet\"\n").unwrap(),
    )
    .await
    .unwrap();
    let config =
        StackConfig::from_toml(&ON_A_CLUSTER.replace("REDIS_URL", &cluster.url())).unwrap();
    let env = |_: &str| None;
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let mut replicas = Vec::new();
    for _ in 0..2 {
        let stack = LlmStack::connect_with_env(&config, &env).await.unwrap();
        replicas.push(stack.service(client.clone()));
    }

    // The cache's second level.
    let first = send(replicas[0].0.clone(), chat(&sim.url(), "a common question")).await;
    assert_eq!(first, (200, None));
    for _ in 0..200 {
        if !cluster.keys("tollgate:cache:1:*").is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let second = send(replicas[1].0.clone(), chat(&sim.url(), "a common question")).await;
    assert_eq!(second, (200, Some("hit".to_owned())));

    // The rate limit, held by the two together.
    let mut calls = JoinSet::new();
    for i in 0..40 {
        let llm = replicas[i % 2].0.clone();
        let request = chat(&sim.url(), &format!("question {i}"));
        calls.spawn(async move { send(llm, request).await.0 });
    }
    let mut served = 0;
    while let Some(call) = calls.join_next().await {
        served += u64::from(call.unwrap() == 200);
    }
    let upstream = sim.stats().keys["fleet"].requests;
    println!("on a cluster: served {served} of 40; the provider saw {upstream} in all");
    assert_eq!(upstream, 1 + served);
    assert!((10..=20).contains(&upstream), "{upstream}");

    // The budget's books: both replicas read the fleet's spend.
    let books: Vec<_> = replicas
        .iter()
        .map(|(_, handle)| match &handle.budget {
            Some(tollgate::Books::Fleet(books)) => books.clone(),
            other => panic!("the books are in Redis: {other:?}"),
        })
        .collect();
    for replica in &books {
        replica.flush().await.unwrap();
    }
    for replica in &books {
        replica.flush().await.unwrap();
    }
    let spent: Vec<_> = books.iter().map(|b| b.snapshot()[0].spent.usd).collect();
    assert!(spent[0] > tollgate::budget::Usd::ZERO);
    assert_eq!(spent[0], spent[1], "one set of books");

    // A breaker opened by hand on one replica refuses on the other.
    let scope = replicas[0].1.health()[0].scope.clone();
    replicas[0].1.circuit.as_ref().unwrap().force_open(&scope);
    let other = &replicas[1].1;
    let mut state = CircuitState::Closed;
    for _ in 0..100 {
        state = other
            .health()
            .into_iter()
            .find(|h| h.scope == scope)
            .map_or(CircuitState::Closed, |h| h.circuit);
        if state == CircuitState::ForcedOpen {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(state, CircuitState::ForcedOpen, "within a second");

    // A clear reaches every primary: the entries are spread over them.
    let holding = cluster
        .nodes
        .iter()
        .filter(|node| !node.keys("tollgate:cache:1:*").is_empty())
        .count();
    assert!(holding >= 2, "entries on {holding} of 3 primaries");
    let cache = replicas[1].1.cache.as_ref().unwrap();
    let removed = cache.clear_everywhere().await.unwrap();
    assert!(removed.is_some_and(|n| n >= 1), "{removed:?}");
    assert_eq!(cluster.keys("tollgate:cache:1:*"), Vec::<String>::new());
}
