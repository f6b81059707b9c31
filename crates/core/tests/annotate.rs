//! AnnotateLayer: what it learns from requests of every provider, and how it fails.

use std::convert::Infallible;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use proptest::prelude::*;
use tollgate_core::annotate::{AnnotateLayer, annotate};
use tollgate_core::error::BodyTooLarge;
use tollgate_core::estimate::HeuristicEstimator;
use tollgate_core::{CredentialId, EndpointKind, LlmRequest, Provider};
use tower::{Layer, ServiceExt, service_fn};

fn learn(uri: &str, headers: &[(&str, &str)], body: &str) -> LlmRequest {
    let mut builder = Request::post(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let (parts, ()) = builder.body(()).unwrap().into_parts();
    annotate(
        &parts,
        &Bytes::copy_from_slice(body.as_bytes()),
        None,
        &HeuristicEstimator,
    )
}

#[test]
fn openai_chat() {
    let r = learn(
        "https://api.openai.com/v1/chat/completions",
        &[("authorization", "Bearer sk-test")],
        r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"You are terse."},
            {"role":"user","content":"Hello!"}],"max_completion_tokens":300,"temperature":0,
            "seed":7,"n":2,"stream":true,"stream_options":{"include_usage":true}}"#,
    );
    assert_eq!(r.provider, Provider::OpenAi);
    assert_eq!(r.endpoint, EndpointKind::ChatCompletions);
    assert_eq!(r.credential, Some(CredentialId::from_secret(b"sk-test")));
    assert_eq!(r.model.as_deref(), Some("gpt-4o-mini"));
    assert_eq!(r.max_output_tokens, Some(300));
    assert!(r.stream && r.stream_include_usage);
    assert_eq!((r.temperature, r.seed, r.n), (Some(0.0), Some(7), Some(2)));
    // "You are terse." 4 + "Hello!" 2 + two messages' framing 8.
    assert_eq!(r.input_tokens_estimate, 14);
    assert!(r.json_body && r.is_deterministic());
    assert_eq!(r.embedding_inputs, None);
}

#[test]
fn responses_api_and_legacy_completions() {
    let r = learn(
        "https://api.openai.com/v1/responses",
        &[],
        r#"{"model":"o4-mini","instructions":"Be brief","input":[{"role":"user","content":[{"type":"input_text","text":"What is 2+2?"}]}],"max_output_tokens":1000}"#,
    );
    assert_eq!(r.endpoint, EndpointKind::Responses);
    assert_eq!(r.max_output_tokens, Some(1000));
    // "Be brief" 2 + "What is 2+2?" 3 + one message 4.
    assert_eq!(r.input_tokens_estimate, 9);

    let r = learn(
        "http://localhost:8000/v1/completions",
        &[],
        r#"{"model":"m","prompt":"Say this is a test","max_tokens":7}"#,
    );
    assert_eq!(
        (r.provider, r.endpoint),
        (Provider::OpenAiCompatible, EndpointKind::Completions)
    );
    assert_eq!((r.max_output_tokens, r.input_tokens_estimate), (Some(7), 5));
}

#[test]
fn anthropic_messages_with_an_image() {
    let r = learn(
        "https://api.anthropic.com/v1/messages",
        &[
            ("x-api-key", "sk-ant-test"),
            ("anthropic-version", "2023-06-01"),
        ],
        r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"system":[{"type":"text","text":"You are a cat.","cache_control":{"type":"ephemeral"}}],
            "messages":[{"role":"user","content":[{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="}},
            {"type":"text","text":"What is in this image?"}]}]}"#,
    );
    assert_eq!(
        (r.provider, r.endpoint),
        (Provider::Anthropic, EndpointKind::Messages)
    );
    assert_eq!(
        r.credential,
        Some(CredentialId::from_secret(b"sk-ant-test"))
    );
    assert_eq!(r.max_output_tokens, Some(1024));
    // system block 4 framing + "You are a cat." 4; message 4 framing + image 1000 + text 6.
    assert_eq!(r.input_tokens_estimate, 4 + 4 + 4 + 1000 + 6);
}

#[test]
fn embeddings_count_inputs_of_every_shape() {
    let cases = [
        (r#""one text""#, 1, 2),
        (r#"["a","bb","ccccc"]"#, 3, 1 + 1 + 2),
        ("[1,2,3]", 1, 3),
        ("[[1,2],[3]]", 2, 3),
        ("[]", 0, 0),
    ];
    for (input, inputs, tokens) in cases {
        let body =
            format!(r#"{{"model":"text-embedding-3-small","input":{input},"dimensions":256}}"#);
        let r = learn("https://api.openai.com/v1/embeddings", &[], &body);
        assert_eq!(r.endpoint, EndpointKind::Embeddings);
        assert_eq!(r.embedding_inputs, Some(inputs), "{input}");
        assert_eq!(r.input_tokens_estimate, tokens, "{input}");
    }
}

#[test]
fn gemini_reads_the_model_from_the_path() {
    let r = learn(
        "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=AIza-test",
        &[],
        r#"{"contents":[{"role":"user","parts":[{"text":"Write a haiku"}]}],"generationConfig":{"maxOutputTokens":64,"temperature":0.2,"candidateCount":1}}"#,
    );
    assert_eq!(
        (r.provider, r.endpoint),
        (Provider::Gemini, EndpointKind::GenerateContent)
    );
    assert_eq!(r.model.as_deref(), Some("gemini-2.0-flash"));
    assert_eq!(r.credential, Some(CredentialId::from_secret(b"AIza-test")));
    assert!(r.stream);
    assert_eq!(
        (r.max_output_tokens, r.temperature, r.n),
        (Some(64), Some(0.2), Some(1))
    );
    assert_eq!(r.input_tokens_estimate, 4 + 4);
}

#[test]
fn azure_uses_the_deployment_as_the_model() {
    let r = learn(
        "https://myres.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21",
        &[("api-key", "azure-secret")],
        r#"{"messages":[{"role":"user","content":"hi"}],"max_tokens":10}"#,
    );
    assert_eq!(r.provider, Provider::AzureOpenAi);
    assert_eq!(r.model.as_deref(), Some("gpt4o-prod"));
    assert_eq!(
        r.credential,
        Some(CredentialId::from_secret(b"azure-secret"))
    );
}

#[test]
fn odd_bodies_keep_what_can_be_learned() {
    let r = learn(
        "https://api.openai.com/v1/chat/completions",
        &[],
        "not json at all",
    );
    assert!(!r.json_body);
    assert_eq!(
        (r.provider, r.endpoint, r.model.as_ref()),
        (Provider::OpenAi, EndpointKind::ChatCompletions, None)
    );

    let r = learn(
        "https://api.openai.com/v1/chat/completions",
        &[],
        r#"[{"model":"x"}]"#,
    );
    assert!(!r.json_body);
    let r = learn(
        "https://api.openai.com/v1/chat/completions",
        &[],
        r#"{"model":"x""#,
    );
    assert!(
        !r.json_body && r.model.is_none(),
        "a truncated body teaches nothing"
    );

    // Wrong types are ignored field by field, not fatal.
    let r = learn(
        "https://api.openai.com/v1/chat/completions",
        &[],
        r#"{"model":5,"max_tokens":"100","stream":"yes","temperature":null,"seed":1.5,"n":-1,"stream_options":true}"#,
    );
    assert!(r.json_body);
    assert_eq!(
        (
            r.model,
            r.max_output_tokens,
            r.stream,
            r.temperature,
            r.seed,
            r.n
        ),
        (None, None, false, None, None, None)
    );

    let r = learn(
        "https://api.openai.com/v1/chat/completions",
        &[],
        r#"{"model":"gpt-4o\u002dmini","max_tokens":1024.0}"#,
    );
    assert_eq!(
        (r.model.as_deref(), r.max_output_tokens),
        (Some("gpt-4o-mini"), Some(1024))
    );
}

#[tokio::test]
async fn the_layer_forwards_the_body_unchanged_with_the_annotation() {
    let inner = service_fn(|request: Request<Full<Bytes>>| async move {
        let llm = request.extensions().get::<LlmRequest>().cloned();
        let body = request.into_body().collect().await.unwrap().to_bytes();
        Ok::<_, Infallible>((llm, body))
    });
    let layer = AnnotateLayer::new().with_provider(Provider::Groq);
    let body = r#"{"model":"llama-3.1-8b-instant","messages":[]}"#;
    let request = Request::post("http://127.0.0.1:9/v1/chat/completions")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let (llm, forwarded) = layer.layer(inner).oneshot(request).await.unwrap();
    let llm = llm.expect("annotated");
    assert_eq!(
        llm.provider,
        Provider::Groq,
        "the configured provider wins over detection"
    );
    assert_eq!(forwarded, body.as_bytes());

    // A provider in the request extensions wins over the layer's.
    let mut request = Request::post("http://127.0.0.1:9/v1/messages")
        .body(Full::new(Bytes::from("{}")))
        .unwrap();
    request.extensions_mut().insert(Provider::Anthropic);
    request
        .extensions_mut()
        .insert(CredentialId::named("team-a"));
    let inner = service_fn(|request: Request<Full<Bytes>>| async move {
        Ok::<_, Infallible>(request.extensions().get::<LlmRequest>().cloned().unwrap())
    });
    let llm = layer.layer(inner).oneshot(request).await.unwrap();
    assert_eq!(llm.provider, Provider::Anthropic);
    assert_eq!(llm.credential, Some(CredentialId::named("team-a")));
}

/// A body of several chunks with no size hint, like a streamed upload.
struct Chunks(std::collections::VecDeque<Bytes>);

impl http_body::Body for Chunks {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        std::task::Poll::Ready(
            self.0
                .pop_front()
                .map(|chunk| Ok(http_body::Frame::data(chunk))),
        )
    }
}

fn chunks(parts: &[&'static str]) -> Chunks {
    Chunks(parts.iter().copied().map(Bytes::from).collect())
}

#[tokio::test]
async fn oversize_bodies_fail_and_send_nothing() {
    let layer = AnnotateLayer::new().with_max_body_bytes(10);
    let (service, mut handle) =
        tower_test::mock::spawn_layer::<Request<Full<Bytes>>, (), _>(layer.clone());
    // Known size: rejected before reading.
    let request = Request::post("/v1/chat/completions")
        .body(Full::new(Bytes::from("x".repeat(11))))
        .unwrap();
    let error = service.into_inner().oneshot(request).await.unwrap_err();
    assert_eq!(
        error.downcast_ref::<BodyTooLarge>(),
        Some(&BodyTooLarge { limit: 10 })
    );
    assert_eq!(
        error.to_string(),
        "request body is larger than the 10 byte limit"
    );
    // The service is gone: the mock's queue ends without ever having held a request.
    assert!(handle.next_request().await.is_none(), "nothing was sent");

    // Unknown size: rejected while reading.
    let inner = service_fn(|_: Request<Full<Bytes>>| async { Ok::<_, Infallible>(()) });
    let request = Request::post("/")
        .body(chunks(&["12345", "67890", "1"]))
        .unwrap();
    let error = layer.layer(inner).oneshot(request).await.unwrap_err();
    assert!(error.is::<BodyTooLarge>(), "{error}");

    // Exactly at the cap is fine.
    let inner = service_fn(|_: Request<Full<Bytes>>| async { Ok::<_, Infallible>(()) });
    let request = Request::post("/")
        .body(chunks(&["12345", "67890"]))
        .unwrap();
    layer.layer(inner).oneshot(request).await.unwrap();
}

#[tokio::test]
async fn the_mock_sees_the_annotated_request() {
    let (mut service, mut handle) = tower_test::mock::spawn_layer::<
        Request<Full<Bytes>>,
        &'static str,
        _,
    >(AnnotateLayer::new());
    handle.allow(1);
    tokio_test::assert_ready_ok!(service.poll_ready::<Request<Full<Bytes>>>());
    // The body is buffered inside the response future, so the inner call happens when it runs.
    let response = tokio::spawn(
        service.call(
            Request::post("https://api.anthropic.com/v1/messages")
                .body(Full::new(Bytes::from(
                    r#"{"model":"claude-haiku-4-5","max_tokens":5,"messages":[]}"#,
                )))
                .unwrap(),
        ),
    );
    let (request, send) = handle.next_request().await.unwrap();
    let llm = request.extensions().get::<LlmRequest>().unwrap();
    assert_eq!(llm.model.as_deref(), Some("claude-haiku-4-5"));
    send.send_response("ok");
    assert_eq!(response.await.unwrap().unwrap(), "ok");
}

#[tokio::test]
async fn readiness_comes_from_the_inner_service() {
    let (mut service, mut handle) =
        tower_test::mock::spawn_layer::<Request<Full<Bytes>>, (), _>(AnnotateLayer::new());
    handle.allow(0);
    tokio_test::assert_pending!(service.poll_ready::<Request<Full<Bytes>>>());
    handle.allow(1);
    tokio_test::assert_ready_ok!(service.poll_ready::<Request<Full<Bytes>>>());
}

proptest! {
    #[test]
    fn annotate_never_panics_on_arbitrary_bytes(
        body in proptest::collection::vec(any::<u8>(), 0..512),
        path in "[/a-z:?=&.]{0,40}",
    ) {
        let uri = format!("http://h/{path}");
        if let Ok(request) = Request::post(uri.as_str()).body(()) {
            let (parts, ()) = request.into_parts();
            let _ = annotate(&parts, &Bytes::from(body), None, &HeuristicEstimator);
        }
    }

    #[test]
    fn annotate_never_panics_on_arbitrary_json(value in arb_json()) {
        let body = serde_json::to_vec(&value).unwrap();
        for path in ["/v1/chat/completions", "/v1/embeddings", "/v1/messages", "/v1beta/models/m:generateContent"] {
            let (parts, ()) = Request::post(path).body(()).unwrap().into_parts();
            let r = annotate(&parts, &Bytes::from(body.clone()), None, &HeuristicEstimator);
            prop_assert_eq!(r.json_body, value.is_object());
        }
    }
}

fn arb_json() -> impl Strategy<Value = serde_json::Value> {
    let key = prop_oneof![
        Just("model".to_owned()),
        Just("messages".to_owned()),
        Just("input".to_owned()),
        Just("max_tokens".to_owned()),
        Just("stream".to_owned()),
        Just("content".to_owned()),
        Just("generationConfig".to_owned()),
        Just("image_url".to_owned()),
        "[a-z_]{1,8}",
    ];
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<f64>()
            .prop_filter("finite", |f| f.is_finite())
            .prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            proptest::collection::btree_map(key.clone(), inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// One row per request shape of every provider: what annotate must learn from it.
#[test]
fn every_provider_request_shape() {
    struct Row {
        uri: &'static str,
        header: (&'static str, &'static str),
        body: &'static str,
        provider: Provider,
        endpoint: EndpointKind,
        model: Option<&'static str>,
        max_output: Option<u32>,
        stream: bool,
        inputs: Option<u32>,
        estimate: u32,
    }
    let rows = [
        Row {
            uri: "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
            header: ("x-goog-api-key", "AIza-1"),
            body: r#"{"systemInstruction":{"parts":[{"text":"Be terse."}]},"contents":[{"role":"user","parts":[{"text":"Hello!"},{"inlineData":{"mimeType":"image/png","data":"iVBOR"}}]}],"generationConfig":{"maxOutputTokens":100}}"#,
            provider: Provider::Gemini,
            endpoint: EndpointKind::GenerateContent,
            model: Some("gemini-2.0-flash"),
            max_output: Some(100),
            stream: false,
            inputs: None,
            // "Be terse." 3 + "Hello!" 2 + one content's framing 4 + the image 1000.
            estimate: 3 + 2 + 4 + 1000,
        },
        Row {
            uri: "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse",
            header: ("x-goog-api-key", "AIza-1"),
            body: r#"{"contents":[{"parts":[{"text":"Hi"}]}]}"#,
            provider: Provider::Gemini,
            endpoint: EndpointKind::GenerateContent,
            model: Some("gemini-2.5-pro"),
            max_output: None,
            stream: true,
            inputs: None,
            estimate: 1 + 4,
        },
        Row {
            uri: "https://generativelanguage.googleapis.com/v1beta/models/text-embedding-004:embedContent?key=AIza-2",
            header: ("content-type", "application/json"),
            body: r#"{"model":"models/text-embedding-004","content":{"parts":[{"text":"an embedding"}]},"outputDimensionality":256}"#,
            provider: Provider::Gemini,
            endpoint: EndpointKind::Embeddings,
            model: Some("text-embedding-004"),
            max_output: None,
            stream: false,
            inputs: Some(1),
            estimate: 3,
        },
        Row {
            uri: "https://generativelanguage.googleapis.com/v1beta/models/text-embedding-004:batchEmbedContents",
            header: ("x-goog-api-key", "AIza-2"),
            body: r#"{"requests":[{"model":"models/text-embedding-004","content":{"parts":[{"text":"one"}]}},{"model":"models/text-embedding-004","content":{"parts":[{"text":"two"}]}}]}"#,
            provider: Provider::Gemini,
            endpoint: EndpointKind::Embeddings,
            model: Some("text-embedding-004"),
            max_output: None,
            stream: false,
            inputs: Some(2),
            estimate: 4 + 1 + 4 + 1,
        },
        Row {
            uri: "https://res.openai.azure.com/openai/deployments/gpt4o-eu/chat/completions?api-version=2024-10-21",
            header: ("api-key", "azure-1"),
            body: r#"{"messages":[{"role":"user","content":"Hello!"}],"max_tokens":64,"stream":true}"#,
            provider: Provider::AzureOpenAi,
            endpoint: EndpointKind::ChatCompletions,
            model: Some("gpt4o-eu"),
            max_output: Some(64),
            stream: true,
            inputs: None,
            estimate: 2 + 4,
        },
        Row {
            uri: "https://res.openai.azure.com/openai/deployments/embed-small/embeddings?api-version=2024-10-21",
            header: ("api-key", "azure-1"),
            body: r#"{"input":["a","b","c"]}"#,
            provider: Provider::AzureOpenAi,
            endpoint: EndpointKind::Embeddings,
            model: Some("embed-small"),
            max_output: None,
            stream: false,
            inputs: Some(3),
            estimate: 3,
        },
        Row {
            uri: "https://api.mistral.ai/v1/chat/completions",
            header: ("authorization", "Bearer mistral-1"),
            body: r#"{"model":"mistral-small-latest","messages":[{"role":"user","content":"Hello!"}],"max_tokens":32,"temperature":0.3}"#,
            provider: Provider::Mistral,
            endpoint: EndpointKind::ChatCompletions,
            model: Some("mistral-small-latest"),
            max_output: Some(32),
            stream: false,
            inputs: None,
            estimate: 2 + 4,
        },
        Row {
            uri: "https://api.mistral.ai/v1/embeddings",
            header: ("authorization", "Bearer mistral-1"),
            body: r#"{"model":"mistral-embed","input":["alpha","beta"]}"#,
            provider: Provider::Mistral,
            endpoint: EndpointKind::Embeddings,
            model: Some("mistral-embed"),
            max_output: None,
            stream: false,
            inputs: Some(2),
            estimate: 2 + 1,
        },
        Row {
            uri: "https://api.llama.com/compat/v1/chat/completions",
            header: ("authorization", "Bearer llama-1"),
            body: r#"{"model":"Llama-4-Maverick-17B-128E-Instruct-FP8","messages":[{"role":"user","content":"Hello!"}],"max_completion_tokens":256,"stream":true}"#,
            provider: Provider::Llama,
            endpoint: EndpointKind::ChatCompletions,
            model: Some("Llama-4-Maverick-17B-128E-Instruct-FP8"),
            max_output: Some(256),
            stream: true,
            inputs: None,
            estimate: 2 + 4,
        },
    ];
    for row in rows {
        let r = learn(row.uri, &[row.header], row.body);
        let what = row.uri;
        assert_eq!(
            (r.provider, r.endpoint),
            (row.provider, row.endpoint),
            "{what}"
        );
        assert_eq!(r.model.as_deref(), row.model, "{what}");
        assert_eq!(r.max_output_tokens, row.max_output, "{what}");
        assert_eq!(r.stream, row.stream, "{what}");
        assert_eq!(r.embedding_inputs, row.inputs, "{what}");
        assert_eq!(r.input_tokens_estimate, row.estimate, "{what}");
        let credential = r.credential.clone().expect("every row carries a key");
        for secret in ["AIza-1", "AIza-2", "azure-1", "mistral-1", "llama-1"] {
            assert!(!credential.to_string().contains(secret), "{what}");
            assert!(
                !r.scope().to_string().contains(secret),
                "{what}: {}",
                r.scope()
            );
            assert!(!format!("{r:?}").contains(secret), "{what}");
        }
    }
}

#[tokio::test]
async fn a_model_name_no_provider_uses_is_refused_before_anything_is_sent() {
    use tollgate_core::error::InvalidModel;
    let huge = "m".repeat(4 << 20);
    for (uri, body) in [
        (
            "https://api.openai.com/v1/chat/completions",
            format!(r#"{{"model":"{huge}","messages":[]}}"#),
        ),
        (
            "https://api.openai.com/v1/chat/completions",
            r#"{"model":"gpt 4o","messages":[]}"#.to_owned(),
        ),
        (
            "https://generativelanguage.googleapis.com/v1beta/models/g%20x:generateContent",
            "{}".to_owned(),
        ),
    ] {
        let inner = service_fn(|_: Request<Full<Bytes>>| async {
            panic!("nothing is sent");
            #[allow(unreachable_code)]
            Ok::<(), Infallible>(())
        });
        let request = Request::post(uri)
            .body(Full::new(Bytes::from(body)))
            .unwrap();
        let error = AnnotateLayer::new()
            .with_max_body_bytes(8 << 20)
            .layer(inner)
            .oneshot(request)
            .await
            .unwrap_err();
        assert!(error.is::<InvalidModel>(), "{uri}: {error}");
        assert!(error.to_string().len() < 200, "the name is not echoed");
    }
}
