//! Hostile clients against `tollgate proxy`: each test reproduces one way a client (or an
//! upstream) could make the gateway fall over, leak memory, hold slots, share what it must not,
//! or bill twice, and checks that it no longer does. Every bound checked here is listed in
//! `docs/security.md`.
//!
//! The gateway is the real `tollgate` binary (a child process, so its memory can be read from
//! `/proc`), in front of an in-process simulator or a small upstream written here, on loopback.
//! Clients are raw TCP where the attack needs bytes no HTTP client would send.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use support::{CLIENT_KEY, Proxy, bearer, call, config, sim};

const OTHER_KEY: &str = "tg-other-client-5c1e";

/// The gateway's resident memory, in KiB.
fn rss_kib(proxy: &Proxy) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{}/status", proxy.child.id())).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

/// `host:port` of the gateway.
fn authority(proxy: &Proxy) -> String {
    proxy.url.trim_start_matches("http://").to_owned()
}

/// A gateway config with two client keys.
fn two_keys(upstream: &str, extra: &str) -> String {
    config(upstream, extra).replace(
        &format!("api_keys = [\"{CLIENT_KEY}\"]"),
        &format!("api_keys = [\"{CLIENT_KEY}\", \"{OTHER_KEY}\"]"),
    )
}

async fn scrape(proxy: &Proxy) -> String {
    let answer = support::send(support::get(&format!("{}/metrics", proxy.url))).await;
    assert_eq!(answer.status, StatusCode::OK);
    String::from_utf8(answer.body.to_vec()).unwrap()
}

/// Writes `raw` on a fresh connection and reads until the server closes it (or `within`
/// passes): the bytes received.
async fn exchange(addr: &str, raw: &[u8], within: Duration) -> Vec<u8> {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(raw).await.unwrap();
    let mut received = Vec::new();
    let _ = tokio::time::timeout(within, tcp.read_to_end(&mut received)).await;
    received
}

fn status_of(raw: &[u8]) -> u16 {
    let text = String::from_utf8_lossy(raw);
    text.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"))
}

fn chat_body(model: &str) -> Value {
    json!({"model": model, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]})
}

// ---------------------------------------------------------------------------------------------
// 1. Metric cardinality from the client's `model`.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_model_names_keep_memory_and_the_scrape_flat() {
    // Limits far above the load: what is measured is the gateway, not the upstream's pace.
    let upstream =
        sim("[limits]\nrequests_per_minute = 1000000000\ntokens_per_minute = 1000000000000\n")
            .await;
    let proxy = Proxy::start(&config(
        &upstream.url(),
        "[stack]\nmax_concurrent_requests = 64\n[stack.cache]\nenabled = false\n",
    ));
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let send_names = |range: std::ops::Range<usize>| {
        let client = client.clone();
        let url = format!("{}/v1/chat/completions", proxy.url);
        async move {
            let workers = 16;
            let mut tasks = Vec::new();
            for w in 0..workers {
                let client = client.clone();
                let url = url.clone();
                let range = range.clone();
                tasks.push(tokio::spawn(async move {
                    for i in range.skip(w).step_by(workers) {
                        let body = chat_body(&format!("made-up-model-{i:06}"));
                        let request = Request::post(&url)
                            .header("authorization", format!("Bearer {CLIENT_KEY}"))
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from(body.to_string())))
                            .unwrap();
                        let response = client.request(request).await.unwrap();
                        let status = response.status();
                        let body = response.into_body().collect().await.unwrap().to_bytes();
                        assert!(
                            status.is_success(),
                            "{status}: {}",
                            String::from_utf8_lossy(&body)
                        );
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        }
    };
    // Past every per-scope bound (10,000 scopes in the breaker, overload and rate-limit maps,
    // 4,096 metric handles): from here on, new names evict idle scopes and memory stays put.
    let started = Instant::now();
    send_names(0..12_000).await;
    let scrape_before = scrape(&proxy).await.len();
    let rss_before = rss_kib(&proxy);
    send_names(12_000..32_000).await;
    let took = started.elapsed();
    let scrape_after = scrape(&proxy).await;
    let rss_after = rss_kib(&proxy);
    println!(
        "32,000 model names in {took:?}; after 12,000 and after 32,000: scrape {scrape_before} → \
         {} bytes, RSS {rss_before} → {rss_after} KiB",
        scrape_after.len()
    );
    assert!(
        !scrape_after.contains("made-up-model-"),
        "unlisted models are labelled other"
    );
    assert!(
        scrape_after.len() <= scrape_before + 2048,
        "the scrape stays flat: {scrape_before} → {}",
        scrape_after.len()
    );
    assert!(
        rss_after <= rss_before + 8 * 1024,
        "20,000 more names keep RSS flat: {rss_before} → {rss_after} KiB"
    );

    // One request with a 4 MiB model name: refused, nothing kept.
    let huge = "m".repeat(4 << 20);
    let answer = call(
        &proxy,
        "/v1/chat/completions",
        bearer(CLIENT_KEY),
        &chat_body(&huge),
    )
    .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST);
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("model name is not valid"), "{message}");
    assert!(message.len() < 300, "the name is not echoed");
    let health = support::send(support::get(&format!("{}/health", proxy.url))).await;
    assert!(health.body.len() < 4 << 20);
    upstream.shutdown().await;
}

#[tokio::test]
async fn metrics_can_require_a_token_or_live_on_their_own_address() {
    let upstream = sim("").await;
    let proxy = Proxy::start_with_env(
        &config(
            &upstream.url(),
            "[metrics]\ntoken_env = \"TG_TEST_METRICS_TOKEN\"\n",
        ),
        &[("TG_TEST_METRICS_TOKEN", "mt-0123456789")],
    );
    let url = format!("{}/metrics", proxy.url);
    assert_eq!(
        support::send(support::get(&url)).await.status,
        StatusCode::UNAUTHORIZED
    );
    let request = Request::get(&url)
        .header("authorization", "Bearer mt-0123456789")
        .body(Full::default())
        .unwrap();
    let answer = support::send(request).await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(String::from_utf8_lossy(&answer.body).contains("tollgate_proxy_refusals_total"));
    drop(proxy);

    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = Proxy::start(&config(
        &upstream.url(),
        &format!("[metrics]\nlisten = \"127.0.0.1:{port}\"\n"),
    ));
    let main = support::send(support::get(&format!("{}/metrics", proxy.url))).await;
    assert_eq!(
        main.status,
        StatusCode::NOT_FOUND,
        "not on the main address"
    );
    let own = support::send(support::get(&format!("http://127.0.0.1:{port}/metrics"))).await;
    assert_eq!(own.status, StatusCode::OK);
    upstream.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 2. Slowloris.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_connections_are_closed_and_valid_requests_keep_going() {
    let upstream = sim("").await;
    let proxy = Proxy::start(&config(&upstream.url(), "").replace(
        "[server]\n",
        "[server]\nheader_read_timeout = \"2s\"\nmax_connections = 700\n",
    ));
    let addr = authority(&proxy);
    let opened = Instant::now();
    let mut slow = Vec::new();
    for _ in 0..500 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            .await
            .unwrap();
        slow.push(tcp);
    }
    // While they hang on, valid requests are answered.
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let started = Instant::now();
        let answer = support::ask(&proxy).await;
        assert_eq!(answer.status, StatusCode::OK);
        let health = support::send(support::get(&format!("{}/health", proxy.url))).await;
        assert_eq!(health.status, StatusCode::OK);
        worst = worst.max(started.elapsed());
    }
    // Each slow connection is closed by the gateway within the header timeout (plus slack).
    let mut closed = 0;
    for tcp in &mut slow {
        let mut buf = [0u8; 256];
        let read = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
        if matches!(read, Ok(Ok(_) | Err(_))) {
            closed += 1;
        }
    }
    let all_closed = opened.elapsed();
    println!(
        "500 slow-header connections closed after {all_closed:?}; valid requests: worst {worst:?}"
    );
    assert_eq!(closed, 500);
    assert!(all_closed < Duration::from_secs(12), "{all_closed:?}");
    upstream.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_connection_cap_holds_and_is_logged() {
    let upstream = sim("").await;
    let proxy = Proxy::start(&config(&upstream.url(), "").replace(
        "[server]\n",
        "[server]\nheader_read_timeout = \"2s\"\nmax_connections = 20\n",
    ));
    let addr = authority(&proxy);
    let mut slow = Vec::new();
    for _ in 0..30 {
        slow.push(TcpStream::connect(&addr).await.unwrap());
    }
    // The cap is reached; the 21st to 30th wait in the backlog, and the header timeout frees
    // the first 20, so a request made now is answered.
    let answer = tokio::time::timeout(Duration::from_secs(15), support::ask(&proxy))
        .await
        .expect("answered once the slow connections are closed");
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        proxy.log().contains("connection limit reached"),
        "{}",
        proxy.log()
    );
    drop(slow);
    upstream.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 3. Body flood.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_flood_stays_within_the_byte_budget() {
    let upstream = sim("").await;
    let proxy = Proxy::start(&config(&upstream.url(), "").replace(
        "[server]\n",
        "[server]\nmax_body_bytes = 33554432\nmax_body_bytes_in_flight = 50331648\n\
         body_read_timeout = \"4s\"\n",
    ));
    let addr = authority(&proxy);
    let rss_before = rss_kib(&proxy);
    let length = 30 * 1024 * 1024 - 1;
    let mut floods = Vec::new();
    for _ in 0..30 {
        let addr = addr.clone();
        floods.push(tokio::spawn(async move {
            let mut tcp = TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \
                 {CLIENT_KEY}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            let chunk = vec![b' '; 1 << 20];
            // As much as the gateway takes within 3 s, then nothing more.
            let until = tokio::time::Instant::now() + Duration::from_secs(3);
            let mut sent = 0usize;
            while sent + chunk.len() < length {
                match tokio::time::timeout_at(until, tcp.write_all(&chunk)).await {
                    Ok(Ok(())) => sent += chunk.len(),
                    _ => break,
                }
            }
            let mut answer = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut answer)).await;
            (sent, answer)
        }));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let rss_during = rss_kib(&proxy);
    let mut sent = 0;
    let mut statuses = HashMap::new();
    for flood in floods {
        let (n, answer) = flood.await.unwrap();
        sent += n;
        if !answer.is_empty() {
            *statuses.entry(status_of(&answer)).or_insert(0) += 1;
        }
    }
    println!(
        "30 × {length} B bodies: clients wrote {} MiB, gateway RSS {rss_before} → {rss_during} \
         KiB, answers {statuses:?}",
        sent >> 20
    );
    // 48 MiB of budget, plus what sits in socket buffers and the allocator's slack.
    assert!(
        rss_during <= rss_before + 80 * 1024,
        "RSS {rss_before} → {rss_during} KiB"
    );
    assert!(
        statuses.keys().all(|s| *s == 408),
        "every flooder timed out: {statuses:?}"
    );
    let answer = support::ask(&proxy).await;
    assert_eq!(
        answer.status,
        StatusCode::OK,
        "and the gateway still serves"
    );
    upstream.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 4. Clients that stop reading.

/// Sends a streamed chat request for `tokens` tokens on a raw connection and reads only the
/// first bytes of the answer, then nothing more: the connection is kept open.
async fn stalled_stream(addr: &str, key: &str, tokens: u32) -> TcpStream {
    let body = json!({"model": "gpt-4o-mini", "max_tokens": tokens, "stream": true,
        "messages": [{"role": "user", "content": "Write a lot."}]})
    .to_string();
    // A small receive buffer: the kernel would otherwise take tens of MB on the client's
    // behalf (loopback autotuning), and the gateway would never see it stop reading.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(16 * 1024).unwrap();
    let mut tcp = socket.connect(addr.parse().unwrap()).await.unwrap();
    let head = format!(
        "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut first = [0u8; 64];
    let n = tcp.read(&mut first).await.unwrap();
    assert!(first[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &first[..n]);
    tcp
}

const LONG_STREAMS: &str = "[output]\nmin_tokens = 200000\nmax_tokens = 200000\n";

/// Tokens in a stream a stalled client asks for: about 10 MB, more than the gateway's socket
/// buffers and queue hold.
const STREAM_TOKENS: u32 = 40_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stalled_readers_release_their_slots_within_the_send_timeout() {
    let upstream = sim(LONG_STREAMS).await;
    let proxy = Proxy::start(
        &two_keys(
            &upstream.url(),
            "[stack]\nmax_concurrent_requests = 2\nadaptive_concurrency = false\n\
             [stack.cache]\nenabled = false\n",
        )
        .replace(
            "[server]\n",
            "[server]\nsend_timeout = \"2s\"\nmax_in_flight_per_key = 2\n",
        ),
    );
    let addr = authority(&proxy);
    // HTTP/1.1: the client's socket fills up and the gateway's writes wait.
    let (a, b) = tokio::join!(
        stalled_stream(&addr, CLIENT_KEY, STREAM_TOKENS),
        stalled_stream(&addr, CLIENT_KEY, STREAM_TOKENS)
    );
    let waited = behind_two_stalled_streams(&proxy).await;
    println!("HTTP/1.1: a 4-token request behind two stalled streams waited {waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    drop((a, b));

    // HTTP/2: the client's stream window stays closed; the socket itself is not blocked.
    let client = Client::builder(TokioExecutor::new())
        .http2_only(true)
        .http2_initial_stream_window_size(16 * 1024)
        .http2_initial_connection_window_size(16 * 1024 * 4)
        .build_http::<Full<Bytes>>();
    let stalled = |client: Client<_, Full<Bytes>>| {
        let request = support::post(
            &format!("{}/v1/chat/completions", proxy.url),
            Some(("authorization", &format!("Bearer {CLIENT_KEY}"))),
            &json!({"model": "gpt-4o-mini", "max_tokens": STREAM_TOKENS, "stream": true,
                "messages": [{"role": "user", "content": "Write a lot."}]}),
        );
        async move { client.request(request).await.unwrap() }
    };
    let (a, b) = tokio::join!(stalled(client.clone()), stalled(client.clone()));
    assert_eq!((a.status(), b.status()), (StatusCode::OK, StatusCode::OK));
    let waited = behind_two_stalled_streams(&proxy).await;
    println!("HTTP/2: a 4-token request behind two stalled streams waited {waited:?}");
    assert!(waited < Duration::from_secs(10), "{waited:?}");
    assert!(
        proxy.log().contains("stopped reading"),
        "the cut is logged: {}",
        proxy.log()
    );
    drop((a, b));
    upstream.shutdown().await;
}

/// How long another key's small request takes while both slots are held.
async fn behind_two_stalled_streams(proxy: &Proxy) -> Duration {
    let started = Instant::now();
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        call(
            proxy,
            "/v1/chat/completions",
            bearer(OTHER_KEY),
            &chat_body("gpt-4o-mini"),
        ),
    )
    .await
    .expect("answered once the stalled streams are cut");
    assert_eq!(answer.status, StatusCode::OK);
    started.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_cannot_hold_every_slot() {
    let upstream = sim(LONG_STREAMS).await;
    // Four slots and two keys: each key may hold two.
    let proxy = Proxy::start(&two_keys(
        &upstream.url(),
        "[stack]\nmax_concurrent_requests = 4\n[stack.cache]\nenabled = false\n",
    ));
    let addr = authority(&proxy);
    let held = [
        stalled_stream(&addr, CLIENT_KEY, STREAM_TOKENS).await,
        stalled_stream(&addr, CLIENT_KEY, STREAM_TOKENS).await,
    ];
    let refused = call(
        &proxy,
        "/v1/chat/completions",
        bearer(CLIENT_KEY),
        &chat_body("gpt-4o-mini"),
    )
    .await;
    assert_eq!(refused.status, StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.header("retry-after") == "1");
    let message = refused.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.contains("max_in_flight_per_key"), "{message}");
    let other = call(
        &proxy,
        "/v1/chat/completions",
        bearer(OTHER_KEY),
        &chat_body("gpt-4o-mini"),
    )
    .await;
    assert_eq!(other.status, StatusCode::OK, "the other key is served");
    drop(held);
    upstream.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 5 and 6. The cache: per key, never forced by clients, and never holding a stream whole.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateway_keys_never_share_a_cache_entry_and_clients_cannot_force_caching() {
    let upstream = sim("").await;
    let proxy = Proxy::start(&two_keys(&upstream.url(), ""));
    let deterministic = json!({"model": "gpt-4o-mini", "max_tokens": 8, "temperature": 0,
        "messages": [{"role": "user", "content": "Same prompt."}]});
    let first = call(
        &proxy,
        "/v1/chat/completions",
        bearer(CLIENT_KEY),
        &deterministic,
    )
    .await;
    assert_eq!(first.status, StatusCode::OK);
    let again = call(
        &proxy,
        "/v1/chat/completions",
        bearer(CLIENT_KEY),
        &deterministic,
    )
    .await;
    assert_eq!(
        again.header("x-tollgate-cache"),
        "hit",
        "a key's own answers are cached"
    );
    let other = call(
        &proxy,
        "/v1/chat/completions",
        bearer(OTHER_KEY),
        &deterministic,
    )
    .await;
    assert_eq!(other.status, StatusCode::OK);
    assert!(
        other.headers.get("x-tollgate-cache").is_none(),
        "another key never gets it: {:?}",
        other.headers
    );
    assert_eq!(upstream.stats().accepted, 2);

    // `x-tollgate-cache: force` from a client is not the operator's say.
    let hot = json!({"model": "gpt-4o-mini", "max_tokens": 8, "temperature": 0.9,
        "messages": [{"role": "user", "content": "Be creative."}]});
    for _ in 0..2 {
        let request = Request::post(format!("{}/v1/chat/completions", proxy.url))
            .header("authorization", format!("Bearer {CLIENT_KEY}"))
            .header("x-tollgate-cache", "force")
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(hot.to_string())))
            .unwrap();
        let answer = support::send(request).await;
        assert_eq!(answer.status, StatusCode::OK);
        assert!(answer.headers.get("x-tollgate-cache").is_none());
    }
    assert_eq!(upstream.stats().accepted, 4, "both went upstream");
    upstream.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forced_streams_to_clients_that_never_read_are_not_held_whole() {
    let upstream = sim(LONG_STREAMS).await;
    let proxy = Proxy::start(
        &config(&upstream.url(), "[stack]\nmax_concurrent_requests = 8\n").replace(
            "[server]\n",
            "[server]\nclient_cache_headers = true\nsend_timeout = \"30s\"\n",
        ),
    );
    let addr = authority(&proxy);
    let rss_before = rss_kib(&proxy);
    let body = json!({"model": "gpt-4o-mini", "max_tokens": 200_000, "stream": true,
        "temperature": 0, "messages": [{"role": "user", "content": "Everything."}]})
    .to_string();
    let mut held = Vec::new();
    for i in 0..4 {
        let mut tcp = TcpStream::connect(&addr).await.unwrap();
        // Four different prompts: four recordings, none joined.
        let body = body.replace("Everything.", &format!("Everything {i}."));
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \
             {CLIENT_KEY}\r\nX-Tollgate-Cache: force\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        held.push(tcp);
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rss_during = rss_kib(&proxy);
    println!("4 forced 200k-token streams, never read: RSS {rss_before} → {rss_during} KiB");
    assert!(
        rss_during <= rss_before + 32 * 1024,
        "RSS {rss_before} → {rss_during} KiB"
    );
    drop(held);
    upstream.shutdown().await;
}

// ---------------------------------------------------------------------------------------------
// 8 and 9: what reaches the upstream, and what comes back. An upstream written here records
// every request it gets.

#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Behaviour {
    /// Reads the request, then closes the connection without a word.
    Reset,
    /// Answers 200 with cookies and organisation headers (and embeddings for embeddings).
    Answer,
}

/// A raw HTTP/1.1 upstream on loopback that records what it gets.
async fn recording_upstream(behaviour: Behaviour) -> (String, Arc<Mutex<Vec<Seen>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let _ = serve_one(tcp, behaviour, log).await;
            });
        }
    });
    (url, seen)
}

async fn serve_one(
    mut tcp: TcpStream,
    behaviour: Behaviour,
    log: Arc<Mutex<Vec<Seen>>>,
) -> std::io::Result<()> {
    loop {
        let mut buf = Vec::new();
        let head_end = loop {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let mut lines = head.lines();
        let mut first = lines.next().unwrap_or_default().split(' ');
        let method = first.next().unwrap_or_default().to_owned();
        let path = first.next().unwrap_or_default().to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 4096];
            let n = tcp.read(&mut chunk).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        let body: Value =
            serde_json::from_slice(&buf[head_end..head_end + length]).unwrap_or(Value::Null);
        log.lock().unwrap().push(Seen {
            method,
            path: path.clone(),
            headers,
        });
        if behaviour == Behaviour::Reset {
            return Ok(());
        }
        let answer = if path.ends_with("/embeddings") {
            let inputs = body["input"].as_array().map_or(1, Vec::len);
            let data: Vec<Value> = (0..inputs)
                .map(|i| json!({"object": "embedding", "index": i, "embedding": [0.5, 0.25]}))
                .collect();
            json!({"object": "list", "data": data, "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": inputs, "total_tokens": inputs}})
        } else {
            json!({"id": "chatcmpl-1", "object": "chat.completion", "model": "gpt-4o-mini",
                "choices": [{"index": 0, "finish_reason": "stop",
                    "message": {"role": "assistant", "content": "ok"}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}})
        }
        .to_string();
        let response = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nset-cookie: __cf_bm=abc; \
             path=/\r\nopenai-organization: org-victim\r\nopenai-project: proj-victim\r\n\
             x-ratelimit-remaining-requests: 99\r\ncontent-length: {}\r\n\r\n{answer}",
            answer.len()
        );
        tcp.write_all(response.as_bytes()).await?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_the_upstream_may_have_received_is_not_sent_again() {
    let (url, seen) = recording_upstream(Behaviour::Reset).await;
    let proxy = Proxy::start(&config(
        &url,
        "[stack]\n[stack.backoff_strategy]\nmax_retries = 3\ninitial_delay = \"10ms\"\n",
    ));
    let attempts = |path: &str| {
        seen.lock()
            .unwrap()
            .iter()
            .filter(|s| s.path == path)
            .count()
    };
    // A file upload and a batch creation: never sent twice.
    let upload = Request::post(format!("{}/v1/files", proxy.url))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .header("content-type", "multipart/form-data; boundary=b")
        .body(Full::new(Bytes::from_static(
            b"--b\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n--b--\r\n",
        )))
        .unwrap();
    let answer = support::send(upload).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    assert_eq!(attempts("/v1/files"), 1, "the upload went once");
    let batch = call(
        &proxy,
        "/v1/batches",
        bearer(CLIENT_KEY),
        &json!({"input_file_id": "file-1", "endpoint": "/v1/chat/completions",
            "completion_window": "24h"}),
    )
    .await;
    assert_eq!(batch.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        attempts("/v1/batches"),
        1,
        "the batch was created at most once"
    );
    // A chat completion that may have been billed: not sent again by default either.
    let chat = support::ask(&proxy).await;
    assert_eq!(chat.status, StatusCode::BAD_GATEWAY);
    assert_eq!(attempts("/v1/chat/completions"), 1);
    // A read is safe to repeat.
    let models = Request::get(format!("{}/v1/models", proxy.url))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .body(Full::default())
        .unwrap();
    support::send(models).await;
    assert!(attempts("/v1/models") > 1, "a GET is retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_headers_reach_the_upstream_and_its_cookies_stay_at_the_gateway() {
    let (url, seen) = recording_upstream(Behaviour::Answer).await;
    let proxy = Proxy::start(&config(&url, "[stack.cache]\nenabled = false\n"));
    let request = Request::post(format!("{}/v1/chat/completions", proxy.url))
        .header("authorization", format!("Bearer {CLIENT_KEY}"))
        .header("content-type", "application/json")
        .header("openai-organization", "org-attacker-choice")
        .header("openai-project", "proj-attacker-choice")
        .header("cookie", "session=1")
        .header("x-forwarded-for", "10.0.0.1")
        .header("openai-beta", "assistants=v2")
        .body(Full::new(Bytes::from(chat_body("gpt-4o-mini").to_string())))
        .unwrap();
    let answer = support::send(request).await;
    assert_eq!(answer.status, StatusCode::OK);
    for withheld in ["set-cookie", "openai-organization", "openai-project"] {
        assert!(
            answer.headers.get(withheld).is_none(),
            "{withheld} reached the client"
        );
    }
    assert_eq!(answer.header("x-ratelimit-remaining-requests"), "99");
    let first = seen.lock().unwrap().last().cloned().unwrap();
    let names: Vec<&str> = first.headers.iter().map(|(n, _)| n.as_str()).collect();
    for absent in [
        "openai-organization",
        "openai-project",
        "cookie",
        "x-forwarded-for",
    ] {
        assert!(
            !names.contains(&absent),
            "{absent} reached the upstream: {names:?}"
        );
    }
    assert!(names.contains(&"openai-beta"), "{names:?}");
    let auth = first
        .headers
        .iter()
        .find(|(n, _)| n == "authorization")
        .unwrap();
    assert_eq!(auth.1, format!("Bearer {}", support::UPSTREAM_KEY));

    // Paths that could leave the base URL's prefix are refused, whatever the client sends.
    let addr = authority(&proxy);
    for path in [
        "/v1/../sim/stats",
        "/v1/%2e%2e/sim/stats",
        "/v1/models%2F..%2Fsim",
        "/v1/./models",
    ] {
        let raw = format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {CLIENT_KEY}\r\n\
             Connection: close\r\n\r\n"
        );
        let received = exchange(&addr, raw.as_bytes(), Duration::from_secs(5)).await;
        assert_eq!(status_of(&received), 400, "{path}");
    }
    let reached = seen.lock().unwrap().clone();
    assert_eq!(
        reached.len(),
        1,
        "no refused path reached the upstream: {reached:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merged_embeddings_never_mix_headers_that_change_the_answer() {
    let (url, seen) = recording_upstream(Behaviour::Answer).await;
    let proxy = Proxy::start(&config(
        &url,
        "[stack.batch]\nenabled = true\nmax_wait = \"200ms\"\n[stack.cache]\nenabled = false\n",
    ));
    let embed = |beta: &'static str, text: &'static str| {
        let url = format!("{}/v1/embeddings", proxy.url);
        async move {
            let request = Request::post(url)
                .header("authorization", format!("Bearer {CLIENT_KEY}"))
                .header("content-type", "application/json")
                .header("openai-beta", beta)
                .body(Full::new(Bytes::from(
                    json!({"model": "text-embedding-3-small", "input": text}).to_string(),
                )))
                .unwrap();
            support::send(request).await
        }
    };
    let (a, b, c) = tokio::join!(embed("v1", "one"), embed("v1", "two"), embed("v2", "three"));
    for answer in [&a, &b, &c] {
        assert_eq!(answer.status, StatusCode::OK);
    }
    let calls = seen.lock().unwrap().clone();
    let betas: Vec<Vec<&str>> = calls
        .iter()
        .map(|s| {
            s.headers
                .iter()
                .filter(|(n, _)| n == "openai-beta")
                .map(|(_, v)| v.as_str())
                .collect()
        })
        .collect();
    println!(
        "{} upstream calls, openai-beta per call: {betas:?}",
        calls.len()
    );
    assert_eq!(calls.len(), 2, "the two v1 requests merged, v2 went alone");
    assert!(betas.contains(&vec!["v2"]));
    assert!(calls.iter().all(|s| s.method == "POST"));
}

// ---------------------------------------------------------------------------------------------
// 10. A stream cut at the end of the shutdown grace is not a clean exit.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shutdown_that_cuts_a_stream_exits_non_zero() {
    let upstream = sim("[latency]\nper_output_token = \"50ms\"\n").await;
    let mut proxy = Proxy::start(
        &config(&upstream.url(), "").replace("[server]\n", "[server]\nshutdown_grace = \"1s\"\n"),
    );
    let stream = stalled_stream(&authority(&proxy), CLIENT_KEY, 1000).await;
    let pid = proxy.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    let started = Instant::now();
    let status = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break status;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "still running");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    drop(stream);
    assert!(!status.success(), "{status:?}");
    assert!(proxy.log().contains("cut"), "{}", proxy.log());
    upstream.shutdown().await;
}
