//! [`GeminiEmbeddingsCodec`]: Gemini `:embedContent` calls merged into one
//! `:batchEmbedContents` call.

use bytes::Bytes;
use http::request;
use serde::Deserialize;
use serde_json::value::RawValue;
use tollgate_core::{BoxError, CredentialId, EndpointKind, LlmRequest, Provider};

use crate::codec::{BatchCodec, Part, Weight};

/// Gemini's cap on requests in one `batchEmbedContents` call.
pub const GEMINI_MAX_REQUESTS: u32 = 100;

const ONE: &str = ":embedContent";
const MANY: &str = ":batchEmbedContents";

/// Merges Gemini native `POST .../models/{model}:embedContent` calls for the same model and
/// key into one `:batchEmbedContents` call of up to 100 requests. Each request keeps its own
/// `content`, `taskType`, `title` and `outputDimensionality` (a batch allows them to differ);
/// the response's `embeddings` go back in order, each as the `{"embedding": ...}` its caller
/// would have had.
#[derive(Clone, Copy, Debug, Default)]
pub struct GeminiEmbeddingsCodec;

/// What must match for two Gemini embedding calls to merge: the path (so the model and API
/// version) and the key. The query (which may hold the key itself) is never kept.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct GeminiKey {
    path: String,
    credential: Option<CredentialId>,
}

/// One `:embedContent` call: its request object as sent, and the model's resource name.
#[derive(Debug)]
pub struct GeminiMember {
    request: Box<RawValue>,
    has_model: bool,
    model: String,
}

#[derive(Deserialize)]
struct ModelField<'a> {
    #[serde(borrow, default)]
    model: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct BatchResponse {
    embeddings: Vec<Box<RawValue>>,
}

impl BatchCodec for GeminiEmbeddingsCodec {
    type Key = GeminiKey;
    type Member = GeminiMember;

    fn admit(
        &self,
        head: &request::Parts,
        body: &Bytes,
    ) -> Option<(GeminiKey, Weight, GeminiMember)> {
        let llm = head.extensions.get::<LlmRequest>()?;
        let path = head.uri.path();
        if llm.provider != Provider::Gemini
            || llm.endpoint != EndpointKind::Embeddings
            || head.method != http::Method::POST
            || !path.ends_with(ONE)
        {
            return None;
        }
        let model = path.rsplit_once("/models/")?.1.strip_suffix(ONE)?;
        let request: Box<RawValue> = serde_json::from_slice(body).ok()?;
        if !request.get().trim_start().starts_with('{') {
            return None;
        }
        let has_model = serde_json::from_str::<ModelField<'_>>(request.get())
            .ok()?
            .model
            .is_some();
        let key = GeminiKey {
            path: path.to_owned(),
            credential: llm.credential.clone(),
        };
        let weight = Weight {
            items: 1,
            tokens: u64::from(llm.input_tokens_estimate),
        };
        let member = GeminiMember {
            request,
            has_model,
            model: format!("models/{model}"),
        };
        Some((key, weight, member))
    }

    fn merge(&self, members: &[&GeminiMember]) -> Result<Bytes, BoxError> {
        let mut body = String::from("{\"requests\":[");
        for (i, member) in members.iter().enumerate() {
            if i > 0 {
                body.push(',');
            }
            let request = member.request.get().trim();
            if member.has_model {
                body.push_str(request);
            } else {
                // A batch's requests must name their model.
                let inner = request
                    .strip_prefix('{')
                    .ok_or("not a JSON object")?
                    .trim_start();
                body.push_str("{\"model\":");
                body.push_str(&serde_json::to_string(&member.model)?);
                if !inner.starts_with('}') {
                    body.push(',');
                }
                body.push_str(inner);
            }
        }
        body.push_str("]}");
        Ok(Bytes::from(body))
    }

    fn merged_head(&self, head: &mut request::Parts) -> Result<(), BoxError> {
        let path = head
            .uri
            .path()
            .strip_suffix(ONE)
            .ok_or("not an :embedContent call")?;
        let path_and_query = match head.uri.query() {
            Some(query) => format!("{path}{MANY}?{query}"),
            None => format!("{path}{MANY}"),
        };
        let mut parts = head.uri.clone().into_parts();
        parts.path_and_query = Some(path_and_query.parse()?);
        head.uri = http::Uri::from_parts(parts)?;
        Ok(())
    }

    fn split(&self, body: &[u8], members: &[&GeminiMember]) -> Vec<Part> {
        let failed = |error: String| -> Vec<Part> {
            members
                .iter()
                .map(|_| Part::Failed(error.clone().into()))
                .collect()
        };
        let response: BatchResponse = match serde_json::from_slice(body) {
            Ok(response) => response,
            Err(error) => return failed(format!("malformed batchEmbedContents response: {error}")),
        };
        if response.embeddings.len() != members.len() {
            return failed(format!(
                "batchEmbedContents returned {} embeddings for {} requests",
                response.embeddings.len(),
                members.len()
            ));
        }
        response
            .embeddings
            .into_iter()
            .map(|embedding| {
                Part::Body(Bytes::from(format!(
                    "{{\"embedding\":{}}}",
                    embedding.get()
                )))
            })
            .collect()
    }

    fn max_items(&self) -> u32 {
        GEMINI_MAX_REQUESTS
    }

    fn max_tokens(&self) -> u64 {
        // 2,048 tokens per input, 100 inputs.
        204_800
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admit(uri: &str, body: &str) -> Option<(GeminiKey, Weight, GeminiMember)> {
        let mut llm = LlmRequest::new(Provider::Gemini, EndpointKind::Embeddings);
        llm.credential = Some(CredentialId::named("g"));
        let head = http::Request::post(uri)
            .extension(llm)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        GeminiEmbeddingsCodec.admit(&head, &Bytes::from(body.to_owned()))
    }

    const URI: &str =
        "https://generativelanguage.googleapis.com/v1beta/models/text-embedding-004:embedContent";

    #[test]
    fn merges_into_a_batch_naming_the_model() {
        let a = admit(
            URI,
            r#"{"content":{"parts":[{"text":"a"}]},"taskType":"RETRIEVAL_DOCUMENT"}"#,
        )
        .unwrap();
        let b = admit(
            URI,
            r#"{"model":"models/text-embedding-004","content":{"parts":[{"text":"b"}]}}"#,
        )
        .unwrap();
        assert_eq!(a.0, b.0);
        let other = admit(
            &URI.replace("004", "005"),
            r#"{"content":{"parts":[{"text":"a"}]}}"#,
        )
        .unwrap();
        assert_ne!(a.0, other.0);
        let merged = GeminiEmbeddingsCodec.merge(&[&a.2, &b.2]).unwrap();
        assert_eq!(
            &merged[..],
            br#"{"requests":[{"model":"models/text-embedding-004","content":{"parts":[{"text":"a"}]},"taskType":"RETRIEVAL_DOCUMENT"},{"model":"models/text-embedding-004","content":{"parts":[{"text":"b"}]}}]}"#
        );
        let mut head = http::Request::post(format!("{URI}?key=secret"))
            .body(())
            .unwrap()
            .into_parts()
            .0;
        GeminiEmbeddingsCodec.merged_head(&mut head).unwrap();
        assert_eq!(
            head.uri,
            "https://generativelanguage.googleapis.com/v1beta/models/text-embedding-004:batchEmbedContents?key=secret"
        );
        assert!(!format!("{:?}", a.0).contains("secret"));
    }

    #[test]
    fn splits_in_order_and_refuses_a_short_answer() {
        let a = admit(URI, r#"{"content":{"parts":[{"text":"a"}]}}"#)
            .unwrap()
            .2;
        let b = admit(URI, r#"{"content":{"parts":[{"text":"b"}]}}"#)
            .unwrap()
            .2;
        let parts = GeminiEmbeddingsCodec.split(
            br#"{"embeddings":[{"values":[1.0]},{"values":[2.0]}]}"#,
            &[&a, &b],
        );
        let Part::Body(second) = &parts[1] else {
            panic!("{parts:?}")
        };
        assert_eq!(&second[..], br#"{"embedding":{"values":[2.0]}}"#);
        let short = GeminiEmbeddingsCodec.split(br#"{"embeddings":[{"values":[1.0]}]}"#, &[&a, &b]);
        assert!(short.iter().all(|p| matches!(p, Part::Failed(_))));
        assert!(admit(&URI.replace(ONE, ":generateContent"), "{}").is_none());
    }
}
