//! `tollgate sim`: one line with the address, then a provider that answers until stopped.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};

use tempfile::NamedTempFile;

/// A scenario file holding `contents`, removed when dropped.
fn scenario_file(prefix: &str, contents: &str) -> NamedTempFile {
    let file = tempfile::Builder::new()
        .prefix(prefix)
        .suffix(".toml")
        .tempfile()
        .unwrap();
    std::fs::write(file.path(), contents).unwrap();
    file
}

#[test]
fn serves_a_scenario_on_the_printed_address() {
    let scenario = scenario_file(
        "tollgate-sim-cli-",
        "[[keys]]\nkey = \"sk-cli\"\nrequests_per_minute = 7\n",
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["sim", "--port", "0", "--config"])
        .arg(scenario.path())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap_or_else(|| panic!("{line:?}"));
    let addr = url.strip_prefix("http://").unwrap();

    let body =
        r#"{"model":"gpt-4o-mini","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#;
    let mut stream = TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "POST /v1/chat/completions HTTP/1.1\r\nhost: {addr}\r\nauthorization: Bearer sk-cli\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    child.kill().unwrap();
    child.wait().unwrap();

    assert!(response.starts_with("HTTP/1.1 200 OK"), "{response}");
    assert!(
        response.contains("x-ratelimit-limit-requests: 7"),
        "{response}"
    );
    assert!(
        response.contains("\"object\":\"chat.completion\""),
        "{response}"
    );
}

#[test]
fn a_bad_scenario_is_one_line_and_exit_2() {
    let scenario = scenario_file("tollgate-sim-bad-", "[faults]\nerror_rate = 2.0\n");
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["sim", "--config"])
        .arg(scenario.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("faults.error_rate"), "{err}");
}
