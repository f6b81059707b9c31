//! `tollgate proxy` in front of an HTTPS upstream, over loopback: the simulator served through
//! tokio-rustls with a certificate from a CA made at test time (rcgen). With the CA in
//! `upstream.ca_file` the gateway reaches it (over HTTP/2, negotiated by ALPN); without it,
//! the client gets a 502 that says what is wrong and shows no key.

mod support;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
use tempfile::TempDir;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use tollgate_sim::{SimConfig, SimService};

use self::support::*;

/// The simulator behind TLS on 127.0.0.1; the CA that signed its certificate is in `ca_file`
/// (in a temporary directory, removed when dropped).
struct TlsUpstream {
    addr: SocketAddr,
    sim: SimService,
    ca_file: PathBuf,
    _dir: TempDir,
    /// The protocol ALPN chose on each connection that completed its handshake.
    alpn: Arc<Mutex<Vec<Option<Vec<u8>>>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsUpstream {
    async fn start() -> Self {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
        let key = KeyPair::generate().unwrap();
        let cert = CertificateParams::new(vec!["127.0.0.1".to_owned()])
            .unwrap()
            .signed_by(&key, &ca)
            .unwrap();
        let dir = temp_dir("tollgate-proxy-ca-");
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.pem()).unwrap();

        let provider = Arc::new(tokio_rustls::rustls::crypto::ring::default_provider());
        let mut tls = ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = TlsAcceptor::from(Arc::new(tls));

        let scenario = format!("[[keys]]\nkey = \"{UPSTREAM_KEY}\"\nname = \"upstream\"\n");
        let sim = SimService::new(SimConfig::from_toml(&scenario).unwrap()).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let alpn = Arc::new(Mutex::new(Vec::new()));
        let (service, seen) = (sim.clone(), alpn.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, service, seen) = (acceptor.clone(), service.clone(), seen.clone());
                tokio::spawn(async move {
                    // A client that does not trust the certificate ends the handshake.
                    let Ok(stream) = acceptor.accept(tcp).await else {
                        return;
                    };
                    let protocol = stream.get_ref().1.alpn_protocol().map(<[u8]>::to_vec);
                    seen.lock().unwrap().push(protocol);
                    let _ = auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service))
                        .await;
                });
            }
        });
        Self {
            addr,
            sim,
            ca_file,
            _dir: dir,
            alpn,
            task,
        }
    }

    fn url(&self) -> String {
        format!("https://{}", self.addr)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_upstream_is_reached_with_its_ca_in_ca_file() {
    let upstream = TlsUpstream::start().await;
    let extra = format!("ca_file = \"{}\"\n", upstream.ca_file.display());
    // `config` ends inside [upstream]: the extra line belongs to it.
    let proxy = Proxy::start(&format!("{}{extra}", config(&upstream.url(), "")));

    let answer = ask(&proxy).await;
    assert_eq!(answer.status, StatusCode::OK, "{:?}", answer.body);
    assert_eq!(answer.json()["object"], "chat.completion");
    // A stream, through the same TLS connection.
    let answer = call(
        &proxy,
        "/v1/chat/completions",
        bearer(CLIENT_KEY),
        &chat(5, true),
    )
    .await;
    assert_eq!(answer.status, StatusCode::OK);
    assert!(
        answer.body.ends_with(b"data: [DONE]\n\n"),
        "{:?}",
        answer.body
    );

    let log = upstream.sim.log();
    assert_eq!(log.len(), 2, "{log:?}");
    assert!(
        log.iter()
            .all(|e| e.key.as_deref() == Some("upstream") && e.status == 200),
        "the upstream key went over TLS: {log:?}"
    );
    let alpn = upstream.alpn.lock().unwrap().clone();
    assert!(!alpn.is_empty());
    assert!(
        alpn.iter().all(|p| p.as_deref() == Some(b"h2")),
        "HTTP/2 by ALPN: {alpn:?}"
    );
    proxy.assert_no_secret_logged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_untrusted_certificate_is_a_502_that_says_so() {
    let upstream = TlsUpstream::start().await;
    let proxy = Proxy::start(&config(
        &upstream.url(),
        "[stack.backoff_strategy]\nmax_retries = 0\n",
    ));
    let answer = ask(&proxy).await;
    assert_eq!(answer.status, StatusCode::BAD_GATEWAY, "{:?}", answer.body);
    let body = answer.json();
    assert_eq!(body["error"]["type"], "api_error", "{body}");
    let message = body["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("tollgate: "), "{message}");
    assert!(message.contains("certificate"), "{message}");
    assert!(message.contains("set upstream.ca_file"), "{message}");
    let text = String::from_utf8_lossy(&answer.body);
    for secret in [UPSTREAM_KEY, CLIENT_KEY] {
        assert!(!text.contains(secret), "{text}");
    }
    assert!(upstream.sim.log().is_empty(), "nothing got through");
    assert!(
        upstream.alpn.lock().unwrap().is_empty(),
        "no handshake completed"
    );
    proxy.assert_no_secret_logged();
}

#[test]
fn a_ca_file_without_a_certificate_is_refused_at_start() {
    let dir = temp_dir("tollgate-proxy-bad-ca-");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, "just text\n").unwrap();
    let path = dir.path().join("tollgate.toml");
    std::fs::write(
        &path,
        format!(
            "[upstream]\nbase_url = \"https://127.0.0.1:9\"\nca_file = \"{}\"\n",
            ca_file.display()
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tollgate"))
        .args(["proxy", "--config", path.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("upstream.ca_file: "), "{err}");
    assert!(err.contains("holds no certificate"), "{err}");
}
