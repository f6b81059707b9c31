//! A fleet: three `tollgate proxy` processes behind one `[redis]`, in front of one key of a
//! `tollgate sim` process, with the load spread across them as a load balancer would. Offered
//! three times the key's limit, the three together keep to it: the provider never refuses a
//! call (its own count), no client sees a 429, and each replica's clients are served alike.

mod support;

use std::time::{Duration, Instant};

use http::StatusCode;
use serde_json::json;
use tokio::task::JoinSet;
use tollgate_testkit::redis::RedisServer;

use support::{Proxy, SimProcess, post, send};

/// One fleet at a time: each test runs three gateways, a simulator and a Redis in real time,
/// and the fairness and pace they measure mean nothing while another fleet takes the cores.
static ONE_FLEET: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const UPSTREAM: &str = "sk-fleet-2b7e";
const CLIENT: &str = "tg-fleet-client";
/// The key's limit: ten calls a second.
const PER_MINUTE: u64 = 600;

fn gateway(sim: &str, redis: &str) -> String {
    format!(
        r#"[server]
api_keys = ["{CLIENT}"]
[redis]
url = "{redis}"
local_share = 0.34
[stack]
preset = "balanced"
[[models]]
name = "chat"
[[models.deployments]]
provider = "openai"
base_url = "{sim}"
key_env = "TG_FLEET_UPSTREAM"
model = "gpt-4o-mini"
requests_per_minute = {PER_MINUTE}
"#
    )
}

/// One chat call through `url`: its status and when it ended, from `start`.
async fn chat(url: &str, i: usize) -> (StatusCode, Duration) {
    let started = Instant::now();
    let auth = format!("Bearer {CLIENT}");
    let body = json!({"model": "chat", "max_tokens": 8,
        "messages": [{"role": "user", "content": format!("Summarise document {i}.")}]});
    let answer = send(post(
        &format!("{url}/v1/chat/completions"),
        Some(("authorization", &auth)),
        &body,
    ))
    .await;
    (answer.status, started.elapsed())
}

async fn sim_stats(sim: &SimProcess) -> serde_json::Value {
    send(support::get(&format!("{}/sim/stats", sim.url)))
        .await
        .json()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_offered_three_times_the_limit_keep_to_it_together() {
    let _fleet = ONE_FLEET.lock().await;
    let redis = RedisServer::start(&[]);
    let sim = SimProcess::start(&format!(
        "seed = 9\n[latency]\ntime_to_first_token = \"5ms\"\nper_output_token = \"0ms\"\n\
         [output]\nmin_tokens = 4\nmax_tokens = 4\n\
         [[keys]]\nkey = \"{UPSTREAM}\"\nname = \"account\"\nrequests_per_minute = {PER_MINUTE}\n"
    ));
    let config = gateway(&sim.url, &redis.url());
    let replicas: Vec<Proxy> = (0..3)
        .map(|_| Proxy::start_logging(&config, &[("TG_FLEET_UPSTREAM", UPSTREAM)], "info"))
        .collect();
    let urls: Vec<String> = replicas.iter().map(|p| p.url.clone()).collect();

    // The key starts with a full minute to spend: spend it, so that what follows meets the
    // limit itself.
    let mut calls = JoinSet::new();
    for i in 0..PER_MINUTE as usize {
        let url = urls[i % 3].clone();
        calls.spawn(async move { chat(&url, i).await.0 });
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }

    // Then three times the limit, for five seconds: 30 calls a second, each to the next replica,
    // at random moments (as independent clients' calls come; calls on a fixed beat of the
    // refill would reach one replica just as each unit refills).
    let started = Instant::now();
    let offered = 3 * PER_MINUTE as usize / 60 * 5;
    let mut seed = 0x2545_f491_4f6c_dd1d_u64;
    let mut moments: Vec<Duration> = (0..offered)
        .map(|_| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            Duration::from_secs(5).mul_f64((seed >> 11) as f64 / (1u64 << 53) as f64)
        })
        .collect();
    moments.sort();
    let mut calls = JoinSet::new();
    for (i, moment) in moments.into_iter().enumerate() {
        tokio::time::sleep_until((started + moment).into()).await;
        let url = urls[i % 3].clone();
        calls.spawn(async move { (i % 3, chat(&url, PER_MINUTE as usize + i).await) });
    }
    let mut by_replica = [Vec::new(), Vec::new(), Vec::new()];
    while let Some(call) = calls.join_next().await {
        let (replica, (status, took)) = call.unwrap();
        assert_eq!(status, StatusCode::OK, "no refusal reaches a client");
        by_replica[replica].push(took);
    }
    let elapsed = started.elapsed();
    let stats = sim_stats(&sim).await;
    let accepted = stats["keys"]["account"]["requests"].as_u64().unwrap();
    let refused = stats["rejected"]
        .as_object()
        .map_or(0, |r| r.values().filter_map(|v| v.as_u64()).sum::<u64>());
    let means: Vec<f64> = by_replica
        .iter()
        .map(|t| t.iter().sum::<Duration>().as_secs_f64() / t.len() as f64)
        .collect();
    println!(
        "{offered} calls offered at 3x the limit through 3 gateways: all served in {elapsed:?} \
         (at the limit: {:?}); the provider accepted {accepted} in all and refused {refused}; \
         mean wait per replica {means:.2?} s",
        Duration::from_secs_f64(offered as f64 / (PER_MINUTE as f64 / 60.0)),
    );
    assert_eq!(refused, 0, "the provider never refused a call: {stats}");
    assert_eq!(accepted, PER_MINUTE + offered as u64);
    // Served at the key's pace, not three times it: the last call waited for its turn.
    let at_limit = offered as f64 / (PER_MINUTE as f64 / 60.0);
    assert!(
        elapsed.as_secs_f64() > 0.8 * at_limit,
        "{elapsed:?} for {offered} calls at {PER_MINUTE} a minute"
    );
    // Each replica's clients waited alike: no replica took the fleet's share.
    let (low, high) = means
        .iter()
        .fold((f64::MAX, 0f64), |(l, h), m| (l.min(*m), h.max(*m)));
    assert!(high <= 2.0 * low + 0.5, "fair shares: {means:?}");
    drop(replicas);
}

/// A tenant's daily budget of a tenth of a cent, kept by three gateways together.
fn budgeted(sim: &str, redis: &str) -> String {
    format!(
        r#"[redis]
url = "{redis}"
[stack]
preset = "balanced"
[[tenants]]
name = "research"
key_env = "TG_FLEET_TENANT"
budget_usd_per_day = 0.001
[[models]]
name = "chat"
[[models.deployments]]
provider = "openai"
base_url = "{sim}"
key_env = "TG_FLEET_UPSTREAM"
model = "gpt-4o-mini"
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_budget_kept_by_three_gateways_is_not_overspent() {
    let _fleet = ONE_FLEET.lock().await;
    let redis = RedisServer::start(&[]);
    let sim = SimProcess::start(&format!(
        "seed = 4\n[latency]\ntime_to_first_token = \"5ms\"\n\
         [output]\nmin_tokens = 10\nmax_tokens = 60\n\
         [[keys]]\nkey = \"{UPSTREAM}\"\nname = \"account\"\n"
    ));
    let config = budgeted(&sim.url, &redis.url());
    let env = [
        ("TG_FLEET_UPSTREAM", UPSTREAM),
        ("TG_FLEET_TENANT", "tg-research-1f"),
    ];
    let replicas: Vec<Proxy> = (0..3)
        .map(|_| Proxy::start_logging(&config, &env, "info"))
        .collect();
    // Twenty clients on each replica ask until each is refused.
    let mut clients = JoinSet::new();
    for c in 0..60usize {
        let url = replicas[c % 3].url.clone();
        clients.spawn(async move {
            let mut answered = 0u32;
            for i in 0.. {
                let body = json!({"model": "chat", "max_tokens": 60,
                    "messages": [{"role": "user", "content": format!("Client {c}, question {i}.")}]});
                let answer = send(post(
                    &format!("{url}/v1/chat/completions"),
                    Some(("authorization", "Bearer tg-research-1f")),
                    &body,
                ))
                .await;
                match answer.status {
                    StatusCode::OK => answered += 1,
                    StatusCode::TOO_MANY_REQUESTS => {
                        assert_eq!(answer.header("x-should-retry"), "false");
                        assert!(answer.json()["error"]["code"] == "insufficient_quota"
                            || answer.json()["error"]["type"] == "insufficient_quota",
                            "{:?}", answer.body);
                        return answered;
                    }
                    other => panic!("{other}: {:?}", answer.body),
                }
            }
            unreachable!()
        });
    }
    let mut answered = 0;
    while let Some(client) = clients.join_next().await {
        answered += client.unwrap();
    }
    // What the provider counted, at the shipped list price.
    let stats = sim_stats(&sim).await;
    let usage = &stats["keys"]["account"];
    let (input, output) = (
        usage["input_tokens"].as_u64().unwrap(),
        usage["output_tokens"].as_u64().unwrap(),
    );
    let spent = input as f64 * 0.15e-6 + output as f64 * 0.60e-6;
    println!(
        "three gateways, one tenant budget of $0.001: {answered} calls answered, the provider \
         counted {input} input and {output} output tokens: ${spent:.6}"
    );
    assert_eq!(usage["requests"].as_u64().unwrap(), answered as u64);
    assert!(answered > 10, "the budget let calls through: {answered}");
    assert!(spent <= 0.001, "not overspent: ${spent}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_requests_a_minute_hold_across_three_gateways() {
    let _fleet = ONE_FLEET.lock().await;
    let redis = RedisServer::start(&[]);
    let sim = SimProcess::start(&format!(
        "seed = 5\n[[keys]]\nkey = \"{UPSTREAM}\"\nname = \"account\"\n"
    ));
    let config = budgeted(&sim.url, &redis.url())
        .replace("budget_usd_per_day = 0.001", "requests_per_minute = 30");
    let env = [
        ("TG_FLEET_UPSTREAM", UPSTREAM),
        ("TG_FLEET_TENANT", "tg-research-1f"),
    ];
    let replicas: Vec<Proxy> = (0..3)
        .map(|_| Proxy::start_logging(&config, &env, "info"))
        .collect();
    // Ninety calls at once, thirty through each replica: the tenant's thirty a minute hold for
    // the three together, and the rest are refused at once, not to be retried.
    let mut calls = JoinSet::new();
    for i in 0..90usize {
        let url = replicas[i % 3].url.clone();
        calls.spawn(async move {
            let body = json!({"model": "chat", "max_tokens": 4,
                "messages": [{"role": "user", "content": format!("Question {i}.")}]});
            let answer = send(post(
                &format!("{url}/v1/chat/completions"),
                Some(("authorization", "Bearer tg-research-1f")),
                &body,
            ))
            .await;
            if answer.status == StatusCode::TOO_MANY_REQUESTS {
                assert_eq!(answer.header("x-should-retry"), "false");
            }
            answer.status
        });
    }
    let mut served = 0;
    while let Some(status) = calls.join_next().await {
        match status.unwrap() {
            StatusCode::OK => served += 1,
            StatusCode::TOO_MANY_REQUESTS => {}
            other => panic!("{other}"),
        }
    }
    let upstream = sim_stats(&sim).await["keys"]["account"]["requests"]
        .as_u64()
        .unwrap();
    println!("a tenant of 30 a minute through three gateways: {served} of 90 served");
    assert_eq!(upstream, served);
    assert!(
        served <= 30,
        "{served} served past the tenant's 30 a minute"
    );
    assert!(
        served >= 25,
        "the tenant's minute was shared, not cut to a third: {served}"
    );
}

/// How long a call through the fault test's gateways may take, waiting for its turn included.
const DEADLINE: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_killed_then_paused_under_three_gateways_hangs_no_call_and_limits_hold() {
    let _fleet = ONE_FLEET.lock().await;
    let mut redis = RedisServer::start(&[]);
    let sim = SimProcess::start(&format!(
        "seed = 6\n[latency]\ntime_to_first_token = \"5ms\"\nper_output_token = \"0ms\"\n\
         [output]\nmin_tokens = 4\nmax_tokens = 4\n\
         [[keys]]\nkey = \"{UPSTREAM}\"\nname = \"account\"\nrequests_per_minute = {PER_MINUTE}\n"
    ));
    let config = gateway(&sim.url, &redis.url()).replace(
        "[server]\n",
        &format!("[server]\nrequest_timeout = \"{}s\"\n", DEADLINE.as_secs()),
    );
    let replicas: Vec<Proxy> = (0..3)
        .map(|_| Proxy::start_logging(&config, &[("TG_FLEET_UPSTREAM", UPSTREAM)], "info"))
        .collect();
    let urls: Vec<String> = replicas.iter().map(|p| p.url.clone()).collect();
    // The minute the key starts with, spent.
    let mut calls = JoinSet::new();
    for i in 0..PER_MINUTE as usize {
        let url = urls[i % 3].clone();
        calls.spawn(async move { chat(&url, i).await.0 });
    }
    while let Some(status) = calls.join_next().await {
        assert_eq!(status.unwrap(), StatusCode::OK);
    }
    let before = sim_stats(&sim).await["keys"]["account"]["requests"]
        .as_u64()
        .unwrap();

    // Then 15 calls a second (one and a half times the key's limit) for 34 s, spread over the
    // three, while Redis is killed at 4 s and restarted at 14 s, then paused at 18 s and
    // resumed at 28 s.
    let started = Instant::now();
    let run = Duration::from_secs(34);
    let load = {
        let urls = urls.clone();
        tokio::spawn(async move {
            let mut calls = JoinSet::new();
            let mut ticks = tokio::time::interval(Duration::from_secs(1) / 15);
            let mut i = 0usize;
            while started.elapsed() < run {
                ticks.tick().await;
                let url = urls[i % 3].clone();
                calls.spawn(async move { chat(&url, 10_000 + i).await });
                i += 1;
            }
            let mut ended = Vec::new();
            while let Some(call) = calls.join_next().await {
                ended.push(call.unwrap());
            }
            ended
        })
    };
    let at = |secs: u64| tokio::time::sleep_until((started + Duration::from_secs(secs)).into());
    at(4).await;
    redis.kill();
    at(14).await;
    redis.restart();
    at(18).await;
    redis.pause();
    at(28).await;
    redis.resume();
    let ended = load.await.unwrap();
    let elapsed = started.elapsed();

    let stats = sim_stats(&sim).await;
    let upstream = stats["keys"]["account"]["requests"].as_u64().unwrap() - before;
    let refused_upstream = stats["rejected"]
        .as_object()
        .map_or(0, |r| r.values().filter_map(|v| v.as_u64()).sum::<u64>());
    let slowest = ended.iter().map(|(_, took)| *took).max().unwrap();
    let mut statuses = std::collections::BTreeMap::new();
    for (status, _) in &ended {
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
    }
    println!(
        "{} calls at 1.5x the limit over {elapsed:?}, Redis killed for 10 s then paused for \
         10 s: statuses {statuses:?}, slowest {slowest:?}; the provider accepted {upstream} \
         (the limit allows {:.0}) and refused {refused_upstream}",
        ended.len(),
        elapsed.as_secs_f64() * PER_MINUTE as f64 / 60.0,
    );
    assert!(
        slowest <= DEADLINE + Duration::from_secs(1),
        "no call hangs past its deadline: {slowest:?}"
    );
    // Within the limit, give or take what each replica's local share (0.34 of it) allows.
    let allowed = elapsed.as_secs_f64() * PER_MINUTE as f64 / 60.0 * 1.02;
    assert!(
        upstream as f64 <= allowed + 20.0,
        "{upstream} accepted, {allowed:.0} allowed"
    );
    assert!(
        upstream as f64 >= 0.8 * elapsed.as_secs_f64() * PER_MINUTE as f64 / 60.0,
        "the fleet kept using the key while Redis was away: {upstream}"
    );
    // What the local shares and a Redis restarted empty (a full bucket again, while the
    // provider's is not) let past the provider's own bucket before its headers and 429s
    // tighten the fleet's: 6 to 31 of 511 in the runs so far.
    assert!(
        refused_upstream as f64 <= 0.1 * ended.len() as f64,
        "{refused_upstream} refused by the provider"
    );
    // Shared again: the limits are back in Redis.
    assert!(
        !redis.keys("*").is_empty(),
        "the replicas went back to Redis after it resumed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_deployment_opens_the_breaker_on_all_three_and_probes_fleet_wide() {
    let _fleet = ONE_FLEET.lock().await;
    let redis = RedisServer::start(&[]);
    // Overloaded (every call a 529) for the first 3 s, then healthy but slow (800 ms), so that
    // no probe can have closed the breaker in the first moments of half-open.
    let sim = SimProcess::start(&format!(
        "seed = 2\n[latency]\ntime_to_first_token = \"800ms\"\n\
         [[keys]]\nkey = \"{UPSTREAM}\"\nname = \"account\"\n\
         [[phases]]\nname = \"overloaded\"\nduration = \"3s\"\n\
         [phases.faults]\noverload_rate = 1.0\noverload_status = 529\n\
         [[phases]]\nname = \"healthy\"\nduration = \"1h\"\n"
    ));
    let config = gateway(&sim.url, &redis.url()).replace(
        "preset = \"balanced\"\n",
        "preset = \"balanced\"\n[stack.retry]\nmax_attempts = 1\n[stack.overload]\nenabled = false\n\
         [stack.circuit_breaker]\n\
         consecutive_failures = 3\nopen_duration = \"2s\"\njitter = 0.0\nhalf_open_probes = 1\n\
         honour_retry_after = false\n",
    );
    let replicas: Vec<Proxy> = (0..3)
        .map(|_| Proxy::start_logging(&config, &[("TG_FLEET_UPSTREAM", UPSTREAM)], "info"))
        .collect();
    let upstream = || async { sim_stats(&sim).await["received"].as_u64().unwrap() };
    // The first replica meets the overload: its breaker opens. (No adaptive limit here, which
    // would shed calls of its own after the first 529s.)
    for i in 0..4 {
        chat(&replicas[0].url, i).await;
    }
    let opened = Instant::now();
    let seen = upstream().await;
    assert!(seen >= 3, "the overload reached the first replica: {seen}");
    // Within the sync bound, the other two refuse without calling the provider.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (r, replica) in replicas.iter().enumerate().skip(1) {
        let answer = send(post(
            &format!("{}/v1/chat/completions", replica.url),
            Some(("authorization", &format!("Bearer {CLIENT}"))),
            &json!({"model": "chat", "max_tokens": 4,
                "messages": [{"role": "user", "content": "Still there?"}]}),
        ))
        .await;
        assert_eq!(
            answer.status,
            StatusCode::SERVICE_UNAVAILABLE,
            "replica {r} refuses: {:?}",
            answer.body
        );
    }
    assert_eq!(
        upstream().await,
        seen,
        "refused without calling the provider"
    );
    // Half-open, and the provider healthy again: callers on all three replicas for 750 ms; a
    // probe takes 800 ms, so whatever reached the provider in that time was a probe.
    let half_open = opened + Duration::from_millis(2_100);
    tokio::time::sleep_until(half_open.into()).await;
    let before = upstream().await;
    let mut calls = JoinSet::new();
    let mut i = 100;
    while half_open.elapsed() < Duration::from_millis(750) {
        for replica in &replicas {
            let url = replica.url.clone();
            calls.spawn(async move { chat(&url, i).await.0 });
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let probes = upstream().await - before;
    let offered = i - 100;

    println!(
        "breaker shared by three gateways: {offered} calls in the first 750 ms of half-open, \
         {probes} reached the provider (half_open_probes = 1)"
    );
    assert_eq!(probes, 1, "one probe for the whole fleet");
    // The probe succeeds: every replica closes and serves again.
    while calls.join_next().await.is_some() {}
    tokio::time::sleep(Duration::from_millis(300)).await;
    for replica in &replicas {
        assert_eq!(chat(&replica.url, 9_999).await.0, StatusCode::OK);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_upstream_is_out_on_every_gateway_within_a_second() {
    let _fleet = ONE_FLEET.lock().await;
    let redis = RedisServer::start(&[]);
    let sim = SimProcess::start(&format!(
        "seed = 12\n[[keys]]\nkey = \"sk-fleet-revoked\"\nname = \"revoked\"\nrevoked_after = \"1ms\"\n\
         [[keys]]\nkey = \"{UPSTREAM}\"\nname = \"account\"\n"
    ));
    // Two keys, the revoked one first in line.
    let config = format!(
        r#"[server]
api_keys = ["{CLIENT}"]
admin_token_env = "TG_FLEET_ADMIN"
[redis]
url = "{redis}"
[stack]
preset = "balanced"
[[models]]
name = "chat"
policy = "ordered"
[[models.deployments]]
provider = "openai"
base_url = "{sim}"
keys_env = "TG_FLEET_KEYS"
model = "gpt-4o-mini"
"#,
        redis = redis.url(),
        sim = sim.url
    );
    let keys = format!("sk-fleet-revoked,{UPSTREAM}");
    let replicas: Vec<Proxy> = (0..3)
        .map(|_| {
            Proxy::start_logging(
                &config,
                &[
                    ("TG_FLEET_KEYS", &keys),
                    ("TG_FLEET_ADMIN", "adm-fleet-7d21"),
                ],
                "info",
            )
        })
        .collect();
    // Calls that met the revoked key: every call the provider received but the good key's.
    let log_revoked = || async {
        let stats = sim_stats(&sim).await;
        stats["received"].as_u64().unwrap() - stats["keys"]["account"]["requests"].as_u64().unwrap()
    };
    // The first replica meets the 401 and moves to the other key within the same call.
    assert_eq!(chat(&replicas[0].url, 0).await.0, StatusCode::OK);
    let first = Instant::now();
    assert_eq!(log_revoked().await, 1, "one call met the revoked key");
    // Within a second, the other two no longer try it.
    tokio::time::sleep(Duration::from_millis(600)).await;
    for replica in &replicas[1..] {
        for i in 0..3 {
            assert_eq!(chat(&replica.url, 10 + i).await.0, StatusCode::OK);
        }
    }
    println!(
        "a key revoked upstream: after the first replica's 401, {:?} later the other two sent \
         it nothing ({} call met it in all)",
        first.elapsed(),
        log_revoked().await
    );
    assert_eq!(
        log_revoked().await,
        1,
        "the other replicas did not try the revoked key"
    );
    // Their health reports show the fleet's counts: the 401 the first replica met.
    let health = http::Request::get(format!("{}/admin/health", replicas[2].url))
        .header("authorization", "Bearer adm-fleet-7d21")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let health = send(health).await.json();
    let revoked = &health["models"][0]["members"][0];
    assert_eq!(revoked["auth_errors"], 0, "{revoked}");
    assert_eq!(revoked["fleet"]["auth_errors"], 1, "{revoked}");
    assert_eq!(revoked["state"], "cooling_down", "{revoked}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_cleared_on_one_gateway_is_cleared_on_every_one() {
    let _fleet = ONE_FLEET.lock().await;
    let redis = RedisServer::start(&[]);
    cache_cleared_everywhere(&redis.url(), |pattern| redis.keys(pattern)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_gateways_on_a_redis_cluster_share_and_clear_the_cache() {
    let _fleet = ONE_FLEET.lock().await;
    let cluster = tollgate_testkit::redis::RedisCluster::start();
    cache_cleared_everywhere(&cluster.url(), |pattern| cluster.keys(pattern)).await;
}

/// Three gateways on the Redis at `url`: an answer one paid for is a hit on the others; a
/// clear on one empties Redis (`keys` lists what is left there) and, within a second, the
/// others' memory.
async fn cache_cleared_everywhere(url: &str, keys: impl Fn(&str) -> Vec<String>) {
    // Slow answers: two calls sent together both find memory and redis empty after the clear.
    let sim = SimProcess::start(&format!(
        "seed = 13\n[latency]\ntime_to_first_token = \"400ms\"\nper_output_token = \"0ms\"\n\
         tail_probability = 0.0\n[[keys]]\nkey = \"{UPSTREAM}\"\n"
    ));
    let config = format!(
        "[server]\nadmin_token_env = \"TG_FLEET_ADMIN\"\n{}[stack.cache]\nenabled = true\n",
        gateway(&sim.url, url).strip_prefix("[server]\n").unwrap()
    );
    let env = [
        ("TG_FLEET_UPSTREAM", UPSTREAM),
        ("TG_FLEET_ADMIN", "adm-fleet-7d21"),
    ];
    let replicas: Vec<Proxy> = (0..3)
        .map(|_| Proxy::start_with_env(&config, &env))
        .collect();
    let deterministic = |url: &str| {
        let auth = format!("Bearer {CLIENT}");
        let body = json!({"model": "chat", "max_tokens": 8, "temperature": 0,
            "messages": [{"role": "user", "content": "The same question."}]});
        send(post(
            &format!("{url}/v1/chat/completions"),
            Some(("authorization", &auth)),
            &body,
        ))
    };
    let paid = deterministic(&replicas[0].url).await;
    assert_eq!(paid.status, StatusCode::OK);
    // The second level is written after the body ends, in the background.
    tokio::time::sleep(Duration::from_millis(200)).await;
    for replica in &replicas[1..] {
        let shared = deterministic(&replica.url).await;
        assert_eq!(shared.header("x-tollgate-cache"), "hit", "from redis");
    }
    assert_eq!(sim_stats(&sim).await["accepted"], 1);

    let clear = http::Request::post(format!("{}/admin/cache/clear", replicas[0].url))
        .header("authorization", "Bearer adm-fleet-7d21")
        .body(http_body_util::Full::new(bytes::Bytes::new()))
        .unwrap();
    let cleared = send(clear).await;
    assert_eq!(cleared.status, StatusCode::OK);
    let cleared = cleared.json();
    assert_eq!(cleared["cleared"], 1, "{cleared}");
    assert_eq!(cleared["shared_cleared"], 1, "{cleared}");
    assert!(keys("tollgate:cache:1:*").is_empty());

    // Within a second the other replicas' memory is clear too: each pays again.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let (second, third) = tokio::join!(
        deterministic(&replicas[1].url),
        deterministic(&replicas[2].url)
    );
    for (name, answer) in [("second", second), ("third", third)] {
        assert_eq!(answer.status, StatusCode::OK);
        assert!(
            answer.headers.get("x-tollgate-cache").is_none(),
            "the {name} replica answered from its memory after the clear"
        );
    }
    assert_eq!(sim_stats(&sim).await["accepted"], 3, "both paid again");
}
