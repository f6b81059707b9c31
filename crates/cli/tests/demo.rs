//! `tollgate demo` end to end (half the README's): the stack's column
//! completes more and receives fewer 429s than the naive client's.

use std::process::Command;

#[test]
fn the_stack_beats_the_naive_client() {
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["demo", "--requests", "1500", "--workers", "64", "--json"])
        .output()
        .expect("the demo runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).expect("JSON");
    let (naive, tollgate) = (&report["naive"], &report["tollgate"]);
    let number = |v: &serde_json::Value, field: &str| v[field].as_u64().expect(field);
    assert_eq!(number(tollgate, "completed"), 1500, "{report}");
    assert_eq!(number(tollgate, "failed"), 0, "{report}");
    assert!(
        number(tollgate, "completed") > number(naive, "completed"),
        "{report}"
    );
    assert!(
        number(tollgate, "rate_limited_429") < number(naive, "rate_limited_429"),
        "{report}"
    );
    assert!(
        number(tollgate, "upstream_calls") < number(naive, "upstream_calls"),
        "{report}"
    );
    // Against a provider that sends no rate-limit headers, the pace is learned from its 429s.
    let (naive, tollgate) = (
        &report["no_headers"]["naive"],
        &report["no_headers"]["tollgate"],
    );
    assert_eq!(number(tollgate, "failed"), 0, "{report}");
    assert!(
        number(tollgate, "rate_limited_429") * 10 < number(tollgate, "upstream_calls"),
        "{report}"
    );
    assert!(
        number(tollgate, "completed") > number(naive, "completed"),
        "{report}"
    );
}

#[test]
fn bad_arguments_are_refused_clearly() {
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["demo", "--requests", "0"])
        .output()
        .expect("the demo runs");
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("--requests, --workers and --gemini-requests must be at least 1")
    );
}
