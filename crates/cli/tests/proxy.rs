//! `tollgate proxy` end to end over loopback: a hyper client → the gateway (the binary, as a
//! child process) → the simulated provider (in this process), which accepts only the upstream
//! key — so every 200 proves the client's key was swapped for the configured one.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use http::StatusCode;
use http_body_util::BodyExt;
use serde_json::{Value, json};

use self::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_embeddings_and_messages_reach_the_upstream_with_its_key() {
    let sim = sim("").await;
    let proxy = Proxy::start(&config(&sim.url(), ""));

    let answer = ask(&proxy).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.json()["object"], "chat.completion");
    assert_eq!(answer.header("x-ratelimit-limit-requests"), "10000");
    assert!(answer.header("x-request-id").starts_with("req_sim"));

    let embeddings = json!({"model": "text-embedding-3-small", "input": ["one", "two"]});
    let answer = call(&proxy, "/v1/embeddings", bearer(CLIENT_KEY), &embeddings).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    let vectors = answer.json()["data"].as_array().unwrap().len();
    assert_eq!(vectors, 2);

    // Anthropic's SDKs send their key as x-api-key.
    let messages = json!({"model": "claude-3-5-haiku-latest", "max_tokens": 8,
        "messages": [{"role": "user", "content": "Say hello."}]});
    let auth = Some(("x-api-key", CLIENT_KEY.to_owned()));
    let answer = call(&proxy, "/v1/messages", auth, &messages).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.json()["type"], "message");
    assert!(answer.header("request-id").starts_with("req_"));

    let log = sim.log();
    assert_eq!(log.len(), 3, "{log:?}");
    assert!(
        log.iter()
            .all(|e| e.key.as_deref() == Some("upstream") && e.status == 200),
        "every call upstream carried the upstream key: {log:?}"
    );

    let metrics = send(get(&format!("{}/metrics", proxy.url))).await;
    assert_eq!(metrics.status, StatusCode::OK);
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    for line in [
        "tollgate_proxy_requests_total{route=\"/v1/chat/completions\",status=\"200\"} 1",
        "tollgate_proxy_requests_total{route=\"/v1/embeddings\",status=\"200\"} 1",
        "tollgate_proxy_requests_total{route=\"/v1/messages\",status=\"200\"} 1",
        "tollgate_proxy_upstream_calls_total{status=\"200\"} 3",
    ] {
        assert!(text.lines().any(|l| l == line), "{line}\n{text}");
    }
    assert!(
        text.lines().any(|l| l.starts_with(
            "tollgate_scope_circuit_state{provider=\"openai_compatible\",credential=\"key-"
        ) && l.ends_with("model=\"gpt-4o-mini\",state=\"closed\"} 1")),
        "{text}"
    );
    // The layers' own metrics (the `metrics` feature) reach the same exporter.
    for prefix in [
        "tollgate_requests_total{",
        "tollgate_request_duration_seconds_bucket{",
        "tollgate_circuit_state{",
        "tollgate_overload_limit{",
        "tollgate_batch_items_total{",
        "tollgate_cache_lookups_total{",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(prefix)),
            "{prefix}\n{text}"
        );
    }
    let health = send(get(&format!("{}/health", proxy.url))).await.json();
    assert_eq!(health["status"], "ok", "{health}");
    let scopes = health["scopes"].as_array().unwrap();
    assert!(
        scopes
            .iter()
            .any(|s| s["model"] == "gpt-4o-mini" && s["circuit"] == "closed"),
        "{health}"
    );
    proxy.assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_need_a_gateway_key() {
    let sim = sim("").await;
    let proxy = Proxy::start(&config(&sim.url(), ""));

    let answer = call(&proxy, "/v1/chat/completions", None, &chat(8, false)).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.header("www-authenticate"), "Bearer");
    assert_eq!(answer.json()["error"]["type"], "authentication_error");

    // The upstream key itself is not a gateway key.
    let answer = call(&proxy, "/v1/embeddings", bearer(UPSTREAM_KEY), &json!({})).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);

    let auth = Some(("x-api-key", "tg-wrong".to_owned()));
    let answer = call(&proxy, "/v1/messages", auth, &json!({})).await;
    assert_eq!(answer.status, StatusCode::UNAUTHORIZED);
    assert_eq!(answer.json()["type"], "error", "Anthropic's error shape");

    assert_eq!(sim.stats().received, 0, "nothing reached the upstream");
    for path in ["/health", "/metrics"] {
        let answer = send(get(&format!("{}{path}", proxy.url))).await;
        assert_eq!(answer.status, StatusCode::OK, "{path} needs no key");
    }
    let answer = send(get(&format!("{}/v2/other", proxy.url))).await;
    assert_eq!(answer.status, StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_arrive_event_by_event() {
    // 15 tokens at 40 ms each: the stream takes about 600 ms.
    let sim = sim(
        "[latency]\ntime_to_first_token = \"20ms\"\nper_output_token = \"40ms\"\n\
         [output]\nmin_tokens = 15\nmax_tokens = 15\n",
    )
    .await;
    let proxy = Proxy::start(&config(&sim.url(), ""));
    let started = Instant::now();
    let response = open_stream(&proxy, 15).await;
    let content_type = response.headers()["content-type"].to_str().unwrap();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let mut body = response.into_body();
    let mut arrivals = Vec::new();
    let mut text = String::new();
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            arrivals.push(started.elapsed());
            text.push_str(std::str::from_utf8(&data).unwrap());
        }
    }
    assert!(text.ends_with("data: [DONE]\n\n"), "{text}");
    assert!(text.matches("data: ").count() >= 15, "{text}");
    let (first, last) = (arrivals[0], arrivals[arrivals.len() - 1]);
    assert!(
        arrivals.len() >= 8 && last - first >= Duration::from_millis(400),
        "the stream was passed on as it came, not buffered: {} pieces, first at {first:?}, \
         last at {last:?}",
        arrivals.len()
    );
    proxy.assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_429_reaches_the_client_as_it_was_sent() {
    let sim = sim("requests_per_minute = 1\n").await;
    // No retries: the client gets the upstream's own 429.
    let proxy = Proxy::start(&config(
        &sim.url(),
        "[stack.backoff_strategy]\nmax_retries = 0\n",
    ));
    let direct = |body: &Value| {
        let auth = format!("Bearer {UPSTREAM_KEY}");
        send(post(
            &format!("{}/v1/chat/completions", sim.url()),
            Some(("authorization", &auth)),
            body,
        ))
    };
    assert_eq!(direct(&chat(8, false)).await.status, StatusCode::OK);

    let answer = ask(&proxy).await;
    let reference = direct(&chat(8, false)).await;
    assert_eq!(reference.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(
        answer.status,
        StatusCode::TOO_MANY_REQUESTS,
        "{:?}",
        answer.body
    );
    for name in reference.headers.keys() {
        assert!(
            answer.headers.contains_key(name),
            "{name} passed through: {:?}",
            answer.headers
        );
    }
    assert_eq!(answer.header("x-ratelimit-limit-requests"), "1");
    assert!(answer.header("retry-after").parse::<u64>().unwrap() >= 1);
    assert!(answer.header("retry-after-ms").parse::<u64>().unwrap() > 0);
    let (body, reference) = (answer.json(), reference.json());
    assert_eq!(body["error"]["code"], "rate_limit_exceeded", "{body}");
    assert_eq!(body["error"]["type"], reference["error"]["type"]);
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("Rate limit reached for"), "{message}");
    assert_eq!(sim.log().len(), 3, "one call through the gateway, no retry");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exhausted_quota_is_passed_on_and_not_retried() {
    let sim = sim("quota_exhausted = true\n").await;
    let proxy = Proxy::start(&config(&sim.url(), ""));
    let answer = ask(&proxy).await;
    assert_eq!(answer.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(answer.json()["error"]["code"], "insufficient_quota");
    assert!(answer.header("x-request-id").starts_with("req_sim"));
    assert_eq!(sim.log().len(), 1, "never retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_upstream_is_a_502() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let proxy = Proxy::start(&config(
        &format!("http://127.0.0.1:{port}"),
        "[stack.backoff_strategy]\nmax_retries = 0\n",
    ));
    let answer = ask(&proxy).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY);
    let message = answer.json()["error"]["message"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(message.starts_with("tollgate: "), "{message}");
    proxy.assert_no_secret_logged();
}

#[cfg(unix)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_open_stream_finish_then_exits_0() {
    let sim =
        sim("[latency]\nper_output_token = \"50ms\"\n[output]\nmin_tokens = 12\nmax_tokens = 12\n")
            .await;
    let mut proxy = Proxy::start(&config(&sim.url(), ""));
    let response = open_stream(&proxy, 12).await;
    let status = Command::new("kill")
        .args(["-TERM", &proxy.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let text = response.into_body().collect().await.unwrap().to_bytes();
    assert!(text.ends_with(b"data: [DONE]\n\n"), "the stream finished");
    let deadline = Instant::now() + Duration::from_secs(10);
    let code = loop {
        if let Some(status) = proxy.child.try_wait().unwrap() {
            break status.code();
        }
        assert!(Instant::now() < deadline, "still running:\n{}", proxy.log());
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(code, Some(0), "{}", proxy.log());
    assert!(proxy.log().contains("shutting down"), "{}", proxy.log());
}

/// Runs the gateway on a bad config: exit code 2 and one line naming the field and value.
fn refused(config: &str, env: &[(&str, &str)]) -> String {
    let dir = temp_dir("tollgate-proxy-bad-");
    let path = dir.path().join("tollgate.toml");
    std::fs::write(&path, config).unwrap();
    let mut command = Command::new(env!("CARGO_BIN_EXE_tollgate"));
    command
        .args(["proxy", "--config", path.to_str().unwrap()])
        .env_remove("TG_TEST_UNSET");
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

#[test]
fn bad_configs_are_one_line_naming_the_field_and_exit_2() {
    let upstream = "[upstream]\nbase_url = \"http://127.0.0.1:9\"\n";
    let cases = [
        (
            format!("[server]\nlisten = \"localhost:80:80\"\n{upstream}"),
            "server.listen: \"localhost:80:80\" is not an address",
        ),
        (
            format!("{upstream}timeout = \"5s\"\n"),
            "upstream.timeout (line 3): unknown field `timeout`",
        ),
        (
            "[upstream]\nbase_url = \"https://127.0.0.1:9\"\nca_file = \"/nonexistent/ca.pem\"\n"
                .to_owned(),
            "upstream.ca_file: cannot read /nonexistent/ca.pem: ",
        ),
        (
            "[upstream]\nbase_url = \"ftp://127.0.0.1:9\"\n".to_owned(),
            "upstream.base_url: \"ftp://127.0.0.1:9\": the scheme must be http or https",
        ),
        (
            format!("[server]\nadmin_token_env = \"TG_TEST_UNSET\"\n{upstream}"),
            "server.admin_token_env: the environment variable \"TG_TEST_UNSET\" is not set",
        ),
        (
            format!("{upstream}key_env = \"TG_TEST_UNSET\"\n"),
            "upstream.key_env: the environment variable \"TG_TEST_UNSET\" is not set",
        ),
        (
            format!("{upstream}[stack]\nmax_concurrent_requests = 0\n"),
            "stack.max_concurrent_requests (line 4): 0 is not allowed",
        ),
        (
            format!("{upstream}[stack.backoff_strategy]\nmultiplier = 0.5\n"),
            "stack.backoff_strategy.multiplier (line 4): 0.5 must be at least 1",
        ),
        (
            "[server]\nlisten = \"127.0.0.1:0\"\n".to_owned(),
            "upstream: the [upstream] table is missing",
        ),
        ("[server\n".to_owned(), "(line 1)"),
    ];
    for (config, want) in cases {
        let err = refused(&config, &[]);
        assert!(err.contains(want), "{config}\n  got:  {err}  want: {want}");
        assert!(err.starts_with("tollgate: "), "{err}");
    }
}

#[test]
fn a_missing_file_is_one_line_and_exit_2() {
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["proxy", "--config", "/nonexistent/tollgate.toml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(
        err.starts_with("tollgate: cannot read /nonexistent/tollgate.toml"),
        "{err}"
    );
}

#[test]
fn a_bad_key_value_is_refused_without_showing_it() {
    let err = refused(
        &format!("[upstream]\nbase_url = \"http://127.0.0.1:9\"\nkey_env = \"{KEY_ENV}\"\n"),
        &[(KEY_ENV, "sk-bad\nkey-secret")],
    );
    assert!(err.contains("upstream.key_env: the value of"), "{err}");
    assert!(!err.contains("key-secret"), "{err}");
}
