//! Done when: spend written to a redb file is the same, to the picodollar, after the layer and
//! the store are dropped and the file is opened again; and past windows are pruned from it.
#![cfg(feature = "redb")]

use std::time::{Duration, UNIX_EPOCH};

use tollgate_budget::{
    BudgetConfig, BudgetLayer, BudgetSpec, CalendarWindow, RedbStore, Spend, SpendStore, Usd,
};
use tollgate_core::clock::ManualClock;
use tollgate_core::{EndpointKind, LlmRequest, Provider};
use tower::{Layer, ServiceExt};

/// 2025-03-15T12:00:00Z.
const MID_MARCH: u64 = 1_742_040_000;

fn config() -> BudgetConfig {
    BudgetConfig {
        budgets: vec![
            BudgetSpec {
                name: "month".into(),
                usd: Some(100.0),
                window: Some(CalendarWindow::Month),
                ..BudgetSpec::default()
            },
            BudgetSpec {
                name: "day".into(),
                usd: Some(10.0),
                tokens: Some(10_000_000),
                window: Some(CalendarWindow::Day),
                ..BudgetSpec::default()
            },
        ],
        ..BudgetConfig::default()
    }
}

/// A call to an upstream that answers 200 with no body the layer can read usage from (no
/// `ClassifyLayer`): charged its worst case at once.
async fn call(layer: &BudgetLayer, input: u32, output: u32) {
    let service = layer.layer(tower::service_fn(|_: http::Request<()>| async {
        Ok::<_, std::convert::Infallible>(http::Response::new(()))
    }));
    let mut llm = LlmRequest::new(Provider::Anthropic, EndpointKind::Messages);
    llm.model = Some("claude-3-5-haiku-20241022".into());
    llm.input_tokens_estimate = input;
    llm.max_output_tokens = Some(output);
    let mut request = http::Request::new(());
    request.extensions_mut().insert(llm);
    service.oneshot(request).await.unwrap();
}

fn spent(layer: &BudgetLayer) -> Vec<(String, Spend)> {
    layer
        .snapshot()
        .into_iter()
        .map(|b| (b.name, b.spent))
        .collect()
}

#[tokio::test]
async fn a_restart_keeps_the_spend_to_the_picodollar() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("spend.redb");
    let clock = ManualClock::new(UNIX_EPOCH + Duration::from_secs(MID_MARCH));

    let before = {
        let layer =
            BudgetLayer::configured_with(&config(), RedbStore::open(&path).unwrap(), clock.clone())
                .unwrap();
        for i in 0..25 {
            call(&layer, 1_000 + i * 37, 100 + i * 11).await;
        }
        spent(&layer)
    };
    assert!(before[0].1.usd > Usd::ZERO);
    assert_eq!(before[0].1, before[1].1);

    let layer =
        BudgetLayer::configured_with(&config(), RedbStore::open(&path).unwrap(), clock.clone())
            .unwrap();
    assert_eq!(spent(&layer), before, "the same spend after a restart");

    // The next day, the day budget starts from nothing, the month keeps its spend, and the
    // first charge of the new day prunes yesterday's row from the file.
    clock.advance(Duration::from_secs(86_400));
    assert_eq!(spent(&layer)[1].1, Spend::ZERO);
    assert_eq!(spent(&layer)[0].1, before[0].1);
    call(&layer, 1_000, 100).await;
    drop(layer);
    let store = RedbStore::open(&path).unwrap();
    assert_eq!(store.load("day").unwrap().len(), 1, "yesterday pruned");
    assert_eq!(store.load("month").unwrap().len(), 1);
}
