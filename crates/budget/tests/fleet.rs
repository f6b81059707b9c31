//! Done when: three replicas — three `BudgetLayer`s, each with its own connection to one
//! redis-server — sharing one budget let 1,000 concurrent calls from 100 tasks (streamed and
//! not, of random lengths, against `tollgate-sim`) spend up to it but never past it once
//! reconciled, charge exactly the simulator's usage at the model's prices, and a fresh layer
//! (a restarted process) sees that spend; and a replica that dies with calls in flight keeps
//! their money reserved only until their reservations expire.
#![cfg(feature = "redis")]

use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tollgate_budget::{
    BudgetConfig, BudgetExceeded, BudgetLayer, BudgetScope, BudgetSpec, CalendarWindow, CallCost,
    ChargeBasis, RedisBooks, Usd,
};
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::body::ObservedBody;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{BoxError, EndpointKind, LlmRequest, Provider, Usage};
use tollgate_sim::{SimBody, SimConfig, SimService};
use tollgate_testkit::redis::RedisServer;
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

const REPLICAS: usize = 3;
const TASKS: usize = 100;
const PER_TASK: usize = 10;
const BUDGET_USD: f64 = 1.0;

type Stack = BoxCloneService<Request<Full<Bytes>>, Response<ObservedBody<SimBody>>, BoxError>;

fn config(usd: f64) -> BudgetConfig {
    BudgetConfig {
        budgets: vec![BudgetSpec {
            name: "overall".into(),
            scope: BudgetScope::Overall,
            usd: Some(usd),
            window: Some(CalendarWindow::Month),
            ..BudgetSpec::default()
        }],
        ..BudgetConfig::default()
    }
}

/// As `sim.rs`: short prompts and, one in seven, a long one sharing a prefix; caps from 64
/// to 255; half streamed.
fn request(i: usize) -> Request<Full<Bytes>> {
    let words = [
        "alpha", "beta", "gamma", "delta", "budget", "tokens", "money", "cent",
    ];
    let count = if i.is_multiple_of(7) {
        1_500
    } else {
        20 + (i * 37) % 300
    };
    let prompt: Vec<&str> = (0..count)
        .map(|w| words[(w * 3 + if i.is_multiple_of(7) { 0 } else { i }) % words.len()])
        .collect();
    let mut body = json!({
        "model": "gpt-4o",
        "max_tokens": 64 + (i * 53) % 192,
        "messages": [{"role": "user", "content": format!("{} {i}", prompt.join(" "))}],
    });
    if i % 2 == 1 {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-budget")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid request")
}

fn simulator() -> SimService {
    let scenario = "seed = 11\n\
        [latency]\ntime_to_first_token = \"300ms\"\nper_output_token = \"5ms\"\n\
        [output]\nmin_tokens = 1\nmax_tokens = 300\n\
        [[keys]]\nkey = \"sk-budget\"\n";
    SimService::new(SimConfig::from_toml(scenario).expect("a valid scenario")).expect("valid")
}

async fn replica(url: &str, sim: &SimService) -> (BudgetLayer<RedisBooks>, Stack) {
    let books = RedisBooks::connect(url).await.expect("redis answers");
    let layer = BudgetLayer::configured_with_redis(&config(BUDGET_USD), books).unwrap();
    let stack = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new().with_provider(Provider::OpenAi))
            .layer(layer.clone())
            .layer(ClassifyLayer::new())
            .service(sim.clone()),
    );
    (layer, stack)
}

enum Sent {
    Charged(Usage),
    Refused,
}

async fn send(stack: Stack, layer: BudgetLayer<RedisBooks>, i: usize) -> Sent {
    match stack.oneshot(request(i)).await {
        Ok(response) => {
            let cost = response
                .extensions()
                .get::<CallCost>()
                .expect("a cost")
                .clone();
            response.into_body().collect().await.expect("a whole body");
            let charged = cost.charged().expect("charged at the end of the body");
            assert_eq!(charged.basis, ChargeBasis::Usage, "call {i}");
            assert!(charged.spend.usd <= cost.reserved().usd, "call {i}");
            let spent = layer.snapshot()[0].spent.usd;
            assert!(
                spent <= Usd::from_dollars(BUDGET_USD).unwrap(),
                "{spent} after call {i}"
            );
            Sent::Charged(charged.usage.expect("usage"))
        }
        Err(error) => {
            assert!(error.is::<BudgetExceeded>(), "call {i}: {error}");
            Sent::Refused
        }
    }
}

#[tokio::test(start_paused = true)]
async fn three_replicas_never_spend_past_the_budget_and_cost_exactly_their_usage() {
    let server = RedisServer::start(&[]);
    let sim = simulator();
    let mut replicas = Vec::new();
    for _ in 0..REPLICAS {
        replicas.push(replica(&server.url(), &sim).await);
    }
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (layer, stack) = replicas[t % REPLICAS].clone();
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for k in 0..PER_TASK {
                sent.push(send(stack.clone(), layer.clone(), k * TASKS + t).await);
                tokio::time::sleep(Duration::from_millis((t as u64 * 7 + k as u64) % 50)).await;
            }
            sent
        }));
    }
    let (mut charged, mut refused) = (Vec::new(), 0);
    for task in tasks {
        for sent in task.await.expect("no panic") {
            match sent {
                Sent::Charged(usage) => charged.push(usage),
                Sent::Refused => refused += 1,
            }
        }
    }
    for (layer, _) in &replicas {
        layer.flush().await.expect("redis answers");
    }

    let limit = Usd::from_dollars(BUDGET_USD).unwrap();
    let snapshot = &replicas[0].0.snapshot()[0];
    assert!(snapshot.spent.usd <= limit, "{}", snapshot.spent.usd);
    assert_eq!(
        snapshot.reserved,
        Default::default(),
        "every reservation settled"
    );
    assert!(refused > 0, "the budget was reached");
    assert!(charged.len() > 100, "{} calls charged", charged.len());

    let stats = sim.stats();
    assert_eq!(stats.accepted as usize, charged.len());
    let output: u64 = stats.keys.values().map(|k| k.output_tokens).sum();
    let mut usage = Usage::new(stats.input_tokens, output);
    usage.cache_read_input_tokens = stats.cached_input_tokens;
    let price = replicas[0]
        .0
        .prices()
        .lookup(Provider::OpenAi, "gpt-4o")
        .unwrap();
    assert_eq!(snapshot.spent.usd, price.cost(&usage), "to the picodollar");
    assert_eq!(snapshot.spent.tokens, usage.total_tokens());

    // A restarted process: a fresh layer reads the fleet's spend from Redis.
    let (fresh, _) = replica(&server.url(), &sim).await;
    fresh.flush().await.expect("redis answers");
    assert_eq!(fresh.snapshot()[0].spent, snapshot.spent);
    println!(
        "{} calls charged {} of {limit} across {REPLICAS} replicas, {refused} refused",
        charged.len(),
        snapshot.spent.usd
    );
}

/// A gpt-4o chat call of 1,000 input tokens (10 % margin) capped at 500 output: a worst case
/// of 1,100 × $2.50/M + 500 × $10/M = $0.00775.
fn chat() -> Request<Full<Bytes>> {
    let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
    llm.model = Some("gpt-4o".into());
    llm.input_tokens_estimate = 1_000;
    llm.max_output_tokens = Some(500);
    let mut request = Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::new(Bytes::new()))
        .unwrap();
    request.extensions_mut().insert(llm);
    request
}

const WORST: Usd = Usd::from_micros(7_750);
const HOLD: Duration = Duration::from_secs(2);

/// Waits (in real time: the reservations expire in Redis) until `layer` sees `reserved`.
async fn reserved_becomes(layer: &BudgetLayer<RedisBooks>, reserved: Usd, within: Duration) {
    let start = std::time::Instant::now();
    loop {
        layer.flush().await.expect("redis answers");
        let now = layer.snapshot()[0].reserved.usd;
        if now == reserved {
            return;
        }
        assert!(
            start.elapsed() < within,
            "{now} reserved, not {reserved}, after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[test]
fn a_dead_replicas_reservations_expire_and_the_money_comes_back() {
    let server = RedisServer::start(&[]);
    let url = server.url();
    let runtime = || {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap()
    };
    // The replica that dies: a runtime of its own, shut down with its calls in flight.
    let doomed = runtime();
    doomed.block_on(async {
        let books = RedisBooks::connect(&url).await.unwrap().with_hold(HOLD);
        let layer = BudgetLayer::configured_with_redis(&config(1.0), books).unwrap();
        let never = tower::service_fn(|_: Request<Full<Bytes>>| {
            std::future::pending::<Result<Response<Full<Bytes>>, BoxError>>()
        });
        let service = ServiceBuilder::new().layer(layer).service(never);
        for _ in 0..4 {
            tokio::spawn(service.clone().oneshot(chat()));
        }
    });
    let survivor = runtime();
    survivor.block_on(async {
        let books = RedisBooks::connect(&url).await.unwrap().with_hold(HOLD);
        let layer = BudgetLayer::configured_with_redis(&config(1.0), books).unwrap();
        reserved_becomes(&layer, WORST * 4, Duration::from_secs(2)).await;
        // Renewed while the calls run: still held well past one hold.
        tokio::time::sleep(HOLD + HOLD / 2).await;
        reserved_becomes(&layer, WORST * 4, Duration::ZERO).await;

        doomed.shutdown_background();
        let died = std::time::Instant::now();
        // Its last renewal was at most a sixth of a hold ago; the money comes back within a
        // hold of it.
        reserved_becomes(
            &layer,
            Usd::ZERO,
            HOLD + HOLD / 6 + Duration::from_millis(500),
        )
        .await;
        assert!(
            died.elapsed() >= HOLD - HOLD / 6,
            "not before the hold ran out"
        );
        assert_eq!(
            layer.snapshot()[0].spent.usd,
            Usd::ZERO,
            "nothing it settled"
        );
        println!(
            "the dead replica's reservations came back {:?} after it died",
            died.elapsed()
        );
    });
}

#[tokio::test]
async fn amounts_past_two_to_the_53_picodollars_are_exact() {
    let server = RedisServer::start(&[]);
    // $10M is 10^19 picodollars: far past the 2^53 (9.007 × 10^15) a Lua number holds exactly.
    let limit = Usd::from_dollars(10_000_000.0).unwrap();
    assert_eq!(limit.picos(), 10_000_000_000_000_000_000);
    let seeded = limit
        .saturating_sub(WORST)
        .saturating_sub(Usd::from_picos(1));
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let slot = tollgate_budget::Window::MONTH.slot_at(now);
    let client = redis::Client::open(server.url()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("HSET")
        .arg(format!("{{tollgate:budget}}:overall:spend:{slot}"))
        .arg("usd")
        .arg(seeded.picos().to_string())
        .arg("tok")
        .arg("0")
        .query_async(&mut conn)
        .await
        .unwrap();

    let books = RedisBooks::connect(&server.url()).await.unwrap();
    let layer = BudgetLayer::configured_with_redis(&config(10_000_000.0), books).unwrap();
    layer.flush().await.unwrap();
    assert_eq!(
        layer.snapshot()[0].spent.usd,
        seeded,
        "read to the picodollar"
    );
    let answer = tower::service_fn(|_: Request<Full<Bytes>>| async {
        Ok::<_, BoxError>(Response::new(Full::new(Bytes::new())))
    });
    let service = ServiceBuilder::new().layer(layer.clone()).service(answer);
    // One worst case fits with a picodollar to spare; then not even one more.
    service.clone().oneshot(chat()).await.expect("fits exactly");
    let refused = service
        .oneshot(chat())
        .await
        .expect_err("one picodollar short");
    let refused = refused
        .downcast_ref::<BudgetExceeded>()
        .expect("over budget");
    let (tollgate_budget::Amount::Usd(spent), tollgate_budget::Amount::Usd(reserved)) =
        (refused.spent, refused.reserved)
    else {
        panic!("a dollar refusal: {refused}");
    };
    // The first call is spent or still reserved, depending on whether its settlement was sent.
    assert_eq!(
        spent.saturating_add(reserved),
        limit.saturating_sub(Usd::from_picos(1))
    );
    layer.flush().await.unwrap();
    assert_eq!(
        layer.snapshot()[0].spent.usd,
        limit.saturating_sub(Usd::from_picos(1))
    );
}
