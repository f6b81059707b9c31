//! Tenants and budgets through a gateway process over loopback: after a mixed run (two
//! tenants, two model groups, JSON and streamed answers of random lengths), `/admin/spend`
//! reports what the provider counted times its prices, to the cent.

mod support;

use http::StatusCode;
use serde_json::json;
use tollgate_budget::{PriceTable, Usd};
use tollgate_core::{Provider, Usage};
use tollgate_sim::{Sim, SimConfig};

use support::{Proxy, call, get, send};

const KEY: &str = "sk-budgets-51aa";
const ADMIN: &str = "adm-budgets-0c4f";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_spend_is_the_providers_usage_times_its_prices_after_a_mixed_run() {
    let sim = Sim::start(
        SimConfig::from_toml(&format!(
            "seed = 11\n[latency]\ntime_to_first_token = \"2ms\"\n\
             [output]\nmin_tokens = 3\nmax_tokens = 60\n\
             [[keys]]\nkey = \"{KEY}\"\nname = \"account\"\n"
        ))
        .unwrap(),
    )
    .await
    .unwrap();
    let config = format!(
        r#"[server]
admin_token_env = "TG_BUDGET_ADMIN"
[stack]
preset = "balanced"
[stack.budget]
[[stack.budget.budgets]]
name = "everything"
usd = 100.0
window = "day"
[[tenants]]
name = "alpha"
key_env = "TG_KEY_ALPHA"
budget_usd_per_day = 50.0
[[tenants]]
name = "beta"
key_env = "TG_KEY_BETA"
budget_usd_per_month = 50.0
[[models]]
name = "chat"
[[models.deployments]]
provider = "openai"
base_url = "{sim}"
key_env = "TG_BUDGET_KEY"
model = "gpt-4o-mini"
[[models]]
name = "smart"
[[models.deployments]]
provider = "openai"
base_url = "{sim}"
key_env = "TG_BUDGET_KEY"
model = "gpt-4o"
"#,
        sim = sim.url()
    );
    let proxy = Proxy::start_with_env(
        &config,
        &[
            ("TG_BUDGET_KEY", KEY),
            ("TG_BUDGET_ADMIN", ADMIN),
            ("TG_KEY_ALPHA", "tg-alpha-7e"),
            ("TG_KEY_BETA", "tg-beta-3d"),
        ],
    );
    for i in 0..40u32 {
        let tenant = if i % 2 == 0 {
            "tg-alpha-7e"
        } else {
            "tg-beta-3d"
        };
        let model = if i % 3 == 0 { "smart" } else { "chat" };
        let stream = i % 4 < 2;
        let mut body = json!({"model": model, "max_tokens": 20 + i,
            "messages": [{"role": "user", "content": format!("Question number {i}?")}]});
        if stream {
            body["stream"] = json!(true);
            body["stream_options"] = json!({"include_usage": true});
        }
        let answer = call(
            &proxy,
            "/v1/chat/completions",
            Some(("authorization", format!("Bearer {tenant}"))),
            &body,
        )
        .await;
        assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    }
    // What the provider counted, at the shipped prices.
    let prices = PriceTable::shipped();
    let log = sim.log();
    assert_eq!(log.len(), 40);
    let expected = log.iter().fold(Usd::ZERO, |sum, e| {
        let model = e.model.as_deref().unwrap();
        let price = prices.lookup(Provider::OpenAi, model).unwrap();
        let mut usage = Usage::new(e.input_tokens, e.output_tokens);
        usage.cache_read_input_tokens = e.cached_input_tokens;
        sum + price.cost(&usage)
    });
    let mut request = get(&format!("{}/admin/spend", proxy.url));
    request.headers_mut().insert(
        http::header::AUTHORIZATION,
        format!("Bearer {ADMIN}").parse().unwrap(),
    );
    let spend = send(request).await.json();
    let budgets = spend["budgets"].as_array().unwrap();
    let spent = |name: &str| {
        let budget = budgets
            .iter()
            .find(|b| b["name"] == name)
            .unwrap_or_else(|| panic!("no {name} in {spend}"));
        assert_eq!(
            budget["reserved"]["usd"], 0.0,
            "nothing in flight: {budget}"
        );
        budget["spent"]["usd"].as_f64().unwrap()
    };
    let total = spent("everything");
    let expected = expected.as_dollars_f64();
    println!(
        "40 calls: /admin/spend says ${total:.6}, the provider's counts × prices ${expected:.6}"
    );
    assert!(
        (total - expected).abs() < 0.005,
        "to the cent: {total} vs {expected}"
    );
    assert!(
        (total - expected).abs() < 1e-9,
        "exactly, in fact: {total} vs {expected}"
    );
    let by_tenant = spent("tenant-alpha-day") + spent("tenant-beta-month");
    assert!(
        (by_tenant - total).abs() < 1e-9,
        "the tenants' spend adds up to the total"
    );
    proxy.assert_no_secret_logged();
}
