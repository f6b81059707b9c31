//! Done when: no secret — the upstream keys, the gateway's client keys, its admin token, a key
//! in a query string — shows up in anything `tollgate proxy` printed at `--log-level trace`,
//! in any response (status line, headers, body) a client received, in `/metrics` or
//! `/health`, or in the `Debug` output of the library types that hold one; the admin routes
//! refuse a missing, wrong, wrong-length or differently-schemed token; and malformed input
//! (an oversized or non-JSON body, a huge header, bytes that are not UTF-8 in a header, a bad
//! `Content-Length`, a truncated chunked body, an unknown path) gets a 4xx while the gateway
//! keeps serving.
//!
//! The gateway is the real `tollgate` binary, in front of in-process simulators on loopback:
//! one that answers, one that answers every call with a 500, one that never answers. The
//! clients are raw HTTP/1.1 over a `TcpStream`, so every byte they received can be searched and
//! malformed requests can be sent as they are.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;
use tollgate::deferred::{AnthropicBatchApi, DeferredQueue, OpenAiBatchApi, transport};
use tollgate_core::{BoxError, Secret};
use tollgate_sim::{Sim, SimConfig, SimHandle};

/// Every secret below carries this, so one search finds any of them, whole or cut.
const CANARY: &str = "SECRET-canary";
const UPSTREAM_KEY: &str = "sk-SECRET-canary-upstream-5d1f0a7c9e";
const EXHAUSTED_KEY: &str = "sk-SECRET-canary-exhausted-93be44d2";
const REVOKED_KEY: &str = "sk-SECRET-canary-revoked-0c6e18f5aa";
const CLIENT_KEY: &str = "tg-SECRET-canary-client-6a2d9e31";
const WRONG_CLIENT_KEY: &str = "tg-SECRET-canary-wrong-client-1f7b";
const ADMIN_TOKEN: &str = "adm-SECRET-canary-admin-4c8e2b90";
const QUERY_KEY: &str = "AIza-SECRET-canary-query-77d1e0";

/// The largest body the gateways accept.
const MAX_BODY: usize = 64 * 1024;

/// The `tollgate` binary of this build (cargo builds it for the package's integration tests).
fn tollgate() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_tollgate"))
}

/// A running `tollgate proxy`, its stdout and stderr in files; killed when dropped, and then
/// its directory removed.
struct Gateway {
    child: Child,
    /// `127.0.0.1:port`.
    addr: String,
    dir: TempDir,
}

impl Gateway {
    /// Starts the gateway in front of `upstream` with `upstream_key`, at trace level; `extra`
    /// is more TOML for the `[stack]` table.
    fn start(name: &str, upstream: &str, upstream_key: &str, extra: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix(&format!("tollgate-security-{name}-"))
            .tempdir()
            .expect("a temporary directory");
        // The keys come from the environment: the file holds none.
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\napi_keys_env = \"TG_SECURITY_CLIENT_KEYS\"\n\
             admin_token_env = \"TG_SECURITY_ADMIN_TOKEN\"\nmax_body_bytes = {MAX_BODY}\n\
             shutdown_grace = \"1s\"\n\n\
             [upstream]\nbase_url = \"{upstream}\"\nkey_env = \"TG_SECURITY_UPSTREAM_KEY\"\n\n\
             [stack]\npreset = \"balanced\"\nrequest_timeout = \"2s\"\n{extra}"
        );
        let config_path = dir.path().join("tollgate.toml");
        std::fs::write(&config_path, config).expect("the config is written");
        let file = |name: &str| std::fs::File::create(dir.path().join(name)).expect("a log file");
        let child = Command::new(tollgate())
            .args(["proxy", "--config"])
            .arg(&config_path)
            .args(["--log-level", "trace"])
            .env("TG_SECURITY_UPSTREAM_KEY", upstream_key)
            .env("TG_SECURITY_CLIENT_KEYS", CLIENT_KEY)
            .env("TG_SECURITY_ADMIN_TOKEN", ADMIN_TOKEN)
            .stdin(Stdio::null())
            .stdout(file("stdout"))
            .stderr(file("stderr"))
            .spawn()
            .expect("tollgate starts");
        let mut gateway = Self {
            child,
            addr: String::new(),
            dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let out =
                std::fs::read_to_string(gateway.dir.path().join("stdout")).unwrap_or_default();
            if let Some(url) = out
                .lines()
                .find_map(|l| l.strip_prefix("listening on http://"))
            {
                gateway.addr = url.trim().to_owned();
                return gateway;
            }
            if let Ok(Some(status)) = gateway.child.try_wait() {
                panic!("the gateway exited ({status}): {}", gateway.printed());
            }
            assert!(
                Instant::now() < deadline,
                "no address: {}",
                gateway.printed()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Everything it printed so far, stdout then stderr.
    fn printed(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout"), read("stderr"))
    }

    /// Whether the process is still running.
    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Then `dir` is dropped with the other fields: the config and the logs go.
    }
}

/// One response as received: the raw bytes, and its parts.
#[derive(Debug)]
struct Reply {
    raw: Vec<u8>,
    /// 0 when the connection closed without a response.
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The error message of an OpenAI-style error body.
    fn message(&self) -> String {
        self.json()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_default()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.raw).into_owned()
    }
}

/// Sends `raw` (all of it: the request and, for a malformed one, what follows) on a fresh
/// connection, closes the writing half when `close` says so, and reads until the gateway
/// closes.
fn exchange(addr: &str, raw: &[u8], close: bool) -> Reply {
    let mut stream = TcpStream::connect(addr).expect("the gateway accepts connections");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("a timeout");
    // A refused oversize body may be cut off by the server: what it answered still counts.
    let _ = stream.write_all(raw);
    if close {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
    let mut received = Vec::new();
    let mut buffer = [0; 16 * 1024];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => received.extend_from_slice(&buffer[..n]),
            // A reset after the answer (the server closed with our body unread).
            Err(_) => break,
        }
    }
    parse(received)
}

fn parse(raw: Vec<u8>) -> Reply {
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n");
    let Some(split) = split else {
        return Reply {
            status: 0,
            head: String::from_utf8_lossy(&raw).into_owned(),
            body: Vec::new(),
            raw,
        };
    };
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let rest = &raw[split + 4..];
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(rest)
    } else {
        rest.to_vec()
    };
    Reply {
        status,
        head,
        body,
        raw,
    }
}

fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut body = Vec::new();
    while let Some(end) = rest.windows(2).position(|w| w == b"\r\n") {
        let size = std::str::from_utf8(&rest[..end])
            .ok()
            .and_then(|s| usize::from_str_radix(s.split(';').next().unwrap_or("").trim(), 16).ok())
            .unwrap_or(0);
        rest = &rest[end + 2..];
        if size == 0 || rest.len() < size {
            break;
        }
        body.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
    body
}

/// A well-formed request with `Connection: close`.
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut raw = format!("{method} {path} HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n");
    for (name, value) in headers {
        raw.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        raw.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    raw.push_str("\r\n");
    let mut raw = raw.into_bytes();
    raw.extend_from_slice(body);
    raw
}

fn bearer(key: &str) -> String {
    format!("Bearer {key}")
}

fn chat(stream: bool) -> Vec<u8> {
    let mut body = json!({
        "model": "gpt-4o-mini",
        "max_tokens": 16,
        "messages": [{"role": "user", "content": "Say hello."}],
    });
    if stream {
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
    }
    body.to_string().into_bytes()
}

/// What the clients received, for the final search.
#[derive(Default)]
struct Received(Vec<(String, Reply)>);

impl Received {
    fn keep(&mut self, what: &str, reply: Reply) -> &Reply {
        println!("{what}: {} ({} bytes)", reply.status, reply.raw.len());
        self.0.push((what.to_owned(), reply));
        &self.0.last().expect("just pushed").1
    }
}

/// Sends `raw` to `gateway` and keeps what came back.
fn send<'a>(
    received: &'a mut Received,
    gateway: &Gateway,
    what: &str,
    raw: &[u8],
    close: bool,
) -> &'a Reply {
    received.keep(what, exchange(&gateway.addr, raw, close))
}

fn chat_request(key: &str, stream: bool) -> Vec<u8> {
    request(
        "POST",
        "/v1/chat/completions",
        &[
            ("authorization", &bearer(key)),
            ("content-type", "application/json"),
        ],
        &chat(stream),
    )
}

/// A simulator on loopback, in a runtime of its own that outlives the test's blocking client.
fn simulator(runtime: &tokio::runtime::Runtime, extra: &str) -> SimHandle {
    let scenario = format!(
        "seed = 3\n{extra}\n[latency]\ntime_to_first_token = \"5ms\"\nper_output_token = \"1ms\"\n\
         [output]\nmin_tokens = 4\nmax_tokens = 12\n\
         [[keys]]\nkey = \"{UPSTREAM_KEY}\"\nname = \"upstream\"\n\
         [[keys]]\nkey = \"{EXHAUSTED_KEY}\"\nname = \"exhausted\"\nquota_exhausted = true\n\
         [[keys]]\nkey = \"{REVOKED_KEY}\"\nname = \"revoked\"\nrevoked_after = \"0s\"\n"
    );
    let config = SimConfig::from_toml(&scenario).expect("a valid scenario");
    runtime
        .block_on(Sim::start(config))
        .expect("the simulator starts")
}

/// The request a normal client sends after something odd, and that must still succeed.
fn still_serving(received: &mut Received, gateway: &Gateway, after: &str) {
    let reply = send(
        received,
        gateway,
        &format!("chat after {after}"),
        &chat_request(CLIENT_KEY, false),
        false,
    );
    assert_eq!(reply.status, 200, "after {after}: {}", reply.text());
}

#[test]
fn no_secret_reaches_logs_responses_or_metrics_and_bad_input_is_refused() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    let sim = simulator(&runtime, "");
    let failing = simulator(&runtime, "[faults]\nerror_rate = 1.0");
    let hanging = simulator(&runtime, "[faults]\nhang_rate = 1.0");
    let quick_retries = "[stack.backoff_strategy]\nmax_retries = 1\ninitial_delay = \"10ms\"\n\
                         max_delay = \"50ms\"\n";
    let mut good = Gateway::start("good", &sim.url(), UPSTREAM_KEY, quick_retries);
    let exhausted = Gateway::start("exhausted", &sim.url(), EXHAUSTED_KEY, quick_retries);
    let revoked = Gateway::start("revoked", &sim.url(), REVOKED_KEY, quick_retries);
    let broken = Gateway::start("failing", &failing.url(), UPSTREAM_KEY, quick_retries);
    let slow = Gateway::start("hanging", &hanging.url(), UPSTREAM_KEY, quick_retries);
    let mut received = Received::default();

    // What works.
    let reply = send(
        &mut received,
        &good,
        "chat",
        &chat_request(CLIENT_KEY, false),
        false,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(
        reply
            .json()
            .is_some_and(|v| v["choices"][0]["message"].is_object())
    );
    let reply = send(
        &mut received,
        &good,
        "stream",
        &chat_request(CLIENT_KEY, true),
        false,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(String::from_utf8_lossy(&reply.body).contains("data: [DONE]"));
    let embeddings = json!({"model": "text-embedding-3-small", "input": ["one", "two"]});
    let raw = request(
        "POST",
        "/v1/embeddings",
        &[
            ("authorization", &bearer(CLIENT_KEY)),
            ("content-type", "application/json"),
        ],
        embeddings.to_string().as_bytes(),
    );
    let reply = send(&mut received, &good, "embeddings", &raw, false);
    assert_eq!(reply.status, 200, "{}", reply.text());
    // A Gemini-style key in the query: never forwarded, never printed.
    let raw = request(
        "GET",
        &format!("/v1/models?key={QUERY_KEY}"),
        &[("authorization", &bearer(CLIENT_KEY))],
        b"",
    );
    let reply = send(&mut received, &good, "query key", &raw, false);
    assert!(reply.status > 0, "{}", reply.text());

    // What the upstream refuses, and what the gateway refuses.
    let reply = send(
        &mut received,
        &exhausted,
        "exhausted upstream key",
        &chat_request(CLIENT_KEY, false),
        false,
    );
    assert_eq!(reply.status, 429, "{}", reply.text());
    let reply = send(
        &mut received,
        &revoked,
        "revoked upstream key",
        &chat_request(CLIENT_KEY, false),
        false,
    );
    assert_eq!(reply.status, 401, "{}", reply.text());
    let reply = send(
        &mut received,
        &good,
        "wrong client key",
        &chat_request(WRONG_CLIENT_KEY, false),
        false,
    );
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert!(reply.message().contains("gateway key"), "{}", reply.text());
    let raw = request(
        "POST",
        "/v1/messages",
        &[("x-api-key", WRONG_CLIENT_KEY)],
        b"{}",
    );
    let reply = send(&mut received, &good, "wrong x-api-key", &raw, false);
    assert_eq!(reply.status, 401, "{}", reply.text());
    let raw = request("POST", "/v1/chat/completions", &[], &chat(false));
    let reply = send(&mut received, &good, "no client key", &raw, false);
    assert_eq!(reply.status, 401, "{}", reply.text());
    let mut statuses = Vec::new();
    for i in 0..8 {
        let what = format!("5xx burst {i}");
        let reply = send(
            &mut received,
            &broken,
            &what,
            &chat_request(CLIENT_KEY, false),
            false,
        );
        statuses.push(reply.status);
    }
    println!("5xx burst: {statuses:?}");
    assert!(
        statuses.iter().all(|s| (500..600).contains(s)),
        "{statuses:?}"
    );
    let reply = send(
        &mut received,
        &slow,
        "timeout",
        &chat_request(CLIENT_KEY, false),
        false,
    );
    assert_eq!(reply.status, 504, "{}", reply.text());

    admin_routes(&mut received, &good);
    malformed_input(&mut received, &mut good);

    // The public reports.
    for gateway in [&good, &exhausted, &revoked, &broken, &slow] {
        for path in ["/metrics", "/health"] {
            let reply = send(
                &mut received,
                gateway,
                path,
                &request("GET", path, &[], b""),
                false,
            );
            assert_eq!(reply.status, 200, "{}", reply.text());
        }
    }

    // Nothing anyone printed or received holds a secret, whole or in part.
    let secrets = [
        UPSTREAM_KEY,
        EXHAUSTED_KEY,
        REVOKED_KEY,
        CLIENT_KEY,
        WRONG_CLIENT_KEY,
        ADMIN_TOKEN,
        QUERY_KEY,
        CANARY,
    ];
    let mut printed_bytes = 0;
    for gateway in [&good, &exhausted, &revoked, &broken, &slow] {
        let printed = gateway.printed();
        printed_bytes += printed.len();
        assert!(printed.contains("TRACE"), "trace level: {printed}");
        for secret in secrets {
            let bearer = bearer(secret);
            for needle in [secret, bearer.as_str()] {
                if let Some(at) = printed.find(needle) {
                    let line = printed[..at].rfind('\n').map_or(0, |n| n + 1);
                    let end = printed[at..].find('\n').map_or(printed.len(), |n| at + n);
                    panic!("{needle:?} printed: {}", &printed[line..end]);
                }
            }
        }
    }
    let mut received_bytes = 0;
    for (what, reply) in &received.0 {
        received_bytes += reply.raw.len();
        let text = reply.text();
        for secret in secrets {
            assert!(
                !text.contains(secret),
                "{secret:?} in the reply to {what}: {text}"
            );
        }
    }
    println!(
        "searched {printed_bytes} bytes the gateways printed at trace level and {received_bytes} \
         bytes of {} replies: no secret",
        received.0.len()
    );
}

/// `/admin/*`: only `Authorization: Bearer <admin token>` gets in.
fn admin_routes(received: &mut Received, gateway: &Gateway) {
    let health = |authorization: Option<&str>| {
        let headers: Vec<(&str, &str)> = authorization
            .map(|value| vec![("authorization", value)])
            .unwrap_or_default();
        request("GET", "/admin/health", &headers, b"")
    };
    let first_byte_wrong = format!("X{}", &ADMIN_TOKEN[1..]);
    let last_byte_wrong = format!("{}X", &ADMIN_TOKEN[..ADMIN_TOKEN.len() - 1]);
    let prefix = &ADMIN_TOKEN[..ADMIN_TOKEN.len() / 2];
    let longer = format!("{ADMIN_TOKEN}0");
    let refused: [(&str, Option<String>); 9] = [
        ("missing", None),
        ("empty", Some("Bearer ".into())),
        ("first byte wrong", Some(bearer(&first_byte_wrong))),
        ("last byte wrong", Some(bearer(&last_byte_wrong))),
        ("a prefix", Some(bearer(prefix))),
        ("one byte longer", Some(bearer(&longer))),
        ("a client key", Some(bearer(CLIENT_KEY))),
        ("basic", Some(format!("Basic {ADMIN_TOKEN}"))),
        ("no scheme", Some(ADMIN_TOKEN.into())),
    ];
    for (what, authorization) in &refused {
        let what = format!("admin, {what} token");
        let reply = send(
            received,
            gateway,
            &what,
            &health(authorization.as_deref()),
            false,
        );
        assert_eq!(reply.status, 401, "{what}: {}", reply.text());
        assert!(reply.json().is_some(), "{what}: {}", reply.text());
    }
    let reply = send(
        received,
        gateway,
        "admin, right token",
        &health(Some(&bearer(ADMIN_TOKEN))),
        false,
    );
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert!(reply.json().is_some(), "{}", reply.text());
    let raw = request(
        "POST",
        "/admin/cache/clear",
        &[("authorization", &bearer(&last_byte_wrong))],
        b"",
    );
    let reply = send(received, gateway, "admin POST, wrong token", &raw, false);
    assert_eq!(reply.status, 401, "{}", reply.text());
}

/// Odd requests get a 4xx (a JSON error from the gateway, or hyper's own bare answer to what
/// is not HTTP), and the gateway answers the next normal request.
fn malformed_input(received: &mut Received, gateway: &mut Gateway) {
    let auth = bearer(CLIENT_KEY);
    let json_headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    let mut findings = Vec::new();

    // Over max_body_bytes: a 413 with a JSON error, announced or chunked.
    let mut big = chat(false);
    big.splice(
        1..1,
        format!("\"padding\":\"{}\",", "x".repeat(MAX_BODY)).into_bytes(),
    );
    let reply = send(
        received,
        gateway,
        "oversized body",
        &request("POST", "/v1/chat/completions", &json_headers, &big),
        false,
    );
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(reply.message().contains("byte limit"), "{}", reply.text());
    still_serving(received, gateway, "an oversized body");
    let mut raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\
         authorization: {auth}\r\ntransfer-encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    for piece in big.chunks(8 * 1024) {
        raw.extend_from_slice(format!("{:x}\r\n", piece.len()).as_bytes());
        raw.extend_from_slice(piece);
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(b"0\r\n\r\n");
    let reply = send(received, gateway, "oversized chunked body", &raw, false);
    assert_eq!(reply.status, 413, "{}", reply.text());
    assert!(reply.json().is_some(), "{}", reply.text());
    still_serving(received, gateway, "an oversized chunked body");

    // Not JSON where JSON is expected: the gateway's own 400, nothing sent upstream.
    for (what, body) in [
        ("a body that is not JSON", &b"this is { not json"[..]),
        ("a JSON body that is not an object", &b"[1, 2, 3]"[..]),
        (
            "a body that is not UTF-8",
            &b"{\"model\": \"\xff\xfe\"}"[..],
        ),
    ] {
        let raw = request("POST", "/v1/chat/completions", &json_headers, body);
        let reply = send(received, gateway, what, &raw, false);
        assert_eq!(reply.status, 400, "{what}: {}", reply.text());
        let error = reply
            .json()
            .unwrap_or_else(|| panic!("{what}: {}", reply.text()));
        assert_eq!(
            error["error"]["type"], "invalid_request_error",
            "{what}: {error}"
        );
        let message = error["error"]["message"].as_str().unwrap_or_default();
        assert!(message.starts_with("tollgate: "), "{what}: {error}");
        still_serving(received, gateway, what);
    }

    // Unknown paths: a 404 with a JSON error.
    for path in [
        "/",
        "/v2/chat/completions",
        "/admin",
        "/metrics/x",
        "/%ff%00",
    ] {
        let reply = send(
            received,
            gateway,
            &format!("unknown path {path}"),
            &request("GET", path, &[("authorization", &auth)], b""),
            false,
        );
        assert_eq!(reply.status, 404, "{path}: {}", reply.text());
        assert!(reply.json().is_some(), "{path}: {}", reply.text());
    }
    still_serving(received, gateway, "unknown paths");

    // Headers: a huge one, bytes that are not UTF-8, a key that is not UTF-8.
    let huge = "h".repeat(1024 * 1024);
    let raw = request(
        "POST",
        "/v1/chat/completions",
        &[("authorization", &auth), ("x-huge", &huge)],
        &chat(false),
    );
    let reply = send(received, gateway, "a 1 MiB header", &raw, false);
    findings.push(("a 1 MiB header", reply.status, reply.json().is_some()));
    assert!(
        reply.status == 0 || (400..500).contains(&reply.status),
        "{}",
        reply.head
    );
    still_serving(received, gateway, "a 1 MiB header");
    let mut raw = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\
         authorization: {auth}\r\ncontent-type: application/json\r\n\
         content-length: {}\r\nx-odd: ",
        chat(false).len()
    )
    .into_bytes();
    raw.extend_from_slice(b"caf\xe9 \xff\xfe\r\n\r\n");
    raw.extend_from_slice(&chat(false));
    let reply = send(received, gateway, "a header that is not UTF-8", &raw, false);
    findings.push((
        "a header value that is not UTF-8",
        reply.status,
        reply.json().is_some(),
    ));
    assert!(reply.status < 500, "{}", reply.text());
    still_serving(received, gateway, "a header that is not UTF-8");
    let raw = b"POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\
                    authorization: Bearer tg-\xff\xfe-key\r\ncontent-length: 2\r\n\r\n{}"
        .to_vec();
    let reply = send(
        received,
        gateway,
        "a client key that is not UTF-8",
        &raw,
        false,
    );
    assert_eq!(reply.status, 401, "{}", reply.text());
    assert!(reply.json().is_some(), "{}", reply.text());

    // Bodies that do not match their framing.
    let cases: [(&str, Vec<u8>, bool); 4] = [
        (
            "a Content-Length that is not a number",
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\
                 authorization: {auth}\r\ncontent-length: abc\r\n\r\n{{}}"
            )
            .into_bytes(),
            false,
        ),
        (
            "two different Content-Lengths",
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\
                 authorization: {auth}\r\ncontent-length: 2\r\ncontent-length: 5\r\n\r\n{{}}"
            )
            .into_bytes(),
            false,
        ),
        (
            "a body shorter than its Content-Length",
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\
                 authorization: {auth}\r\ncontent-length: 500\r\n\r\n{{\"model\":"
            )
            .into_bytes(),
            true,
        ),
        (
            "a truncated chunked body",
            format!(
                "POST /v1/chat/completions HTTP/1.1\r\nhost: gateway\r\nconnection: close\r\n\
                 authorization: {auth}\r\ntransfer-encoding: chunked\r\n\r\n\
                 40\r\n{{\"model\":\"gpt-4o-mini\""
            )
            .into_bytes(),
            true,
        ),
    ];
    for (what, raw, close) in cases {
        let reply = send(received, gateway, what, &raw, close);
        findings.push((what, reply.status, reply.json().is_some()));
        assert!(
            reply.status == 0 || (400..500).contains(&reply.status),
            "{what}: {}",
            reply.text()
        );
        still_serving(received, gateway, what);
    }
    assert!(gateway.alive(), "the gateway is still running");
    println!("malformed HTTP (what, status, JSON body): {findings:?}");
}

/// The library types that hold a key show none in `Debug`: the batch APIs (and a deferred
/// queue using one) and the stack's config. (`Secret` itself, the pool's members and the Redis
/// stores with a password in their URL have tests of their own in their crates.)
#[tokio::test]
async fn debug_output_never_shows_a_secret() {
    const KEY: &str = "sk-SECRET-canary-debug-0b5e71";
    let sim = tollgate_sim::SimService::new(SimConfig::from_toml("seed = 1").expect("valid"))
        .expect("valid");
    let net = transport(
        tower::ServiceBuilder::new()
            .map_err(|never: std::convert::Infallible| -> BoxError { match never {} })
            .service(sim),
    );
    let openai = OpenAiBatchApi::new("http://127.0.0.1:9", Secret::new(KEY), net.clone());
    let anthropic = AnthropicBatchApi::new("http://127.0.0.1:9", Secret::new(KEY), net.clone());
    let dir = tempfile::Builder::new()
        .prefix("tollgate-security-debug-")
        .tempdir()
        .expect("a temporary directory");
    let queue = DeferredQueue::builder(dir.path().join("queue.redb"), net)
        .batch_api(openai.clone())
        .open()
        .await
        .expect("the queue opens");
    let stack = tollgate::StackConfig::from_json(
        r#"{"preset": "balanced", "max_requests_per_minute": 500,
            "circuit_breaker": {"failure_threshold": 5}}"#,
    )
    .expect("a valid config");
    let shown = [
        format!("{:?}", Secret::new(KEY)),
        format!("{openai:?}"),
        format!("{anthropic:?}"),
        format!("{queue:?}"),
        format!("{stack:?}"),
    ];
    queue.shutdown().await;
    for text in &shown {
        assert!(!text.contains(CANARY), "{text}");
    }
    assert!(shown[1].contains("Secret(***)"), "{}", shown[1]);
}
