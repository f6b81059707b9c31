//! `tollgate bench --json` against the simulator: the shape of the report, and its counts.

use std::process::{Command, Output};

use serde_json::Value;
use tollgate_sim::{Sim, SimConfig};

/// Runs `tollgate bench` off the runtime's threads, so the in-process simulator keeps serving.
async fn bench(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("bench")
            .args(args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

/// `--target TARGET --json` and `list`.
fn args(target: &str, list: &[&str]) -> Vec<String> {
    ["--target", target, "--json"]
        .iter()
        .chain(list)
        .map(|s| (*s).to_owned())
        .collect()
}

fn report(out: &Output) -> Value {
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.lines().count(), 1, "one JSON object: {text}");
    serde_json::from_str(&text).unwrap()
}

fn assert_percentiles(p: &Value) {
    let get = |k: &str| {
        p[k].as_f64()
            .unwrap_or_else(|| panic!("{k} is a number: {p}"))
    };
    let (p50, p90, p99, max) = (get("p50"), get("p90"), get("p99"), get("max"));
    assert!(p50 > 0.0 && p50 <= p90 && p90 <= p99 && p99 <= max, "{p}");
    assert!(get("mean") > 0.0, "{p}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_json_report_counts_every_request() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let out = bench(args(&sim.url(), &["--rps", "40", "--duration", "500ms"])).await;
    let r = report(&out);
    let keys: Vec<&str> = r.as_object().unwrap().keys().map(String::as_str).collect();
    for key in [
        "target",
        "path",
        "through_stack",
        "rps",
        "duration_s",
        "concurrency",
        "requests",
        "responses",
        "failed",
        "late_starts",
        "max_start_delay_ms",
        "elapsed_s",
        "throughput_rps",
        "statuses",
        "errors",
        "latency_ms",
        "service_time_ms",
    ] {
        assert!(keys.contains(&key), "{key} in {r}");
    }
    assert_eq!(r["path"], "/v1/chat/completions");
    assert_eq!(r["through_stack"], false);
    assert_eq!(r["requests"], 20);
    assert_eq!(r["responses"], 20);
    assert_eq!(r["failed"], 0);
    assert_eq!(r["statuses"], serde_json::json!({"200": 20}));
    assert_eq!(r["errors"], serde_json::json!({}));
    assert!(r["throughput_rps"].as_f64().unwrap() > 0.0, "{r}");
    assert_percentiles(&r["latency_ms"]);
    assert_percentiles(&r["service_time_ms"]);
    assert_eq!(sim.stats().received, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_the_stack_and_on_other_paths() {
    let sim = Sim::start(SimConfig::default()).await.unwrap();
    let out = bench(args(
        &sim.url(),
        &[
            "--path",
            "/v1/embeddings",
            "--rps",
            "20",
            "--duration",
            "500ms",
            "--through-stack",
        ],
    ))
    .await;
    let r = report(&out);
    assert_eq!(r["through_stack"], true);
    assert_eq!(r["statuses"], serde_json::json!({"200": 10}), "{r}");
    let log = sim.log();
    assert!(
        !log.is_empty() && log.iter().all(|e| e.route == "POST /v1/embeddings"),
        "{log:?}"
    );

    let out = bench(args(
        &sim.url(),
        &[
            "--path",
            "/v1/messages",
            "--rps",
            "10",
            "--duration",
            "300ms",
        ],
    ))
    .await;
    assert_eq!(report(&out)["statuses"], serde_json::json!({"200": 3}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_are_counted_by_kind() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = bench(args(
        &format!("http://127.0.0.1:{port}"),
        &["--rps", "10", "--duration", "300ms"],
    ))
    .await;
    let r = report(&out);
    assert_eq!(r["failed"], 3);
    assert_eq!(r["errors"], serde_json::json!({"upstream_unreachable": 3}));
    assert_eq!(r["latency_ms"]["max"], 0.0);
}

#[test]
fn bad_arguments_are_one_line_and_exit_2() {
    for (list, want) in [
        (
            &["--target", "http://127.0.0.1:9", "--rps", "0"][..],
            "--rps 0 must be above 0",
        ),
        (
            &["--target", "127.0.0.1:9"][..],
            "--target \"127.0.0.1:9\" must be an http:// URL",
        ),
        (
            &["--target", "http://127.0.0.1:9", "--path", "v1/x"][..],
            "--path \"v1/x\" must start with /",
        ),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .arg("bench")
            .args(list)
            .output()
            .unwrap();
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.contains(want), "{err}");
    }
}
