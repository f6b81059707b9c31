//! Which provider a request goes to and which of its endpoints it calls.

use std::fmt;
use std::str::FromStr;

use http::{HeaderMap, Uri};

/// An LLM API provider. Decides how headers, error bodies and usage are read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Provider {
    /// `api.openai.com`.
    OpenAi,
    /// Azure OpenAI (`*.openai.azure.com`, `/openai/deployments/...`).
    AzureOpenAi,
    /// `api.anthropic.com`.
    Anthropic,
    /// Google Gemini's native API (`generativelanguage.googleapis.com`).
    Gemini,
    /// `api.mistral.ai`.
    Mistral,
    /// `api.groq.com`.
    Groq,
    /// `api.together.xyz`.
    Together,
    /// Meta's Llama API (`api.llama.com`), through its OpenAI-compatible endpoints.
    Llama,
    /// Any other server that speaks the OpenAI API (vLLM, Ollama, a gateway, tollgate-sim).
    OpenAiCompatible,
}

impl Provider {
    /// Every provider, in declaration order.
    pub const ALL: [Self; 9] = [
        Self::OpenAi,
        Self::AzureOpenAi,
        Self::Anthropic,
        Self::Gemini,
        Self::Mistral,
        Self::Groq,
        Self::Together,
        Self::Llama,
        Self::OpenAiCompatible,
    ];

    /// The stable snake_case name: `"openai"`, `"azure_openai"`, `"anthropic"`, `"gemini"`,
    /// `"mistral"`, `"groq"`, `"together"`, `"llama"`, `"openai_compatible"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::OpenAi => "openai",
            Self::AzureOpenAi => "azure_openai",
            Self::Anthropic => "anthropic",
            Self::Gemini => "gemini",
            Self::Mistral => "mistral",
            Self::Groq => "groq",
            Self::Together => "together",
            Self::Llama => "llama",
            Self::OpenAiCompatible => "openai_compatible",
        }
    }

    /// The provider a host name belongs to, if it is one of the known public endpoints.
    pub fn from_host(host: &str) -> Option<Self> {
        // Compared without case and without allocating: this runs for every request.
        const HOSTS: [(&str, Provider); 8] = [
            ("api.openai.com", Provider::OpenAi),
            ("api.anthropic.com", Provider::Anthropic),
            ("generativelanguage.googleapis.com", Provider::Gemini),
            ("api.mistral.ai", Provider::Mistral),
            ("api.groq.com", Provider::Groq),
            ("api.together.xyz", Provider::Together),
            ("api.together.ai", Provider::Together),
            ("api.llama.com", Provider::Llama),
        ];
        const AZURE_SUFFIXES: [&str; 3] = [
            ".openai.azure.com",
            ".cognitiveservices.azure.com",
            ".services.ai.azure.com",
        ];
        let host = host.trim_end_matches('.').as_bytes();
        let ends_with = |suffix: &str| {
            host.len() >= suffix.len()
                && host[host.len() - suffix.len()..].eq_ignore_ascii_case(suffix.as_bytes())
        };
        HOSTS
            .iter()
            .find(|(name, _)| host.eq_ignore_ascii_case(name.as_bytes()))
            .map(|&(_, provider)| provider)
            .or_else(|| {
                AZURE_SUFFIXES
                    .iter()
                    .any(|suffix| ends_with(suffix))
                    .then_some(Self::AzureOpenAi)
            })
    }

    /// Detects the provider of a request from its host, then its path and headers.
    ///
    /// A request to an unknown host (a local server, a proxy) is recognised by the shape of its
    /// path (`/openai/deployments/` is Azure, `/v1/messages` Anthropic, `:generateContent`
    /// Gemini) or by a provider-specific header (`anthropic-version`, `api-key`,
    /// `x-goog-api-key`); anything else is [`Provider::OpenAiCompatible`].
    pub fn detect(uri: &Uri, headers: &HeaderMap) -> Self {
        let host = uri.host().or_else(|| {
            headers
                .get(http::header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(|h| h.rsplit_once(':').map_or(h, |(name, _port)| name))
        });
        if let Some(provider) = host.and_then(Self::from_host) {
            return provider;
        }
        let path = uri.path();
        if path.contains("/openai/deployments/") || headers.contains_key("api-key") {
            Self::AzureOpenAi
        } else if path.contains(":generateContent")
            || path.contains(":streamGenerateContent")
            || path.contains(":embedContent")
            || path.contains(":batchEmbedContents")
            || headers.contains_key("x-goog-api-key")
        {
            Self::Gemini
        } else if path.starts_with("/v1/messages") || headers.contains_key("anthropic-version") {
            Self::Anthropic
        } else {
            Self::OpenAiCompatible
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a provider name that [`Provider::from_str`] does not know.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnknownProvider(String);

impl fmt::Display for UnknownProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "unknown provider {:?} (expected one of openai, azure_openai, anthropic, gemini, mistral, groq, together, llama, openai_compatible)",
            self.0
        )
    }
}

impl std::error::Error for UnknownProvider {}

impl FromStr for Provider {
    type Err = UnknownProvider;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        match wanted.as_str() {
            "azure" => return Ok(Self::AzureOpenAi),
            "google" => return Ok(Self::Gemini),
            _ => {}
        }
        Self::ALL
            .into_iter()
            .find(|p| p.as_str() == wanted)
            .ok_or_else(|| UnknownProvider(s.to_owned()))
    }
}

impl serde::Serialize for Provider {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for Provider {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let name = String::deserialize(deserializer)?;
        name.parse().map_err(serde::de::Error::custom)
    }
}

/// Which API a request calls. Decides what its body means to the layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum EndpointKind {
    /// OpenAI `/v1/chat/completions` (and every OpenAI-compatible server's).
    ChatCompletions,
    /// OpenAI `/v1/responses`.
    Responses,
    /// Anthropic `/v1/messages`.
    Messages,
    /// Gemini `models/{model}:generateContent` and `:streamGenerateContent`.
    GenerateContent,
    /// OpenAI `/v1/embeddings`, Gemini `:embedContent` and `:batchEmbedContents`.
    Embeddings,
    /// The legacy OpenAI `/v1/completions`.
    Completions,
    /// Batch APIs: OpenAI `/v1/batches`, Anthropic `/v1/messages/batches`.
    Batches,
    /// File uploads and downloads (`/v1/files`).
    Files,
    /// Anything else (model lists, moderation, token counting, ...).
    Other,
}

impl EndpointKind {
    /// The stable snake_case name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::ChatCompletions => "chat_completions",
            Self::Responses => "responses",
            Self::Messages => "messages",
            Self::GenerateContent => "generate_content",
            Self::Embeddings => "embeddings",
            Self::Completions => "completions",
            Self::Batches => "batches",
            Self::Files => "files",
            Self::Other => "other",
        }
    }

    /// Whether the endpoint generates text (and so spends output tokens).
    pub const fn is_generation(self) -> bool {
        matches!(
            self,
            Self::ChatCompletions
                | Self::Responses
                | Self::Messages
                | Self::GenerateContent
                | Self::Completions
        )
    }

    /// Detects the endpoint from a request path (the query is ignored).
    pub fn from_path(path: &str) -> Self {
        let path = path
            .split('?')
            .next()
            .unwrap_or_default()
            .trim_end_matches('/');
        // Gemini puts the method after a colon: `/v1beta/models/gemini-2.0-flash:generateContent`.
        if let Some((_, method)) = path.rsplit_once(':') {
            match method {
                "generateContent" | "streamGenerateContent" => return Self::GenerateContent,
                "embedContent" | "batchEmbedContents" => return Self::Embeddings,
                _ => {}
            }
        }
        // Read in place, not collected: this runs for every request.
        let has = |name: &str| path.split('/').any(|segment| segment == name);
        let mut from_the_end = path.rsplit('/').filter(|segment| !segment.is_empty());
        let (last, before_last) = (from_the_end.next(), from_the_end.next());
        match last {
            _ if has("batches") => Self::Batches,
            _ if has("files") => Self::Files,
            Some("completions") if before_last == Some("chat") => Self::ChatCompletions,
            Some("completions") => Self::Completions,
            Some("embeddings") => Self::Embeddings,
            Some("messages") => Self::Messages,
            Some("responses") => Self::Responses,
            _ => Self::Other,
        }
    }
}

impl fmt::Display for EndpointKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detect(uri: &str, headers: &[(&str, &str)]) -> Provider {
        let uri: Uri = uri.parse().unwrap();
        let mut map = HeaderMap::new();
        for (name, value) in headers {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                value.parse().unwrap(),
            );
        }
        Provider::detect(&uri, &map)
    }

    #[test]
    fn detects_providers_from_hosts() {
        let cases = [
            (
                "https://api.openai.com/v1/chat/completions",
                Provider::OpenAi,
            ),
            (
                "https://myres.openai.azure.com/openai/deployments/gpt4o/chat/completions?api-version=2024-10-21",
                Provider::AzureOpenAi,
            ),
            ("https://api.anthropic.com/v1/messages", Provider::Anthropic),
            (
                "https://generativelanguage.googleapis.com/v1beta/models/gemini-2.0-flash:generateContent",
                Provider::Gemini,
            ),
            (
                "https://api.mistral.ai/v1/chat/completions",
                Provider::Mistral,
            ),
            (
                "https://api.groq.com/openai/v1/chat/completions",
                Provider::Groq,
            ),
            (
                "https://api.together.xyz/v1/chat/completions",
                Provider::Together,
            ),
            (
                "http://localhost:11434/v1/chat/completions",
                Provider::OpenAiCompatible,
            ),
        ];
        for (uri, want) in cases {
            assert_eq!(detect(uri, &[]), want, "{uri}");
        }
    }

    #[test]
    fn hosts_match_without_case_and_with_a_trailing_dot() {
        assert_eq!(
            Provider::from_host("API.OpenAI.com."),
            Some(Provider::OpenAi)
        );
        assert_eq!(
            Provider::from_host("api.together.ai"),
            Some(Provider::Together)
        );
        assert_eq!(
            Provider::from_host("My-Resource.OpenAI.Azure.com"),
            Some(Provider::AzureOpenAi)
        );
        assert_eq!(
            Provider::from_host("x.services.ai.azure.com"),
            Some(Provider::AzureOpenAi)
        );
        assert_eq!(Provider::from_host("openai.azure.com"), None);
        assert_eq!(Provider::from_host("api.openai.com.evil.example"), None);
        assert_eq!(Provider::from_host("ápi.openai.com"), None);
        assert_eq!(Provider::from_host(""), None);
    }

    #[test]
    fn detects_providers_from_paths_and_headers() {
        assert_eq!(detect("/v1/messages", &[]), Provider::Anthropic);
        assert_eq!(
            detect("/v1/complete", &[("anthropic-version", "2023-06-01")]),
            Provider::Anthropic
        );
        assert_eq!(
            detect("/openai/deployments/d/embeddings", &[]),
            Provider::AzureOpenAi
        );
        assert_eq!(
            detect("/v1beta/models/m:streamGenerateContent?alt=sse", &[]),
            Provider::Gemini
        );
        assert_eq!(
            detect("/v1/chat/completions", &[("host", "api.groq.com:443")]),
            Provider::Groq
        );
        assert_eq!(
            detect("/v1/chat/completions", &[]),
            Provider::OpenAiCompatible
        );
    }

    #[test]
    fn parses_provider_names() {
        for provider in Provider::ALL {
            assert_eq!(provider.as_str().parse::<Provider>().unwrap(), provider);
        }
        assert_eq!(
            "Azure-OpenAI".parse::<Provider>().unwrap(),
            Provider::AzureOpenAi
        );
        let err = "cohere".parse::<Provider>().unwrap_err().to_string();
        assert!(err.contains("\"cohere\""), "{err}");
    }

    #[test]
    fn detects_endpoints() {
        let cases = [
            ("/v1/chat/completions", EndpointKind::ChatCompletions),
            ("//v1//chat//completions//", EndpointKind::ChatCompletions),
            ("/v1/chat", EndpointKind::Other),
            (
                "/openai/deployments/x/chat/completions?api-version=1",
                EndpointKind::ChatCompletions,
            ),
            ("/v1/completions", EndpointKind::Completions),
            ("/v1/responses", EndpointKind::Responses),
            ("/v1/messages", EndpointKind::Messages),
            ("/v1/messages/batches", EndpointKind::Batches),
            (
                "/v1/messages/batches/msgbatch_1/results",
                EndpointKind::Batches,
            ),
            ("/v1/messages/count_tokens", EndpointKind::Other),
            ("/v1/embeddings", EndpointKind::Embeddings),
            ("/v1/batches", EndpointKind::Batches),
            ("/v1/batches/batch_1/cancel", EndpointKind::Batches),
            ("/v1/files", EndpointKind::Files),
            ("/v1/files/file-1/content", EndpointKind::Files),
            (
                "/v1beta/models/gemini-2.0-flash:generateContent",
                EndpointKind::GenerateContent,
            ),
            (
                "/v1beta/models/text-embedding-004:batchEmbedContents",
                EndpointKind::Embeddings,
            ),
            ("/v1/models", EndpointKind::Other),
            ("/", EndpointKind::Other),
        ];
        for (path, want) in cases {
            assert_eq!(EndpointKind::from_path(path), want, "{path}");
        }
    }
}
