//! A `[budget]` section: the stack prices each call from its usage and refuses, before any
//! upstream call, one whose worst case does not fit what is left. Over the in-process
//! simulator, paused time.

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::json;
use tollgate::budget::BudgetExceeded;
use tollgate::{LlmStack, StackConfig};
use tollgate_core::BoxError;
use tollgate_sim::{SimConfig, SimService};
use tower::ServiceExt;

fn ask(max_tokens: u32) -> Request<Full<Bytes>> {
    let body = json!({"model": "gpt-4o-mini", "max_tokens": max_tokens,
        "messages": [{"role": "user", "content": "Say something."}]});
    Request::post("https://api.openai.com/v1/chat/completions")
        .header("authorization", "Bearer sk-budget")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

#[tokio::test(start_paused = true)]
async fn a_budget_section_prices_calls_and_refuses_the_one_that_does_not_fit() {
    let sim = SimService::new(
        SimConfig::from_toml("[output]\nmin_tokens = 100\nmax_tokens = 100\n").unwrap(),
    )
    .unwrap();
    // gpt-4o-mini: $0.60 per million output tokens; 100 output tokens a call cost about
    // $0.00006: a tenth of a cent lets about 15 calls through.
    let config = StackConfig::from_toml(
        r#"
        preset = "balanced"
        [budget]
        [[budget.budgets]]
        name = "everything"
        usd = 0.001
        window = "day"
        "#,
    )
    .unwrap();
    let stack = LlmStack::new(&config).unwrap();
    let client = tower::ServiceBuilder::new()
        .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
        .service(sim.clone());
    let (llm, handle) = stack.service(client);
    let budget = handle.budget.clone().expect("a budget layer");
    let mut answered = 0;
    let refusal = loop {
        match llm.clone().oneshot(ask(100)).await {
            Ok(response) => {
                assert_eq!(response.status(), 200);
                response.into_body().collect().await.unwrap();
                answered += 1;
                assert!(answered < 100, "the budget never refused");
            }
            Err(error) => break error,
        }
    };
    let exceeded = refusal
        .downcast_ref::<BudgetExceeded>()
        .unwrap_or_else(|| panic!("a BudgetExceeded, not {refusal}"));
    assert_eq!(exceeded.budget, "everything");
    assert_eq!(
        sim.stats().received,
        answered,
        "the refused call never reached the provider"
    );
    let snapshot = &budget.snapshot()[0];
    let spent = snapshot.spent.usd.as_dollars_f64();
    assert!(spent > 0.0 && spent <= 0.001, "spent {spent}");
    assert!(answered >= 10, "{answered} calls for a tenth of a cent");
}
