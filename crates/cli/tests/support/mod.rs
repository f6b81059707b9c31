//! What the `tollgate proxy` tests share: the gateway as a child process, a simulator that
//! accepts only the upstream key, and a small HTTP client.

// Each test file uses a part of these.
#![allow(dead_code)]

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tempfile::TempDir;
use tollgate_sim::{Sim, SimConfig, SimHandle};

pub(crate) const UPSTREAM_KEY: &str = "sk-upstream-3f9a1c0e";
pub(crate) const CLIENT_KEY: &str = "tg-client-77b2e0d4";
pub(crate) const KEY_ENV: &str = "TG_TEST_UPSTREAM_KEY";

/// A fresh temporary directory, removed (with all in it) when dropped: keep it as long as
/// anything uses its files.
pub(crate) fn temp_dir(prefix: &str) -> TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

/// A running `tollgate proxy`; killed when dropped, and then its config and log removed.
pub(crate) struct Proxy {
    pub(crate) child: Child,
    pub(crate) url: String,
    pub(crate) log: PathBuf,
    /// Its config file (rewrite it and send `SIGHUP` to reload).
    pub(crate) config: PathBuf,
    /// Holds its config and `log`; dropped after `Drop::drop` has killed the process.
    _dir: TempDir,
}

impl Proxy {
    /// Starts the gateway with `config` (TOML), the upstream key in `TG_TEST_UPSTREAM_KEY`,
    /// logging everything (trace) to a file.
    pub(crate) fn start(config: &str) -> Self {
        Self::start_with_env(config, &[])
    }

    /// [`start`](Self::start), with more environment variables.
    pub(crate) fn start_with_env(config: &str, env: &[(&str, &str)]) -> Self {
        Self::start_logging(config, env, "trace")
    }

    /// [`start_with_env`](Self::start_with_env), logging at `level` (`info` for load runs,
    /// where tracing every request would be most of the work).
    pub(crate) fn start_logging(config: &str, env: &[(&str, &str)], level: &str) -> Self {
        let dir = temp_dir("tollgate-proxy-");
        let config_path = dir.path().join("tollgate.toml");
        let log = dir.path().join("proxy.log");
        std::fs::write(&config_path, config).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["proxy", "--config", config_path.to_str().unwrap()])
            .args(["--listen", "127.0.0.1:0", "--log-level", level])
            .env(KEY_ENV, UPSTREAM_KEY)
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(url) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
            // Not started: stop it before failing, so that no process outlives the test.
            let _ = child.kill();
            let _ = child.wait();
            panic!("{line:?}\n{}", std::fs::read_to_string(&log).unwrap())
        };
        Self {
            child,
            url,
            log,
            config: config_path,
            _dir: dir,
        }
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Neither key is anywhere in what the gateway logged, at trace level.
    pub(crate) fn assert_no_secret_logged(&self) {
        let log = self.log();
        assert!(log.contains("request"), "the log was written: {log}");
        for secret in [UPSTREAM_KEY, CLIENT_KEY] {
            assert!(!log.contains(secret), "{secret} logged:\n{log}");
        }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A running `tollgate sim` process; killed when dropped.
pub(crate) struct SimProcess {
    child: Child,
    pub(crate) url: String,
    _dir: TempDir,
}

impl SimProcess {
    /// Starts `tollgate sim` with `scenario` (TOML) on a free loopback port.
    pub(crate) fn start(scenario: &str) -> Self {
        let dir = temp_dir("tollgate-sim-");
        let path = dir.path().join("sim.toml");
        std::fs::write(&path, scenario).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_tollgate"))
            .args(["sim", "--config", path.to_str().unwrap(), "--port", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let Some(url) = line.trim().strip_prefix("listening on ").map(str::to_owned) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("tollgate sim did not start: {line:?}")
        };
        Self {
            child,
            url,
            _dir: dir,
        }
    }
}

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A gateway config in front of `upstream`, requiring `CLIENT_KEY`, plus `extra` TOML.
pub(crate) fn config(upstream: &str, extra: &str) -> String {
    format!(
        "[server]\napi_keys = [\"{CLIENT_KEY}\"]\n\n[upstream]\nbase_url = \"{upstream}\"\n\
         key_env = \"{KEY_ENV}\"\n\n{extra}"
    )
}

/// A simulator that accepts only the upstream key (named `upstream` in its log), plus `extra`.
pub(crate) async fn sim(extra: &str) -> SimHandle {
    let scenario = format!("[[keys]]\nkey = \"{UPSTREAM_KEY}\"\nname = \"upstream\"\n{extra}");
    Sim::start(SimConfig::from_toml(&scenario).unwrap())
        .await
        .unwrap()
}

pub(crate) struct Answer {
    pub(crate) status: StatusCode,
    pub(crate) headers: HeaderMap,
    pub(crate) body: Bytes,
}

impl Answer {
    pub(crate) fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    pub(crate) fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_else(|| panic!("no {name} in {:?}", self.headers))
    }
}

pub(crate) async fn send(request: Request<Full<Bytes>>) -> Answer {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let response = client.request(request).await.unwrap();
    let (parts, body) = response.into_parts();
    Answer {
        status: parts.status,
        headers: parts.headers,
        body: body.collect().await.unwrap().to_bytes(),
    }
}

pub(crate) fn post(url: &str, auth: Option<(&str, &str)>, body: &Value) -> Request<Full<Bytes>> {
    let mut request = Request::post(url).header("content-type", "application/json");
    if let Some((name, value)) = auth {
        request = request.header(name, value);
    }
    request
        .body(Full::new(Bytes::from(body.to_string())))
        .unwrap()
}

pub(crate) fn get(url: &str) -> Request<Full<Bytes>> {
    Request::get(url).body(Full::default()).unwrap()
}

pub(crate) fn bearer(key: &str) -> Option<(&'static str, String)> {
    Some(("authorization", format!("Bearer {key}")))
}

pub(crate) fn chat(max_tokens: u32, stream: bool) -> Value {
    json!({"model": "gpt-4o-mini", "max_tokens": max_tokens, "stream": stream,
        "messages": [{"role": "user", "content": "Say hello."}]})
}

pub(crate) async fn call(
    proxy: &Proxy,
    path: &str,
    auth: Option<(&str, String)>,
    body: &Value,
) -> Answer {
    let auth = auth.as_ref().map(|(n, v)| (*n, v.as_str()));
    send(post(&format!("{}{path}", proxy.url), auth, body)).await
}

/// A small chat completion with the gateway key.
pub(crate) async fn ask(proxy: &Proxy) -> Answer {
    call(
        proxy,
        "/v1/chat/completions",
        bearer(CLIENT_KEY),
        &chat(8, false),
    )
    .await
}

/// A streamed chat completion of `tokens` tokens with the gateway key: the response head.
pub(crate) async fn open_stream(
    proxy: &Proxy,
    tokens: u32,
) -> http::Response<impl http_body::Body<Data = Bytes, Error: std::fmt::Debug> + Unpin> {
    let client = Client::builder(TokioExecutor::new()).build_http();
    let auth = format!("Bearer {CLIENT_KEY}");
    let request = post(
        &format!("{}/v1/chat/completions", proxy.url),
        Some(("authorization", &auth)),
        &chat(tokens, true),
    );
    let response = client.request(request).await.unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    response
}
