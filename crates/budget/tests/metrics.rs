//! With the `metrics` feature the budget layer reports what calls were charged (by tenant,
//! provider and model), what each budget has left, its refusals, and each window in which it
//! passed its soft threshold — once, not on every call past it.
#![cfg(feature = "metrics")]

use std::collections::BTreeMap;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use metrics_util::debugging::DebuggingRecorder;
use tollgate_budget::{
    BudgetConfig, BudgetExceeded, BudgetLayer, BudgetScope, BudgetSpec, CalendarWindow,
    MemoryStore, Tenant,
};
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::clock::ManualClock;
use tollgate_core::{EndpointKind, LlmRequest, Provider};
use tower::{Layer, ServiceExt};
use tower_test::mock;

type Mock = mock::Mock<Request<Full<Bytes>>, Response<Full<Bytes>>>;
type Handle = mock::Handle<Request<Full<Bytes>>, Response<Full<Bytes>>>;

/// A gpt-4o call of 1,000 input tokens capped at 500 output: $0.0075 at worst.
fn chat(tenant: &str) -> Request<Full<Bytes>> {
    let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
    llm.model = Some("gpt-4o".into());
    llm.input_tokens_estimate = 1_000;
    llm.max_output_tokens = Some(500);
    let mut request = Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::new(Bytes::new()))
        .unwrap();
    request.extensions_mut().insert(llm);
    request.extensions_mut().insert(Tenant::new(tenant));
    request
}

/// An answer that used all of it: $0.0075.
fn answer() -> Response<Full<Bytes>> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from_static(
            br#"{"object":"chat.completion","choices":[],"usage":{"prompt_tokens":1000,"completion_tokens":500,"total_tokens":1500}}"#,
        )))
        .unwrap()
}

async fn call(layer: &BudgetLayer, tenant: &str) -> Result<(), tollgate_core::BoxError> {
    let (service, mut handle): (Mock, Handle) = mock::pair();
    let service = layer.layer(ClassifyLayer::new().layer(service));
    handle.allow(1);
    let responding = tokio::spawn(async move {
        if let Some((_, send)) = handle.next_request().await {
            send.send_response(answer());
        }
    });
    let result = service.oneshot(chat(tenant)).await;
    let result = match result {
        Ok(response) => {
            response.into_body().collect().await?;
            Ok(())
        }
        Err(error) => Err(error),
    };
    responding.abort();
    result
}

fn recorded(snapshotter: &metrics_util::debugging::Snapshotter) -> BTreeMap<String, String> {
    tollgate_testkit::metrics::recorded(snapshotter, &["tollgate_spend_", "tollgate_budget_"])
}

#[tokio::test]
async fn spend_what_is_left_refusals_and_the_soft_threshold_once_a_window() {
    let recorder = DebuggingRecorder::new();
    let snapshotter = recorder.snapshotter();
    let _local = metrics::set_default_local_recorder(&recorder);
    let config = BudgetConfig {
        budgets: vec![BudgetSpec {
            name: "acme-daily".into(),
            scope: BudgetScope::Tenant("acme".into()),
            usd: Some(0.02),
            window: Some(CalendarWindow::Day),
            soft_threshold: Some(0.5),
            ..BudgetSpec::default()
        }],
        input_margin_percent: 0,
        ..BudgetConfig::default()
    };
    let layer = BudgetLayer::configured_with(
        &config,
        MemoryStore::new(),
        ManualClock::new(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_738_300_000)),
    )
    .unwrap();

    // (One snapshot, at the end: the debugging recorder's snapshots drain what they read.)
    call(&layer, "acme").await.unwrap();
    // Past half of $0.02: the warning, once.
    call(&layer, "acme").await.unwrap();
    // Another tenant is labelled `other`, and counts in no budget of acme's.
    call(&layer, "globex").await.unwrap();
    // A third call of acme's cannot fit: $0.015 spent, $0.0075 more at worst.
    let refused = call(&layer, "acme").await.unwrap_err();
    assert!(refused.is::<BudgetExceeded>(), "{refused}");
    let all = recorded(&snapshotter);
    let expect = |key: &str, value: &str| {
        assert_eq!(
            all.get(key).map(String::as_str),
            Some(value),
            "{key} in {all:#?}"
        );
    };
    expect(
        "tollgate_spend_usd_total{model=gpt-4o,provider=openai,tenant=acme}",
        "gauge 0.015",
    );
    expect(
        "tollgate_spend_usd_total{model=gpt-4o,provider=openai,tenant=other}",
        "gauge 0.0075",
    );
    expect(
        "tollgate_budget_soft_threshold_total{budget=acme-daily}",
        "counter 1",
    );
    expect(
        "tollgate_budget_refusals_total{budget=acme-daily}",
        "counter 1",
    );
    expect(
        "tollgate_budget_remaining_usd{budget=acme-daily}",
        "gauge 0.005",
    );
}
