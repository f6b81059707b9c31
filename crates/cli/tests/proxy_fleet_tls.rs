//! `[redis]` over TLS: a `tollgate proxy` process keeps its limits and budgets in a
//! redis-server that speaks only TLS on the port it is given (`rediss://`), with a password
//! from the environment; the server's certificate is signed by a CA made at test time, trusted
//! through `SSL_CERT_FILE` as a system's roots would be. Without the CA, the gateway refuses to
//! start, saying why, and shows no password.

mod support;

use std::net::TcpListener;
use std::process::{Command, Stdio};

use http::StatusCode;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use serde_json::json;
use tollgate_testkit::redis::RedisServer;

use support::{Proxy, SimProcess, post, send, temp_dir};

const UPSTREAM: &str = "sk-fleet-tls-7c";
const PASSWORD: &str = "tls-pw-04e1";

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn leak(text: String) -> &'static str {
    Box::leak(text.into_boxed_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_keeps_its_state_in_a_redis_over_tls() {
    // A CA, and the server's certificate for 127.0.0.1.
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&key, &ca)
        .unwrap();
    let dir = temp_dir("tollgate-redis-tls-");
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    std::fs::write(path("ca.pem"), ca.pem()).unwrap();
    std::fs::write(path("server.pem"), cert.pem()).unwrap();
    std::fs::write(path("server.key"), key.serialize_pem()).unwrap();

    // A redis-server with a TLS port (its plain port only tells the test it is up).
    let tls_port = free_port();
    let redis = RedisServer::start(&[
        "--requirepass",
        PASSWORD,
        "--tls-port",
        leak(tls_port.to_string()),
        "--tls-cert-file",
        leak(path("server.pem")),
        "--tls-key-file",
        leak(path("server.key")),
        "--tls-ca-cert-file",
        leak(path("ca.pem")),
        "--tls-auth-clients",
        "no",
    ]);
    let sim = SimProcess::start(&format!(
        "[[keys]]\nkey = \"{UPSTREAM}\"\nname = \"account\"\nrequests_per_minute = 600\n"
    ));
    let config = format!(
        r#"[server]
api_keys = ["tg-tls"]
[redis]
url = "rediss://127.0.0.1:{tls_port}"
password_env = "TG_REDIS_PASSWORD"
[stack]
preset = "balanced"
[[models]]
name = "chat"
[[models.deployments]]
provider = "openai"
base_url = "{sim}"
key_env = "TG_TLS_UPSTREAM"
model = "gpt-4o-mini"
requests_per_minute = 600
"#,
        sim = sim.url
    );
    let ca_file = path("ca.pem");
    let env = [
        ("TG_TLS_UPSTREAM", UPSTREAM),
        ("TG_REDIS_PASSWORD", PASSWORD),
        ("SSL_CERT_FILE", ca_file.as_str()),
    ];
    let proxy = Proxy::start_logging(&config, &env, "info");
    let answer = send(post(
        &format!("{}/v1/chat/completions", proxy.url),
        Some(("authorization", "Bearer tg-tls")),
        &json!({"model": "chat", "max_tokens": 4,
            "messages": [{"role": "user", "content": "Over TLS?"}]}),
    ))
    .await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    // The limits are in Redis (asked on its plain port, with the password).
    let keys = redis.keys("tollgate:*");
    assert!(!keys.is_empty(), "the limits are kept in Redis");
    drop(proxy);

    // Without the CA, the certificate is not trusted: the gateway does not start, and says
    // where it could not connect, without the password.
    let file = dir.path().join("gateway.toml");
    std::fs::write(&file, &config).unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args([
            "proxy",
            "--config",
            file.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
        ])
        .env("TG_TLS_UPSTREAM", UPSTREAM)
        .env("TG_REDIS_PASSWORD", PASSWORD)
        .env("SSL_CERT_FILE", path("nothing-here.pem"))
        .env("SSL_CERT_DIR", dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&output.stderr);
    assert!(
        !output.status.success(),
        "started without trusting Redis: {said}"
    );
    assert!(
        said.contains(&format!("rediss://127.0.0.1:{tls_port}")),
        "{said}"
    );
    assert!(!said.contains(PASSWORD), "{said}");
}
