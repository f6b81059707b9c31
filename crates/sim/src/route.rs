//! What a request's URL and headers name: the generation call it makes (OpenAI, Anthropic,
//! Gemini's `models/{model}:method`, Azure's `deployments/{deployment}`), and its API key.
//!
//! A route of a known provider that is malformed (Azure without `api-version`, a Gemini method
//! the simulator does not serve) names no call, so it falls through to the 404 of its provider.

use http::request::Parts;
use http::{Method, Uri, header};

use crate::config::OpenAiFlavor;
use crate::dialect::{Context, Dialect};

/// The operations served by the generation pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Operation {
    /// OpenAI `/v1/chat/completions`, Azure `.../chat/completions`.
    Chat,
    /// OpenAI `/v1/responses` (the Responses API, always in OpenAI's dialect).
    Responses,
    /// Anthropic `/v1/messages`.
    Messages,
    /// OpenAI `/v1/embeddings`, Azure `.../embeddings`.
    Embeddings,
    /// Gemini `:generateContent`.
    GenerateContent,
    /// Gemini `:streamGenerateContent`: SSE with `alt=sse`, else a streamed JSON array.
    StreamGenerateContent {
        /// Whether the query asked for `alt=sse`.
        sse: bool,
    },
    /// Gemini `:embedContent`.
    EmbedContent,
    /// Gemini `:batchEmbedContents`.
    BatchEmbedContents,
}

/// One generation or embeddings call, as its URL names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Call {
    /// What it asks for.
    pub(crate) operation: Operation,
    /// Whose conventions the answer follows.
    pub(crate) dialect: Dialect,
    /// The model the URL names (Gemini's `models/{model}`, Azure's deployment), which wins
    /// over any `model` in the body.
    pub(crate) model: Option<String>,
    /// Azure's `api-version` query parameter.
    pub(crate) api_version: String,
}

impl Call {
    /// What a refusal of this call may name.
    pub(crate) fn context(&self, seq: u64) -> Context<'_> {
        let operation = match self.operation {
            Operation::Embeddings => "Embeddings_Create",
            _ => "ChatCompletions_Create",
        };
        Context {
            seq,
            api_version: &self.api_version,
            operation,
        }
    }
}

/// The call `method` and `uri` make, if they name one; `flavor` decides who the OpenAI-shaped
/// routes imitate.
pub(crate) fn route(method: &Method, uri: &Uri, flavor: OpenAiFlavor) -> Option<Call> {
    if method != Method::POST {
        return None;
    }
    let path = uri.path();
    let call = |operation, dialect| Call {
        operation,
        dialect,
        model: None,
        api_version: String::new(),
    };
    let openai = match flavor {
        OpenAiFlavor::OpenAi => Dialect::OpenAi,
        OpenAiFlavor::Mistral => Dialect::Mistral,
    };
    match path {
        // `/compat/v1/...` is the Llama API's OpenAI-compatible surface.
        "/v1/chat/completions" | "/compat/v1/chat/completions" => {
            return Some(call(Operation::Chat, openai));
        }
        "/v1/embeddings" | "/compat/v1/embeddings" => {
            return Some(call(Operation::Embeddings, openai));
        }
        "/v1/responses" => return Some(call(Operation::Responses, Dialect::OpenAi)),
        "/v1/messages" => return Some(call(Operation::Messages, Dialect::Anthropic)),
        _ => {}
    }
    if let Some(rest) = path.strip_prefix("/openai/deployments/") {
        let (deployment, operation) = rest.split_once('/')?;
        let operation = match operation {
            "chat/completions" => Operation::Chat,
            "embeddings" => Operation::Embeddings,
            _ => return None,
        };
        let api_version = query_param(uri, "api-version").filter(|v| !v.is_empty())?;
        return (!deployment.is_empty()).then(|| Call {
            model: Some(deployment.to_owned()),
            api_version,
            ..call(operation, Dialect::Azure)
        });
    }
    let (model, method) = gemini_method(path)?;
    let operation = match method {
        "generateContent" => Operation::GenerateContent,
        "streamGenerateContent" => Operation::StreamGenerateContent {
            sse: query_param(uri, "alt").as_deref() == Some("sse"),
        },
        "embedContent" => Operation::EmbedContent,
        "batchEmbedContents" => Operation::BatchEmbedContents,
        _ => return None,
    };
    Some(Call {
        model: Some(model),
        ..call(operation, Dialect::Gemini)
    })
}

/// Whether `path` is one of Gemini's (`/v1beta/...`, or `/v1/models/{model}:method`).
pub(crate) fn is_gemini(path: &str) -> bool {
    path.starts_with("/v1beta/") || gemini_method(path).is_some()
}

/// `models/{model}:{method}` under `/v1beta/` or `/v1/` (the colon may come percent-encoded).
fn gemini_method(path: &str) -> Option<(String, &str)> {
    let rest = path
        .strip_prefix("/v1beta/models/")
        .or_else(|| path.strip_prefix("/v1/models/"))?;
    let (model, method) = rest
        .rsplit_once(':')
        .or_else(|| rest.rsplit_once("%3A"))
        .or_else(|| rest.rsplit_once("%3a"))?;
    let valid = !model.is_empty() && !model.contains('/') && !method.is_empty();
    valid.then(|| (model.to_owned(), method))
}

/// The API key: `Authorization: Bearer`, `x-api-key`, `api-key`, `x-goog-api-key`, or Gemini's
/// `?key=` query parameter, first found wins.
pub(crate) fn api_key(parts: &Parts) -> Option<String> {
    let headers = &parts.headers;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or(v).trim());
    bearer
        .or_else(|| header("x-api-key"))
        .or_else(|| header("api-key"))
        .or_else(|| header("x-goog-api-key"))
        .map(str::to_owned)
        .or_else(|| query_param(&parts.uri, "key"))
}

/// The first value of query parameter `name`, percent-decoded (`+` is a space).
pub(crate) fn query_param(uri: &Uri, name: &str) -> Option<String> {
    uri.query()?.split('&').find_map(|pair| {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        (decode(key) == name).then(|| decode(value))
    })
}

/// `text` percent-decoded (`+` is a space).
pub(crate) fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |at: usize| {
            bytes
                .get(at)
                .and_then(|&b| char::from(b).to_digit(16))
                .and_then(|d| u8::try_from(d).ok())
        };
        if bytes[i] == b'%'
            && let (Some(high), Some(low)) = (hex(i + 1), hex(i + 2))
        {
            out.push(high * 16 + low);
            i += 3;
            continue;
        }
        out.push(if bytes[i] == b'+' { b' ' } else { bytes[i] });
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(uri: &str) -> Option<Call> {
        route(&Method::POST, &uri.parse().unwrap(), OpenAiFlavor::OpenAi)
    }

    #[test]
    fn gemini_routes_name_the_model_and_the_method() {
        let call = at("/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse").unwrap();
        assert_eq!(
            call.operation,
            Operation::StreamGenerateContent { sse: true }
        );
        assert_eq!(call.model.as_deref(), Some("gemini-2.0-flash"));
        assert_eq!(
            at("/v1/models/m%3AstreamGenerateContent").map(|c| c.operation),
            Some(Operation::StreamGenerateContent { sse: false })
        );
        assert_eq!(
            at("/v1beta/models/e:batchEmbedContents").map(|c| c.operation),
            Some(Operation::BatchEmbedContents)
        );
        assert_eq!(at("/v1beta/models/m:countTokens"), None);
        assert_eq!(at("/v1beta/models/:generateContent"), None);
        assert_eq!(at("/v1beta/models/a/b:generateContent"), None);
        assert!(is_gemini("/v1beta/anything") && !is_gemini("/v1/models/gpt-4o"));
    }

    #[test]
    fn azure_routes_need_an_api_version() {
        let call = at("/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21").unwrap();
        assert_eq!(
            (
                call.dialect,
                call.model.as_deref(),
                call.api_version.as_str()
            ),
            (Dialect::Azure, Some("gpt4o"), "2024-10-21")
        );
        assert_eq!(call.context(1).operation, "ChatCompletions_Create");
        assert_eq!(at("/openai/deployments/gpt4o/chat/completions"), None);
        assert_eq!(
            at("/openai/deployments/gpt4o/embeddings?api-version="),
            None
        );
        assert_eq!(at("/openai/deployments//embeddings?api-version=1"), None);
    }

    #[test]
    fn the_flavor_decides_the_openai_routes() {
        let uri = "/v1/chat/completions".parse().unwrap();
        let call = route(&Method::POST, &uri, OpenAiFlavor::Mistral).unwrap();
        assert_eq!(call.dialect, Dialect::Mistral);
        let responses = "/v1/responses".parse().unwrap();
        let call = route(&Method::POST, &responses, OpenAiFlavor::Mistral).unwrap();
        assert_eq!(
            (call.operation, call.dialect),
            (Operation::Responses, Dialect::OpenAi),
            "the Responses API is OpenAI's alone"
        );
        assert_eq!(route(&Method::GET, &uri, OpenAiFlavor::OpenAi), None);
    }

    #[test]
    fn keys_come_from_headers_or_the_query() {
        let parts = |uri: &str, header: Option<(&str, &str)>| {
            let mut builder = http::Request::post(uri);
            if let Some((name, value)) = header {
                builder = builder.header(name, value);
            }
            builder.body(()).unwrap().into_parts().0
        };
        let key = |uri, header| api_key(&parts(uri, header));
        assert_eq!(
            key("/x", Some(("x-goog-api-key", "AIza1"))).as_deref(),
            Some("AIza1")
        );
        assert_eq!(
            key("/x?alt=sse&key=AIza%2F2", None).as_deref(),
            Some("AIza/2")
        );
        assert_eq!(
            key("/x?key=q", Some(("authorization", "Bearer h"))).as_deref(),
            Some("h"),
            "a header wins"
        );
        assert_eq!(key("/x?keys=1&%zz=2", None), None);
        assert_eq!(decode("a%2"), "a%2");
    }
}
