//! The budget layer's Service contract, against `tower_test::mock` behind `ClassifyLayer` (so
//! the response carries an `EndOfStream`), with the calendar on a manual clock.

use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use tollgate_budget::{
    Amount, BudgetConfig, BudgetExceeded, BudgetLayer, BudgetScope, BudgetSpec, CalendarWindow,
    CallCost, ChargeBasis, MemoryStore, PriceTable, Spend, Tenant, Usd,
};
use tollgate_core::classify::ClassifyLayer;
use tollgate_core::clock::ManualClock;
use tollgate_core::{EndpointKind, LlmRequest, Provider, Usage};
use tower::{Layer, ServiceExt};
use tower_test::mock;

type Mock = mock::Mock<Request<Full<Bytes>>, Response<Full<Bytes>>>;
type Handle = mock::Handle<Request<Full<Bytes>>, Response<Full<Bytes>>>;

/// 2025-01-31T23:59:00+02:00.
const LAST_MINUTE_OF_JANUARY: u64 = 1_738_360_740;

fn clock() -> ManualClock {
    ManualClock::new(UNIX_EPOCH + Duration::from_secs(LAST_MINUTE_OF_JANUARY))
}

fn budget(name: &str, scope: BudgetScope, usd: f64, window: CalendarWindow) -> BudgetSpec {
    BudgetSpec {
        name: name.into(),
        scope,
        usd: Some(usd),
        window: Some(window),
        utc_offset: Some("+02:00".into()),
        ..BudgetSpec::default()
    }
}

fn layer(budgets: Vec<BudgetSpec>, clock: ManualClock) -> BudgetLayer {
    let config = BudgetConfig {
        budgets,
        input_margin_percent: 0,
        ..BudgetConfig::default()
    };
    BudgetLayer::configured_with(&config, MemoryStore::new(), clock).unwrap()
}

/// A gpt-4o chat call of 1,000 input tokens capped at 500 output: a worst case of
/// 1,000 × $2.50/M + 500 × $10/M = $0.0075.
fn chat(tenant: Option<&str>) -> Request<Full<Bytes>> {
    let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
    llm.model = Some("gpt-4o".into());
    llm.input_tokens_estimate = 1_000;
    llm.max_output_tokens = Some(500);
    llm.stream = true;
    let mut request = Request::post("https://api.openai.com/v1/chat/completions")
        .body(Full::new(Bytes::new()))
        .unwrap();
    request.extensions_mut().insert(llm);
    if let Some(tenant) = tenant {
        request.extensions_mut().insert(Tenant::new(tenant));
    }
    request
}

const WORST: Usd = Usd::from_micros(7_500);

fn stream_with_usage(input: u64, cached: u64, output: u64) -> Response<Full<Bytes>> {
    let body = format!(
        "data: {{\"object\":\"chat.completion.chunk\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"hi\"}}}}]}}\n\n\
         data: {{\"object\":\"chat.completion.chunk\",\"choices\":[],\"usage\":{{\"prompt_tokens\":{input},\"completion_tokens\":{output},\"total_tokens\":{},\"prompt_tokens_details\":{{\"cached_tokens\":{cached}}}}}}}\n\n\
         data: [DONE]\n\n",
        input + output
    );
    Response::builder()
        .header("content-type", "text/event-stream")
        .body(Full::new(Bytes::from(body)))
        .unwrap()
}

type Stack = tollgate_budget::Budget<tollgate_core::classify::Classify<Mock>>;

fn stack(layer: &BudgetLayer) -> (Stack, Handle) {
    let (service, handle): (Mock, Handle) = mock::pair();
    (layer.layer(ClassifyLayer::new().layer(service)), handle)
}

fn spent(layer: &BudgetLayer, name: &str) -> Spend {
    layer
        .snapshot()
        .into_iter()
        .find(|b| b.name == name)
        .unwrap()
        .spent
}

fn reserved(layer: &BudgetLayer, name: &str) -> Spend {
    layer
        .snapshot()
        .into_iter()
        .find(|b| b.name == name)
        .unwrap()
        .reserved
}

#[tokio::test]
async fn a_call_that_does_not_fit_is_refused_before_the_inner_service_sees_it() {
    let layer = layer(
        vec![budget(
            "tiny",
            BudgetScope::Overall,
            0.005,
            CalendarWindow::Day,
        )],
        clock(),
    );
    let (service, mut handle) = stack(&layer);
    handle.allow(1);
    let error = service.oneshot(chat(None)).await.unwrap_err();
    let refusal = error
        .downcast_ref::<BudgetExceeded>()
        .expect("a budget refusal");
    assert_eq!(refusal.budget, "tiny");
    assert_eq!(refusal.limit, Amount::Usd(Usd::from_micros(5_000)));
    assert_eq!(refusal.requested, Amount::Usd(WORST));
    assert_eq!(
        refusal.to_string(),
        "budget `tiny` (overall) cannot hold this call: $0.00 of $0.005 spent and $0.00 \
         reserved, the call may cost up to $0.0075; it resets at 2025-02-01T00:00:00+02:00"
    );
    assert_eq!(reserved(&layer, "tiny"), Spend::ZERO);
    // The inner service saw nothing.
    tokio::task::yield_now().await;
    assert!(
        matches!(futures_poll_once(handle.next_request()), None | Some(None)),
        "no request reached the inner service"
    );
}

/// Polls a future once, without waiting.
fn futures_poll_once<F: std::future::Future>(future: F) -> Option<F::Output> {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => Some(output),
        std::task::Poll::Pending => None,
    }
}

#[tokio::test]
async fn a_stream_holds_its_worst_case_until_it_ends_then_is_charged_its_usage() {
    let layer = layer(
        vec![budget(
            "daily",
            BudgetScope::Overall,
            25.0,
            CalendarWindow::Day,
        )],
        clock(),
    );
    let (service, mut handle) = stack(&layer);
    let call = tokio::spawn(service.oneshot(chat(None)));
    let (_, respond) = handle.next_request().await.unwrap();
    assert_eq!(reserved(&layer, "daily").usd, WORST, "held while in flight");
    respond.send_response(stream_with_usage(1_000, 800, 120));
    let response = call.await.unwrap().unwrap();
    let cost = response.extensions().get::<CallCost>().unwrap().clone();
    assert_eq!(cost.reserved().usd, WORST);
    assert_eq!(cost.charged(), None, "not before the body ends");
    assert_eq!(
        reserved(&layer, "daily").usd,
        WORST,
        "held until the last byte"
    );
    response.into_body().collect().await.unwrap();
    // 200 plain × $2.50/M + 800 cached × $1.25/M + 120 × $10/M = $0.0005 + $0.001 + $0.0012.
    let charged = cost.charged().unwrap();
    assert_eq!(charged.basis, ChargeBasis::Usage);
    assert_eq!(charged.spend.usd, Usd::from_micros(2_700));
    assert_eq!(charged.spend.tokens, 1_120);
    let mut usage = Usage::new(1_000, 120);
    usage.cache_read_input_tokens = 800;
    assert_eq!(charged.usage, Some(usage));
    assert_eq!(spent(&layer, "daily").usd, Usd::from_micros(2_700));
    assert_eq!(reserved(&layer, "daily"), Spend::ZERO);
}

#[tokio::test]
async fn an_error_status_releases_the_reservation() {
    let layer = layer(
        vec![budget(
            "daily",
            BudgetScope::Overall,
            25.0,
            CalendarWindow::Day,
        )],
        clock(),
    );
    let (service, mut handle) = stack(&layer);
    let call = tokio::spawn(service.oneshot(chat(None)));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(
        Response::builder()
            .status(429)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(
                br#"{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}"#,
            )))
            .unwrap(),
    );
    let response = call.await.unwrap().unwrap();
    let charged = response.extensions().get::<CallCost>().unwrap().charged();
    assert_eq!(charged.unwrap().basis, ChargeBasis::Released);
    assert_eq!(spent(&layer, "daily"), Spend::ZERO);
    assert_eq!(reserved(&layer, "daily"), Spend::ZERO);
}

#[tokio::test]
async fn a_body_dropped_half_way_is_charged_its_worst_case() {
    let layer = layer(
        vec![budget(
            "daily",
            BudgetScope::Overall,
            25.0,
            CalendarWindow::Day,
        )],
        clock(),
    );
    let (service, mut handle) = stack(&layer);
    let call = tokio::spawn(service.oneshot(chat(None)));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(Full::new(Bytes::from_static(b"data: {\"choices\":[]}\n\n")))
            .unwrap(),
    );
    let response = call.await.unwrap().unwrap();
    drop(response);
    assert_eq!(spent(&layer, "daily").usd, WORST);
    assert_eq!(reserved(&layer, "daily"), Spend::ZERO);
}

#[tokio::test]
async fn a_call_failing_to_connect_is_released_and_one_dropped_in_flight_is_charged() {
    let layer = layer(
        vec![budget(
            "daily",
            BudgetScope::Overall,
            25.0,
            CalendarWindow::Day,
        )],
        clock(),
    );
    // Dropped before it was ever polled: never sent.
    let (service, _handle) = stack(&layer);
    drop(service.oneshot(chat(None)));
    assert_eq!(reserved(&layer, "daily"), Spend::ZERO);
    assert_eq!(spent(&layer, "daily"), Spend::ZERO);

    // Sent, then given up while waiting for the answer: the provider may bill it.
    let (service, mut handle) = stack(&layer);
    let call = tokio::spawn(service.oneshot(chat(None)));
    let (_, _respond) = handle.next_request().await.unwrap();
    call.abort();
    let _ = call.await;
    assert_eq!(spent(&layer, "daily").usd, WORST);

    // A local refusal below (a rate limit): never left.
    let (service, mut handle) = stack(&layer);
    let call = tokio::spawn(service.oneshot(chat(None)));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_error(tollgate_core::error::RateLimited {
        dimension: tollgate_core::RateLimitDimension::Requests,
        retry_after: None,
    });
    call.await.unwrap().unwrap_err();
    assert_eq!(spent(&layer, "daily").usd, WORST, "unchanged");
    assert_eq!(reserved(&layer, "daily"), Spend::ZERO);
}

#[tokio::test]
async fn a_call_reserves_in_every_budget_that_applies_and_a_tenant_budget_counts_only_its_tenant() {
    let layer = layer(
        vec![
            budget(
                "acme",
                BudgetScope::Tenant("acme".into()),
                0.01,
                CalendarWindow::Day,
            ),
            budget(
                "gpt-4o",
                BudgetScope::Model("gpt-4o".into()),
                25.0,
                CalendarWindow::Day,
            ),
            budget(
                "mini",
                BudgetScope::Model("gpt-4o-mini".into()),
                25.0,
                CalendarWindow::Day,
            ),
        ],
        clock(),
    );
    let (service, mut handle) = stack(&layer);
    let call = tokio::spawn(service.oneshot(chat(Some("acme"))));
    let (_, respond) = handle.next_request().await.unwrap();
    assert_eq!(reserved(&layer, "acme").usd, WORST);
    assert_eq!(reserved(&layer, "gpt-4o").usd, WORST);
    assert_eq!(reserved(&layer, "mini"), Spend::ZERO);

    // A second acme call does not fit beside the first one's worst case ($0.015 > $0.01):
    // refused, and the model budget it had already reserved in is given back.
    let (service, _handle2) = stack(&layer);
    let error = service.oneshot(chat(Some("acme"))).await.unwrap_err();
    assert_eq!(
        error.downcast_ref::<BudgetExceeded>().unwrap().budget,
        "acme"
    );
    assert_eq!(reserved(&layer, "gpt-4o").usd, WORST);

    // Another tenant is not counted in acme's budget.
    let (service, mut other) = stack(&layer);
    let other_call = tokio::spawn(service.oneshot(chat(Some("globex"))));
    let (_, other_respond) = other.next_request().await.unwrap();
    assert_eq!(reserved(&layer, "acme").usd, WORST);
    assert_eq!(reserved(&layer, "gpt-4o").usd, WORST * 2);

    respond.send_response(stream_with_usage(1_000, 0, 100));
    other_respond.send_response(stream_with_usage(1_000, 0, 100));
    for call in [call, other_call] {
        call.await
            .unwrap()
            .unwrap()
            .into_body()
            .collect()
            .await
            .unwrap();
    }
    // 1,000 × $2.50/M + 100 × $10/M = $0.0035 each.
    assert_eq!(spent(&layer, "acme").usd, Usd::from_micros(3_500));
    assert_eq!(spent(&layer, "gpt-4o").usd, Usd::from_micros(7_000));
}

#[tokio::test]
async fn calendar_windows_turn_at_midnight_at_their_offset() {
    let clock = clock();
    let layer = layer(
        vec![
            budget("day", BudgetScope::Overall, 25.0, CalendarWindow::Day),
            budget("month", BudgetScope::Overall, 25.0, CalendarWindow::Month),
            BudgetSpec {
                utc_offset: None,
                ..budget(
                    "utc-month",
                    BudgetScope::Overall,
                    25.0,
                    CalendarWindow::Month,
                )
            },
        ],
        clock.clone(),
    );
    let (service, mut handle) = stack(&layer);
    let call = tokio::spawn(service.oneshot(chat(None)));
    let (_, respond) = handle.next_request().await.unwrap();
    respond.send_response(stream_with_usage(1_000, 0, 100));
    call.await
        .unwrap()
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    for name in ["day", "month", "utc-month"] {
        assert_eq!(spent(&layer, name).usd, Usd::from_micros(3_500), "{name}");
    }
    // Two minutes later it is 1 February at +02:00, still 31 January in UTC.
    clock.advance(Duration::from_secs(120));
    assert_eq!(spent(&layer, "day"), Spend::ZERO);
    assert_eq!(spent(&layer, "month"), Spend::ZERO);
    assert_eq!(spent(&layer, "utc-month").usd, Usd::from_micros(3_500));
    let resets = layer.snapshot()[0].resets_at;
    assert_eq!(
        resets,
        UNIX_EPOCH + Duration::from_secs(LAST_MINUTE_OF_JANUARY + 60 + 86_400)
    );
    // And at midnight UTC, the UTC month turns too.
    clock.advance(Duration::from_secs(2 * 3_600));
    assert_eq!(spent(&layer, "utc-month"), Spend::ZERO);
}

#[test]
fn the_default_price_table_is_the_shipped_one() {
    let layer = BudgetLayer::configured(&BudgetConfig::default()).unwrap();
    assert_eq!(
        layer.prices().lookup(Provider::OpenAi, "gpt-4o"),
        PriceTable::shipped().lookup(Provider::OpenAi, "gpt-4o")
    );
}

#[tokio::test]
async fn the_worked_example_of_the_guide_reserves_a_cent_and_charges_its_usage() {
    let layer = BudgetLayer::configured_with(
        &BudgetConfig {
            budgets: vec![budget(
                "acme-daily",
                BudgetScope::Tenant("acme".into()),
                25.0,
                CalendarWindow::Day,
            )],
            ..BudgetConfig::default()
        },
        MemoryStore::new(),
        clock(),
    )
    .unwrap();
    let (service, mut handle) = stack(&layer);
    let mut request = chat(Some("acme"));
    request
        .extensions_mut()
        .get_mut::<LlmRequest>()
        .unwrap()
        .max_output_tokens = Some(725);
    let call = tokio::spawn(service.oneshot(request));
    let (_, respond) = handle.next_request().await.unwrap();
    assert_eq!(reserved(&layer, "acme-daily").usd, Usd::from_cents(1));
    respond.send_response(stream_with_usage(1_020, 800, 310));
    let response = call.await.unwrap().unwrap();
    let cost = response.extensions().get::<CallCost>().unwrap().clone();
    response.into_body().collect().await.unwrap();
    assert_eq!(cost.charged().unwrap().spend.usd, Usd::from_micros(4_650));
    assert_eq!(cost.charged().unwrap().spend.usd.to_string(), "$0.00465");
    assert_eq!(spent(&layer, "acme-daily").usd, Usd::from_micros(4_650));
}
