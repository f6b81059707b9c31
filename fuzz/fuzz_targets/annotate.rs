//! Request annotation (`tollgate_core::annotate::annotate`), the one pass over a request body
//! that finds the model, the output cap, streaming and an input-token estimate, with the URI
//! and header rules that name the provider, the endpoint, the model (Azure, Gemini paths) and
//! the credential; and `Provider`'s name parser.
//!
//! A first line that is a URI is the request's URI, the rest its body; otherwise the whole
//! input is the body of a request to each provider's main endpoint. Nothing panics; a body is
//! taken as JSON only if it is a JSON object; a provider name that parses names itself.
#![no_main]

use bytes::Bytes;
use http::{Request, Uri};
use libfuzzer_sys::fuzz_target;
use tollgate_core::Provider;
use tollgate_core::annotate::annotate;
use tollgate_core::estimate::HeuristicEstimator;

const URIS: [&str; 6] = [
    "https://api.openai.com/v1/chat/completions",
    "https://api.openai.com/v1/embeddings",
    "https://api.anthropic.com/v1/messages",
    "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse&key=k",
    "https://r.openai.azure.com/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
    "http://127.0.0.1:9000/v1/responses",
];

fn check(uri: &Uri, body: &[u8]) {
    let (parts, ()) = Request::post(uri.clone())
        .header("authorization", "Bearer sk-fuzz")
        .body(())
        .expect("a valid request")
        .into_parts();
    let body = Bytes::copy_from_slice(body);
    for provider in [None, Some(Provider::Gemini)] {
        let request = annotate(&parts, &body, provider, &HeuristicEstimator);
        if request.json_body {
            // Invalid UTF-8 inside a string the parser skips (an image's base64) goes unchecked,
            // as serde_json's `IgnoredAny` does not check it: compare with the text made valid.
            // `IgnoredAny`, not `Value`, which refuses valid JSON (`1e400`, a lone `\ud800`).
            let text = String::from_utf8_lossy(&body);
            if let Err(e) = serde_json::from_str::<serde::de::IgnoredAny>(&text) {
                panic!("taken as JSON but is not: {e}");
            }
            assert!(
                text.trim_start().starts_with('{'),
                "taken as a JSON object but is not one"
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let (first, rest) = match data.iter().position(|&b| b == b'\n') {
        Some(end) => (&data[..end], &data[end + 1..]),
        None => (data, &[][..]),
    };
    if let Ok(name) = std::str::from_utf8(first)
        && let Ok(provider) = name.parse::<Provider>()
    {
        assert_eq!(provider.as_str().parse::<Provider>().ok(), Some(provider));
    }
    match Uri::try_from(first) {
        Ok(uri) if uri.scheme().is_some() => {
            let _ = Provider::detect(&uri, &http::HeaderMap::new());
            check(&uri, rest);
        }
        _ => {
            for uri in URIS {
                check(&Uri::from_static(uri), data);
            }
        }
    }
});
