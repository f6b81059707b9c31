//! Every limiter shape under a steady stream of demand above its limit, in-process under paused
//! time: what is admitted, second by second, is exactly the shape's, and every 429 says the
//! true wait. Plus the scenario syntax of the shapes and its errors.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{Reply, call, chat, request};
use tokio::time::Instant;
use tollgate_sim::config::{Burst, BurstPerDimension, Window};
use tollgate_sim::{SimConfig, SimService};

fn sim(toml: &str) -> SimService {
    SimService::new(SimConfig::from_toml(toml).expect("a valid scenario")).expect("a valid config")
}

async fn chat_call(sim: &SimService, max_tokens: u64) -> Reply {
    let body = chat("gpt-4o-mini", "x", max_tokens);
    call(
        sim,
        request("http://sim", "/v1/chat/completions", "sk", &body),
    )
    .await
}

/// From `start` (after the simulator's start) until `end`, offers `per_tick` requests at once
/// every 250 ms: 16 a second, well above every limit here. Returns when each admitted one was
/// admitted, counted from the simulator's start.
async fn offer(sim: &SimService, per_tick: usize, start: Duration, end: Duration) -> Vec<Duration> {
    let origin = Instant::now();
    tokio::time::sleep(start).await;
    let mut admitted = Vec::new();
    while origin.elapsed() < end {
        for _ in 0..per_tick {
            let reply = chat_call(sim, 1).await;
            match reply.status.as_u16() {
                200 => admitted.push(origin.elapsed()),
                429 => {}
                other => panic!("{other}: {:?}", reply.body),
            }
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    admitted
}

/// How many were admitted at each instant, in milliseconds from the start.
fn per_instant(admitted: &[Duration]) -> BTreeMap<u128, usize> {
    let mut counts = BTreeMap::new();
    for at in admitted {
        *counts.entry(at.as_millis()).or_default() += 1;
    }
    counts
}

/// The most admitted in any window `(t - window, t]`.
fn most_in_any_window(admitted: &[Duration], window: Duration) -> usize {
    admitted
        .iter()
        .enumerate()
        .map(|(j, end)| {
            admitted[..=j]
                .iter()
                .filter(|at| **at + window > *end)
                .count()
        })
        .max()
        .unwrap_or(0)
}

const MINUTES: Duration = Duration::from_secs(180);

#[tokio::test(start_paused = true)]
async fn a_leaky_bucket_at_60_a_minute_admits_one_a_second() {
    let sim = sim("[[keys]]\nkey = \"sk\"\nrequests_per_minute = 60\nwindow = \"leaky_bucket\"\n");
    let admitted = offer(&sim, 4, Duration::ZERO, MINUTES).await;
    let expected: Vec<Duration> = (0..180).map(Duration::from_secs).collect();
    assert_eq!(admitted, expected, "one a second, on the second, never two");
}

#[tokio::test(start_paused = true)]
async fn a_leaky_bucket_with_a_burst_runs_that_far_ahead_then_keeps_the_rate() {
    let sim = sim(
        "[[keys]]\nkey = \"sk\"\nrequests_per_minute = 60\nwindow = \"leaky_bucket\"\nburst = 5\n",
    );
    let admitted = offer(&sim, 8, Duration::ZERO, MINUTES).await;
    let expected: BTreeMap<u128, usize> = [(0, 5)]
        .into_iter()
        .chain((1..180).map(|s| (s * 1_000, 1)))
        .collect();
    assert_eq!(
        per_instant(&admitted),
        expected,
        "5 at once, then one a second"
    );
    assert_eq!(admitted.len(), 5 + 179);
}

#[tokio::test(start_paused = true)]
async fn a_token_bucket_with_burst_5_admits_5_at_once_then_the_rate() {
    let sim = sim("[[keys]]\nkey = \"sk\"\nrequests_per_minute = 60\nburst = 5\n");
    let admitted = offer(&sim, 8, Duration::ZERO, MINUTES).await;
    let counts = per_instant(&admitted);
    assert_eq!(counts[&0], 5, "the bucket's capacity at once");
    assert!(
        counts
            .iter()
            .skip(1)
            .all(|(at, n)| at % 1_000 == 0 && *n == 1),
        "then one a second, as it refills: {counts:?}"
    );
    assert_eq!(admitted.len(), 5 + 179);
    // After an idle spell the bucket holds its burst again, not a minute's quota.
    tokio::time::sleep(Duration::from_secs(30)).await;
    let again = offer(&sim, 8, Duration::ZERO, Duration::from_millis(1)).await;
    assert_eq!(again.len(), 5);
}

#[tokio::test(start_paused = true)]
async fn a_token_bucket_without_a_burst_holds_a_minutes_quota() {
    let sim = sim("[[keys]]\nkey = \"sk\"\nrequests_per_minute = 60\n");
    let admitted = offer(&sim, 80, Duration::ZERO, Duration::from_millis(1)).await;
    assert_eq!(admitted.len(), 60, "today's default, unchanged");
}

#[tokio::test(start_paused = true)]
async fn a_sliding_window_never_admits_more_than_its_share_in_any_trailing_window() {
    // 60 a minute over 10 s windows: 10 in any 10 s. The demand starts mid-way through a fixed
    // window's span, where fixed windows would let 20 through in a few seconds.
    let sim = sim("[[keys]]\nkey = \"sk\"\nrequests_per_minute = 60\nwindow = \"sliding:10s\"\n");
    let admitted = offer(&sim, 4, Duration::from_secs(5), MINUTES).await;
    assert_eq!(most_in_any_window(&admitted, Duration::from_secs(10)), 10);
    // What comes back is what left the window: the same 4, 4, 2 every 10 s from 5 s on.
    let counts = per_instant(&admitted);
    let expected: BTreeMap<u128, usize> = (0..18)
        .flat_map(|k| {
            let at = 5_000 + k * 10_000;
            [(at, 4), (at + 250, 4), (at + 500, 2)]
        })
        .collect();
    assert_eq!(counts, expected);
}

#[tokio::test(start_paused = true)]
async fn a_sliding_minute_spreads_nothing_and_forgets_nothing() {
    let sim = sim("[[keys]]\nkey = \"sk\"\nrequests_per_minute = 30\nwindow = \"sliding:60s\"\n");
    let admitted = offer(&sim, 4, Duration::ZERO, MINUTES).await;
    assert_eq!(most_in_any_window(&admitted, Duration::from_secs(60)), 30);
    assert_eq!(admitted.len(), 90, "30 in each of the three minutes");
    assert!(
        admitted.iter().all(|at| at.as_millis() % 60_000 < 2_000),
        "each minute's 30 go in its first two seconds: {admitted:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn fixed_windows_admit_twice_the_share_across_a_boundary() {
    // The same demand as the sliding window's test: fixed windows count from the start.
    let sim = sim("[[keys]]\nkey = \"sk\"\nrequests_per_minute = 60\nwindow = \"10s\"\n");
    let admitted = offer(&sim, 4, Duration::from_secs(5), MINUTES).await;
    assert_eq!(
        most_in_any_window(&admitted, Duration::from_secs(10)),
        20,
        "10 at 5 s and 10 more at 10 s"
    );
    let mut per_window = BTreeMap::new();
    for at in &admitted {
        *per_window.entry(at.as_secs() / 10).or_insert(0) += 1;
    }
    assert!(per_window.values().all(|n| *n == 10), "{per_window:?}");
    assert_eq!(per_window.len(), 18);
}

/// A greedy client that, on each 429, comes back 1 ms before the wait it was told (and is
/// refused), then exactly when told (and is admitted). Returns how many 429s it was told.
async fn wait_as_told(sim: &SimService, shape: &str, max_tokens: u64) -> usize {
    let origin = Instant::now();
    let mut told = 0;
    while origin.elapsed() < MINUTES {
        let reply = chat_call(sim, max_tokens).await;
        if reply.status == 200 {
            continue;
        }
        assert_eq!(reply.status, 429, "{shape}: {:?}", reply.body);
        told += 1;
        let wait = Duration::from_millis(reply.header("retry-after-ms").parse().unwrap());
        assert!(!wait.is_zero());
        tokio::time::sleep(wait - Duration::from_millis(1)).await;
        let early = chat_call(sim, max_tokens).await;
        assert_eq!(early.status, 429, "{shape}: 1 ms early, told {wait:?}");
        tokio::time::sleep(Duration::from_millis(1)).await;
        let on_time = chat_call(sim, max_tokens).await;
        assert_eq!(on_time.status, 200, "{shape}: on time, told {wait:?}");
    }
    told
}

#[tokio::test(start_paused = true)]
async fn every_shape_says_the_true_wait() {
    let shapes = [
        "requests_per_minute = 60\nburst = 5",
        "requests_per_minute = 7\nwindow = \"leaky_bucket\"",
        "requests_per_minute = 60\nwindow = \"leaky_bucket\"\nburst = 3",
        "requests_per_minute = 60\nwindow = \"10s\"",
        "requests_per_minute = 60\nwindow = \"sliding:10s\"",
        "requests_per_minute = 13\nwindow = \"sliding:60s\"",
        "tokens_per_minute = 7000\nwindow = \"leaky_bucket\"",
        "tokens_per_minute = 7000\nwindow = \"sliding:15s\"",
        "tokens_per_minute = 7000\nburst = 900",
    ];
    for shape in shapes {
        // Answers as long as the estimate, so nothing is refunded and every request costs the
        // same.
        let sim = sim(&format!(
            "[[keys]]\nkey = \"sk\"\n{shape}\n[output]\nmin_tokens = 300\nmax_tokens = 300\n"
        ));
        let told = wait_as_told(&sim, shape, 300).await;
        assert!(told >= 3, "{shape}: only {told} refusals in three minutes");
    }
}

#[test]
fn the_shapes_parse_from_the_scenario() {
    let config = SimConfig::from_toml(
        r#"
        [limits]
        requests_per_minute = 600
        tokens_per_minute = 100000
        window = "leaky_bucket"
        burst = { requests = 10, tokens = 5000 }

        [[keys]]
        key = "a"

        [[keys]]
        key = "b"
        requests_per_minute = 60

        [[keys]]
        key = "c"
        window = "sliding:30s"

        [[keys]]
        key = "d"
        requests_per_minute = 60
        burst = 2
    "#,
    )
    .unwrap();
    let limits = |i: usize| config.keys[i].limits_over(&config.limits);
    let table = Burst::PerDimension(BurstPerDimension {
        requests: Some(10),
        tokens: Some(5_000),
        ..BurstPerDimension::default()
    });
    assert_eq!(
        (limits(0).window, limits(0).burst),
        (Window::LeakyBucket, Some(table)),
        "a key that sets nothing has the [limits] shape, burst included"
    );
    assert_eq!(
        (limits(1).window, limits(1).burst),
        (Window::LeakyBucket, None),
        "a key with its own limits has only the burst it sets"
    );
    assert_eq!(
        (limits(2).window, limits(2).burst),
        (Window::Sliding(Duration::from_secs(30)), None),
        "a key with its own window too"
    );
    assert_eq!(limits(3).burst, Some(Burst::Units(2)));
    assert_eq!(
        SimConfig::default().limits.window,
        Window::TokenBucket,
        "the default"
    );
}

#[test]
fn bad_shapes_name_the_field() {
    let cases = [
        ("[limits]\nwindow = \"sliding:2m\"", "limits.window"),
        ("[limits]\nwindow = \"sliding:0s\"", "limits.window"),
        ("[limits]\nwindow = \"sliding\"", "window must be"),
        ("[limits]\nwindow = \"leaky\"", "window must be"),
        (
            "[limits]\nrequests_per_minute = 60\ntokens_per_minute = 100\nburst = 0",
            "limits.burst",
        ),
        (
            "[[keys]]\nkey = \"k\"\nrequests_per_minute = 60\nburst = 0",
            "keys[0].burst",
        ),
        (
            "[[keys]]\nkey = \"k\"\nrequests_per_minute = 60\ntokens_per_minute = 9000\nburst = { tokens = 0 }",
            "keys[0].burst.tokens",
        ),
        (
            "[[keys]]\nkey = \"k\"\nrequests_per_minute = 60\nwindow = \"10s\"\nburst = 5",
            "keys[0].burst",
        ),
        (
            "[[keys]]\nkey = \"k\"\nrequests_per_minute = 60\nwindow = \"sliding:10s\"\nburst = 5",
            "keys[0].burst",
        ),
        // The default [limits] has 10,000 RPM and 10M TPM: a bare number names neither.
        ("[limits]\nburst = 5", "limits.burst"),
        (
            "[[keys]]\nkey = \"k\"\nrequests_per_minute = 60\nburst = { tokens = 500 }",
            "keys[0].burst.tokens",
        ),
        (
            "[[keys]]\nkey = \"k\"\nrequests_per_minute = 60\nburst = {}",
            "keys[0].burst",
        ),
        (
            "[[keys]]\nkey = \"k\"\nrequests_per_day = 60\nburst = 5",
            "keys[0].burst",
        ),
        ("[limits]\nburst = -1", "burst"),
        ("[limits]\nburst = \"5\"", "burst"),
        ("[limits]\nburst = { request = 5 }", "request"),
        (
            "[[keys]]\nkey = \"k\"\nrate_limit_headers = \"no\"",
            "line 3",
        ),
    ];
    for (toml, field) in cases {
        let error = SimConfig::from_toml(toml).unwrap_err().to_string();
        assert!(error.contains(field), "{toml:?}: {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
}

#[test]
fn the_scenario_format_examples_load() {
    let readme =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/scenarios/README.md");
    let text = std::fs::read_to_string(readme).unwrap();
    let blocks: Vec<&str> = text
        .split("```toml\n")
        .skip(1)
        .map(|rest| rest.split("```").next().unwrap())
        .collect();
    assert!(blocks.len() >= 3, "{} blocks", blocks.len());
    for block in blocks {
        SimConfig::from_toml(block).unwrap_or_else(|e| panic!("{e}:\n{block}"));
    }
}
