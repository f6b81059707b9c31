//! `tollgate classify --json` on every sample in `docs/samples/`, against values worked out by
//! hand from the providers' API references (the table in `docs/outcomes.md`).

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

use serde_json::{Value, json};

fn samples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/samples")
}

fn tollgate(args: &[&str], stdin: Option<&[u8]>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary runs");
    if let Some(input) = stdin {
        use std::io::Write;
        child.stdin.take().unwrap().write_all(input).unwrap();
    }
    drop(child.stdin.take());
    child.wait_with_output().unwrap()
}

fn classify_json(sample: &str) -> Value {
    let path = samples().join(sample);
    let out = tollgate(&["classify", "--json", path.to_str().unwrap()], None);
    assert!(
        out.status.success(),
        "{sample}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "exactly one JSON object: {text}");
    serde_json::from_str(&text).unwrap()
}

fn window(limit: Option<u64>, remaining: Option<u64>, reset_ms: Option<u64>) -> Value {
    json!({"limit": limit, "remaining": remaining, "reset_ms": reset_ms})
}

#[test]
fn every_sample_classifies_as_documented() {
    let none = Value::Null;
    let cases = [
        (
            "openai-429-tokens.http",
            json!({"outcome": "rate_limited", "retryable": true, "retry_after_ms": 1146, "dimension": "tokens",
                "rate_limit": {"requests": window(Some(5000), Some(4999), Some(12)),
                    "tokens": window(Some(50000), Some(2051), Some(179_560)), "input_tokens": none, "output_tokens": none}}),
        ),
        (
            "openai-429-insufficient-quota.http",
            json!({"outcome": "quota_exhausted", "retryable": false, "retry_after_ms": null, "dimension": null,
                "rate_limit": {"requests": none, "tokens": none, "input_tokens": none, "output_tokens": none}}),
        ),
        (
            "openai-429-request-too-large.http",
            json!({"outcome": "request_too_large", "retryable": false, "retry_after_ms": null, "dimension": null,
                "rate_limit": {"requests": none, "tokens": window(Some(30000), Some(30000), Some(0)),
                    "input_tokens": none, "output_tokens": none}}),
        ),
        (
            "openai-200-chat.http",
            json!({"outcome": "success", "retryable": false, "retry_after_ms": null, "dimension": null,
                "rate_limit": {"requests": window(Some(10000), Some(9999), Some(6)),
                    "tokens": window(Some(30_000_000), Some(29_999_980), Some(3_723_000)),
                    "input_tokens": none, "output_tokens": none}}),
        ),
        (
            "anthropic-429-rate-limit.http",
            json!({"outcome": "rate_limited", "retryable": true, "retry_after_ms": 30000, "dimension": "input_tokens",
                "rate_limit": {"requests": window(Some(50), Some(49), Some(1000)),
                    "tokens": window(Some(50000), Some(0), Some(30000)),
                    "input_tokens": window(Some(40000), Some(0), Some(30000)),
                    "output_tokens": window(Some(10000), Some(8000), Some(6000))}}),
        ),
        (
            "anthropic-529-overloaded.http",
            json!({"outcome": "overloaded", "retryable": true, "retry_after_ms": null, "dimension": null,
                "rate_limit": {"requests": none, "tokens": none, "input_tokens": none, "output_tokens": none}}),
        ),
        (
            "anthropic-500-overloaded.http",
            json!({"outcome": "overloaded", "retryable": true, "retry_after_ms": null, "dimension": null,
                "rate_limit": {"requests": none, "tokens": none, "input_tokens": none, "output_tokens": none}}),
        ),
        (
            "gemini-429-per-minute.http",
            json!({"outcome": "rate_limited", "retryable": true, "retry_after_ms": 37000, "dimension": "requests",
                "rate_limit": {"requests": none, "tokens": none, "input_tokens": none, "output_tokens": none}}),
        ),
        (
            "gemini-429-per-day.http",
            json!({"outcome": "quota_exhausted", "retryable": false, "retry_after_ms": 1500, "dimension": null,
                "rate_limit": {"requests": none, "tokens": none, "input_tokens": none, "output_tokens": none}}),
        ),
        (
            "azure-429.http",
            json!({"outcome": "rate_limited", "retryable": true, "retry_after_ms": 36500, "dimension": "tokens",
                "rate_limit": {"requests": none, "tokens": window(None, Some(0), None),
                    "input_tokens": none, "output_tokens": none}}),
        ),
        (
            "mistral-200.http",
            json!({"outcome": "success", "retryable": false, "retry_after_ms": null, "dimension": null,
                "rate_limit": {"requests": none, "tokens": window(Some(500_000), Some(499_100), None),
                    "input_tokens": none, "output_tokens": none}}),
        ),
        (
            "together-200.http",
            json!({"outcome": "success", "retryable": false, "retry_after_ms": null, "dimension": null,
                "rate_limit": {"requests": window(Some(10), Some(9), Some(1000)),
                    "tokens": window(Some(200_000), Some(199_000), None),
                    "input_tokens": none, "output_tokens": none}}),
        ),
        (
            "groq-200.http",
            json!({"outcome": "success", "retryable": false, "retry_after_ms": null, "dimension": null,
                "rate_limit": {"requests": window(Some(14400), Some(14370), Some(179_560)),
                    "tokens": window(Some(6000), Some(5997), Some(7660)),
                    "input_tokens": none, "output_tokens": none}}),
        ),
    ];
    let mut checked = 0;
    for (sample, want) in cases {
        assert_eq!(classify_json(sample), want, "{sample}");
        checked += 1;
    }
    let on_disk = std::fs::read_dir(samples())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "http")
        })
        .count();
    assert_eq!(
        checked, on_disk,
        "every sample in docs/samples has a case here"
    );
}

#[test]
fn reads_standard_input_and_prints_text() {
    let input = std::fs::read(samples().join("anthropic-529-overloaded.http")).unwrap();
    let out = tollgate(&["classify", "-"], Some(&input));
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("outcome:     overloaded\nstatus:      529"),
        "{text}"
    );
    assert!(text.contains("retryable:   yes"), "{text}");
}

#[test]
fn malformed_input_is_one_line_and_exit_2() {
    for input in [&b"not an http response"[..], b"HTTP/1.1 200 OK\r\nx: y\r\n"] {
        let out = tollgate(&["classify", "--json"], Some(input));
        assert_eq!(out.status.code(), Some(2));
        assert!(out.stdout.is_empty());
        let err = String::from_utf8(out.stderr).unwrap();
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(err.starts_with("tollgate: malformed response"), "{err}");
    }
    let out = tollgate(&["classify", "/nonexistent/capture.http"], None);
    assert_eq!(out.status.code(), Some(2));
}
