//! The simulator in-process under paused tokio time: minutes of traffic in milliseconds, with
//! exact timing, limits checked over every window, scripted phases and determinism.

mod common;

use std::time::Duration;

use common::{call, chat, request};
use serde_json::json;
use tokio::time::Instant;
use tollgate_sim::{Rejection, SimConfig, SimService};

fn sim(toml: &str) -> SimService {
    SimService::new(SimConfig::from_toml(toml).expect("a valid scenario")).expect("a valid config")
}

/// Sends `count` requests spaced by a deterministic pseudo-random gap below `max_gap_ms`, and
/// returns (arrival time, admitted, tokens charged) of each.
async fn drive(
    sim: &SimService,
    count: usize,
    max_gap_ms: u64,
    max_tokens: u64,
) -> Vec<(Duration, bool)> {
    let start = Instant::now();
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut seen = Vec::new();
    for _ in 0..count {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        tokio::time::sleep(Duration::from_millis(state % max_gap_ms)).await;
        let at = start.elapsed();
        let reply = call(
            sim,
            request(
                "http://sim",
                "/v1/chat/completions",
                "sk",
                &chat("m", "x", max_tokens),
            ),
        )
        .await;
        seen.push((at, reply.status == 200));
    }
    seen
}

#[tokio::test(start_paused = true)]
async fn request_limits_hold_over_every_window_to_the_request() {
    let sim = sim("[[keys]]\nkey = \"sk\"\nrequests_per_minute = 60\n");
    let seen = drive(&sim, 600, 400, 1).await;
    let admitted: Vec<Duration> = seen
        .iter()
        .filter(|(_, ok)| *ok)
        .map(|(at, _)| *at)
        .collect();
    // A bucket of 60 refilled at one per second: over any interval of length w, at most
    // 60 + w requests.
    for (i, start) in admitted.iter().enumerate() {
        for (j, end) in admitted.iter().enumerate().skip(i) {
            let count = (j - i + 1) as f64;
            let allowed = 60.0 + (*end - *start).as_secs_f64();
            assert!(
                count <= allowed + 1.0,
                "{count} requests in {:?}",
                *end - *start
            );
        }
    }
    // And it is not stingy: demand above the limit gets the whole quota.
    let elapsed = seen.last().unwrap().0.as_secs_f64();
    let quota = 60.0 + elapsed;
    assert!(
        (admitted.len() as f64) >= quota - 2.0,
        "{} admitted of a {quota} quota",
        admitted.len()
    );
    assert_eq!(
        sim.stats().rejected(Rejection::RateLimited) as usize,
        seen.len() - admitted.len()
    );
}

#[tokio::test(start_paused = true)]
async fn token_limits_charge_the_estimate_and_refund_the_rest() {
    // 10 prompt+output tokens per answer, but 1,000 charged at admission (max_tokens).
    let sim = sim(
        "[[keys]]\nkey = \"sk\"\ntokens_per_minute = 3000\n[output]\nmin_tokens = 3\nmax_tokens = 3\n",
    );
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let reply = call(
            &sim,
            request(
                "http://sim",
                "/v1/chat/completions",
                "sk",
                &chat("m", "x", 1000),
            ),
        )
        .await;
        statuses.push(reply.status.as_u16());
    }
    // Each answer ends before the next request, so the unused 997 come back every time.
    assert_eq!(statuses, [200; 5]);

    // Streams hold their reservation until the last byte.
    let sim = sim_with_stream_latency();
    let mut body = chat("m", "x", 1000);
    body["stream"] = json!(true);
    let mut open = Vec::new();
    for _ in 0..3 {
        let response = tower::ServiceExt::oneshot(
            sim.clone(),
            request("http://sim", "/v1/chat/completions", "sk", &body),
        )
        .await
        .unwrap();
        open.push(response);
    }
    let reply = call(
        &sim,
        request(
            "http://sim",
            "/v1/chat/completions",
            "sk",
            &chat("m", "x", 1000),
        ),
    )
    .await;
    assert_eq!(
        reply.status, 429,
        "three open streams hold 3 × 1,008 tokens of 3,000"
    );
    drop(open);
    let reply = call(
        &sim,
        request(
            "http://sim",
            "/v1/chat/completions",
            "sk",
            &chat("m", "x", 1000),
        ),
    )
    .await;
    assert_eq!(
        reply.status, 200,
        "dropped streams refund what they did not generate"
    );
}

fn sim_with_stream_latency() -> SimService {
    sim(
        "[[keys]]\nkey = \"sk\"\ntokens_per_minute = 3000\n[latency]\nper_output_token = \"1s\"\n[output]\nmin_tokens = 3\nmax_tokens = 3\n",
    )
}

#[tokio::test(start_paused = true)]
async fn latency_follows_the_model_exactly() {
    let sim = sim(
        "[latency]\ntime_to_first_token = \"400ms\"\nper_output_token = \"20ms\"\n[output]\nmin_tokens = 10\nmax_tokens = 10\n",
    );
    let start = Instant::now();
    let reply = call(
        &sim,
        request(
            "http://sim",
            "/v1/chat/completions",
            "sk",
            &chat("m", "x", 100),
        ),
    )
    .await;
    assert_eq!(reply.status, 200);
    assert_eq!(start.elapsed(), Duration::from_millis(400 + 10 * 20));

    let mut body = chat("m", "x", 100);
    body["stream"] = json!(true);
    let start = Instant::now();
    let response = tower::ServiceExt::oneshot(
        sim.clone(),
        request("http://sim", "/v1/chat/completions", "sk", &body),
    )
    .await
    .unwrap();
    assert_eq!(
        start.elapsed(),
        Duration::from_millis(400),
        "headers after the time to first token"
    );
    use http_body_util::BodyExt as _;
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    while let Some(frame) = body.frame().await {
        frame.unwrap();
        arrivals.push(start.elapsed().as_millis());
    }
    // role chunk and first token at 400 ms, one token every 20 ms, then finish and [DONE].
    assert_eq!(arrivals.first(), Some(&400));
    assert_eq!(arrivals[2], 420);
    assert_eq!(arrivals.last(), Some(&(400 + 10 * 20)));
}

#[tokio::test(start_paused = true)]
async fn scripted_phases_change_the_weather() {
    let sim = sim(r#"
        [[phases]]
        name = "healthy"
        duration = "20s"
        [[phases]]
        name = "overloaded"
        duration = "30s"
        [phases.faults]
        error_rate = 1.0
        [[phases]]
        name = "recovering"
        duration = "10s"
        [phases.faults]
        error_rate = 0.5
    "#);
    let mut by_phase = Vec::new();
    for second in 0..70 {
        let reply = call(
            &sim,
            request("http://sim", "/v1/messages", "sk", &chat("claude", "x", 5)),
        )
        .await;
        by_phase.push((second, reply.status.as_u16(), sim.stats().phase.unwrap()));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    assert!(
        by_phase[..20]
            .iter()
            .all(|(_, status, phase)| *status == 200 && phase == "healthy")
    );
    assert!(
        by_phase[20..50]
            .iter()
            .all(|(_, status, phase)| *status == 500 && phase == "overloaded")
    );
    let recovering = &by_phase[50..60];
    assert!(recovering.iter().all(|(_, _, phase)| phase == "recovering"));
    let failed = recovering
        .iter()
        .filter(|(_, status, _)| *status == 500)
        .count();
    assert!(
        (1..10).contains(&failed),
        "about half fail while recovering: {failed}"
    );
    assert!(
        by_phase[60..]
            .iter()
            .all(|(_, _, phase)| phase == "recovering"),
        "the last phase lasts"
    );
}

#[tokio::test(start_paused = true)]
async fn the_same_seed_gives_the_same_run() {
    let toml = "seed = 7\n[latency]\ntail_probability = 0.2\ntail_multiplier = 5.0\ntime_to_first_token = \"100ms\"\n[faults]\nerror_rate = 0.3\n";
    let run = |sim: SimService| async move {
        let mut seen = Vec::new();
        for i in 0..40 {
            let start = Instant::now();
            let reply = call(
                &sim,
                request(
                    "http://sim",
                    "/v1/chat/completions",
                    "sk",
                    &chat("m", &format!("q{i}"), 50),
                ),
            )
            .await;
            let content = reply.json()["choices"][0]["message"]["content"].clone();
            seen.push((reply.status.as_u16(), start.elapsed(), content));
        }
        seen
    };
    let a = run(sim(toml)).await;
    let b = run(sim(toml)).await;
    assert_eq!(a, b);
    assert!(
        a.iter().any(|(status, _, _)| *status == 500)
            && a.iter().any(|(status, _, _)| *status == 200)
    );
    assert!(
        a.iter()
            .any(|(_, took, _)| *took == Duration::from_millis(500)),
        "some tails"
    );
    let c = run(sim(&toml.replace("seed = 7", "seed = 8"))).await;
    assert_ne!(a, c);
}

#[tokio::test(start_paused = true)]
async fn revoked_keys_and_short_windows() {
    let sim = sim(r#"
        [[keys]]
        key = "sk-old"
        revoked_after = "10s"
        [[keys]]
        key = "sk-azure"
        requests_per_minute = 60
        window = "10s"
    "#);
    let send = |key: &'static str| {
        let sim = sim.clone();
        async move {
            call(
                &sim,
                request(
                    "http://sim",
                    "/v1/chat/completions",
                    key,
                    &chat("m", "x", 5),
                ),
            )
            .await
            .status
            .as_u16()
        }
    };
    assert_eq!(send("sk-old").await, 200);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(send("sk-old").await, 401);
    assert_eq!(send("sk-unconfigured").await, 401, "configured keys only");

    // Azure-style: 60 RPM is 10 per 10-second window.
    let mut statuses = Vec::new();
    for _ in 0..11 {
        statuses.push(send("sk-azure").await);
    }
    assert_eq!(statuses.iter().filter(|s| **s == 200).count(), 10);
    assert_eq!(statuses[10], 429);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(send("sk-azure").await, 200);
}

#[tokio::test(start_paused = true)]
async fn requests_per_day_in_the_openai_and_anthropic_dialects() {
    let sim = sim("[[keys]]\nkey = \"sk\"\nrequests_per_minute = 60\nrequests_per_day = 2\n");
    let send = |path: &'static str| {
        let sim = sim.clone();
        async move { call(&sim, request("http://sim", path, "sk", &chat("m", "x", 5))).await }
    };
    for _ in 0..2 {
        assert_eq!(send("/v1/chat/completions").await.status, 200);
    }
    let reply = send("/v1/chat/completions").await;
    assert_eq!(reply.status, 429);
    let error = &reply.json()["error"];
    assert_eq!(error["type"], "requests");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.starts_with("Rate limit reached for m in organization org-sim on requests per day (RPD): Limit 2, Used 2, Requested 1. Please try again in 12h0m0s."),
        "{message}"
    );
    assert_eq!(reply.header("retry-after"), "43200");
    assert_eq!(
        reply.header("x-ratelimit-remaining-requests"),
        "58",
        "the headers stay per minute"
    );
    let reply = send("/v1/messages").await;
    assert_eq!(reply.status, 429);
    let message = reply.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("of 2 requests per day"), "{message}");
    tokio::time::sleep(Duration::from_secs(12 * 3600)).await;
    assert_eq!(send("/v1/chat/completions").await.status, 200);
}

#[tokio::test(start_paused = true)]
async fn the_request_log_remembers_without_secrets() {
    let sim = sim("log_capacity = 2\n[[keys]]\nkey = \"sk-secret-1\"\nname = \"batch-jobs\"\n");
    for _ in 0..3 {
        call(
            &sim,
            request(
                "http://sim",
                "/v1/chat/completions",
                "sk-secret-1",
                &chat("gpt-4o", "x", 5),
            ),
        )
        .await;
    }
    let log = sim.log();
    assert_eq!(log.len(), 2, "bounded");
    assert_eq!(log[0].seq, 1);
    assert_eq!(log[1].key.as_deref(), Some("batch-jobs"));
    assert_eq!(log[1].model.as_deref(), Some("gpt-4o"));
    assert_eq!(log[1].route, "POST /v1/chat/completions");
    let shown = format!("{log:?} {:?}", sim.stats());
    assert!(!shown.contains("sk-secret-1"), "{shown}");
}

#[test]
fn bad_scenarios_name_the_field() {
    let cases = [
        ("[faults]\nerror_rate = 1.5", "faults.error_rate"),
        ("[faults]\noverload_status = 502", "faults.overload_status"),
        ("[[keys]]\nkey = \"\"", "keys[0].key"),
        (
            "[[keys]]\nkey = \"k\"\nrequests_per_minute = 0",
            "requests_per_minute",
        ),
        ("[limits]\nwindow = \"2m\"", "limits.window"),
        (
            "[output]\nmin_tokens = 10\nmax_tokens = 5",
            "output.min_tokens",
        ),
        (
            "[[phases]]\nname = \"p\"\nduration = \"0s\"",
            "phases.duration",
        ),
        ("[latency]\nbogus = 1", "bogus"),
        (
            "[[keys]]\nkey = \"k\"\nrequests_per_day = 0",
            "keys[0].requests_per_day",
        ),
        ("[limits]\nrequests_per_day = 0", "limits.requests_per_day"),
        ("openai_flavor = \"groq\"", "openai_flavor"),
    ];
    for (toml, field) in cases {
        let error = SimConfig::from_toml(toml).unwrap_err().to_string();
        assert!(error.contains(field), "{toml:?}: {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
}

#[test]
fn every_documented_scenario_loads() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/scenarios");
    let mut loaded = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "toml") {
            let text = std::fs::read_to_string(&path).unwrap();
            SimConfig::from_toml(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            loaded += 1;
        }
    }
    assert_eq!(loaded, 7);
}

#[tokio::test(start_paused = true)]
async fn an_overload_rate_refuses_whatever_the_load() {
    let sim = sim("[faults]\noverload_rate = 1.0\noverload_status = 529\n");
    let reply = call(
        &sim,
        request("http://sim", "/v1/messages", "sk", &chat("claude", "x", 5)),
    )
    .await;
    assert_eq!(reply.status.as_u16(), 529);
    assert_eq!(reply.json()["error"]["type"], "overloaded_error");
    assert_eq!(sim.stats().rejected(Rejection::Overloaded), 1);
}
