//! Done when: 1,000 calls from 100 tasks — streamed and not, of random lengths — against the
//! simulator behind `ClassifyLayer`, never spend past the budget once reconciled, and the
//! spend equals the simulator's own token counts at the model's prices, to the picodollar.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tollgate_budget::{
    BudgetConfig, BudgetExceeded, BudgetLayer, BudgetScope, BudgetSpec, CalendarWindow, CallCost,
    ChargeBasis, Usd,
};
use tollgate_core::annotate::AnnotateLayer;
use tollgate_core::body::ObservedBody;
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::{BoxError, Provider, Usage};
use tollgate_sim::{SimBody, SimConfig, SimService};
use tower::util::BoxCloneService;
use tower::{ServiceBuilder, ServiceExt};

const TASKS: usize = 100;
const PER_TASK: usize = 10;
const BUDGET_USD: f64 = 1.0;

type Stack =
    BoxCloneService<http::Request<Full<Bytes>>, http::Response<ObservedBody<SimBody>>, BoxError>;

/// A deterministic mix: short prompts and, one in seven, a long one sharing a prefix (so the
/// simulator's prompt cache reports cached tokens); caps from 64 to 255; half streamed.
fn request(i: usize) -> http::Request<Full<Bytes>> {
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
    http::Request::post("https://api.openai.com/v1/chat/completions")
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

/// What happened to one call.
enum Sent {
    Charged(Usage),
    Refused,
}

async fn send(stack: Stack, layer: BudgetLayer, i: usize) -> Sent {
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
            assert!(
                charged.spend.usd <= cost.reserved().usd,
                "call {i} within its worst case"
            );
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
async fn a_thousand_concurrent_calls_never_spend_past_the_budget_and_cost_exactly_their_usage() {
    let sim = simulator();
    let config = BudgetConfig {
        budgets: vec![BudgetSpec {
            name: "overall".into(),
            scope: BudgetScope::Overall,
            usd: Some(BUDGET_USD),
            window: Some(CalendarWindow::Month),
            ..BudgetSpec::default()
        }],
        ..BudgetConfig::default()
    };
    let layer = BudgetLayer::configured(&config).unwrap();
    let stack: Stack = BoxCloneService::new(
        ServiceBuilder::new()
            .layer(AnnotateLayer::new().with_provider(Provider::OpenAi))
            .layer(layer.clone())
            .layer(ClassifyLayer::new())
            .service(sim.clone()),
    );
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        let (stack, layer) = (stack.clone(), layer.clone());
        tasks.push(tokio::spawn(async move {
            let mut sent = Vec::new();
            for k in 0..PER_TASK {
                sent.push(send(stack.clone(), layer.clone(), k * TASKS + t).await);
                tokio::time::sleep(Duration::from_millis((t as u64 * 7 + k as u64) % 50)).await;
            }
            sent
        }));
    }
    let mut charged = Vec::new();
    let mut refused = 0;
    for task in tasks {
        for sent in task.await.expect("no panic") {
            match sent {
                Sent::Charged(usage) => charged.push(usage),
                Sent::Refused => refused += 1,
            }
        }
    }

    let snapshot = &layer.snapshot()[0];
    let limit = Usd::from_dollars(BUDGET_USD).unwrap();
    assert!(snapshot.spent.usd <= limit, "{}", snapshot.spent.usd);
    assert_eq!(
        snapshot.reserved.usd,
        Usd::ZERO,
        "every reservation settled"
    );
    assert!(refused > 0, "the budget was reached");
    assert!(charged.len() > 100, "{} calls charged", charged.len());

    // The simulator's own counts, at gpt-4o's prices.
    let stats = sim.stats();
    assert_eq!(stats.accepted as usize, charged.len());
    let output: u64 = stats.keys.values().map(|k| k.output_tokens).sum();
    let mut usage = Usage::new(stats.input_tokens, output);
    usage.cache_read_input_tokens = stats.cached_input_tokens;
    assert!(
        stats.cached_input_tokens > 0,
        "some input was read from the cache"
    );
    let price = layer.prices().lookup(Provider::OpenAi, "gpt-4o").unwrap();
    assert_eq!(snapshot.spent.usd, price.cost(&usage), "to the picodollar");
    assert_eq!(snapshot.spent.tokens, usage.total_tokens());
    println!(
        "{} calls charged {} ({} of the budget), {refused} refused, {} cached input tokens",
        charged.len(),
        snapshot.spent.usd,
        limit,
        stats.cached_input_tokens
    );
}
