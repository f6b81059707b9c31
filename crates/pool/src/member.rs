//! A pool member's settings, and the adapter that points a request at it.

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use http::header::{AUTHORIZATION, CONTENT_LENGTH, HeaderName, HeaderValue};
use http::uri::PathAndQuery;
use http::{Request, Uri};
use http_body_util::Full;
use tollgate_core::credential::{API_KEY_HEADERS, CREDENTIAL_HEADERS, without_key_param};
use tollgate_core::{BoxError, CredentialId, LlmRequest, Provider, Secret};

/// How a member sends its key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize, serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Auth {
    /// `Authorization: Bearer <key>` (OpenAI, Mistral, the Llama API).
    #[default]
    Bearer,
    /// `x-api-key: <key>` (Anthropic).
    XApiKey,
    /// `api-key: <key>` (Azure OpenAI).
    ApiKey,
    /// `x-goog-api-key: <key>` (Gemini).
    GoogApiKey,
}

/// Points a request at one member: its key, its host, its model, its paths.
pub trait Adapter: Send + Sync + 'static {
    /// Rewrites `request` for this member.
    ///
    /// # Errors
    ///
    /// When the request cannot be sent to this member (the pool then tries another).
    fn adapt(&self, request: &mut Request<Full<Bytes>>) -> Result<(), BoxError>;

    /// The fingerprint of the member's own key, if it has one: a fleet sharing cooldowns
    /// names the member by it (with its name), never by the key. Default: none.
    fn credential(&self) -> Option<CredentialId> {
        None
    }
}

/// The usual adapter: sets the key, and optionally the scheme and host (`base`), the model in
/// the JSON body, and — for Azure OpenAI deployments — the deployment path.
///
/// # Credentials
///
/// A member with its own [`key`](Self::key) replaces whatever credential the request carried:
/// the `Authorization`, `x-api-key`, `api-key` and `x-goog-api-key` headers and a `key=` query
/// parameter (Gemini) are removed before its key is set. A member without one passes the
/// caller's credentials on only to the host they came with: when its [`base`](Self::base)
/// sends the request to another scheme or host, they are removed (with any `Cookie`), so a key
/// meant for one host never reaches another.
#[derive(Clone, Default)]
pub struct Rewrite {
    key: Option<Secret>,
    auth: Auth,
    base: Option<Uri>,
    model: Option<Arc<str>>,
    azure: Option<(Arc<str>, Arc<str>)>,
    provider: Option<Provider>,
}

impl fmt::Debug for Rewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rewrite")
            .field("key", &self.key)
            .field("auth", &self.auth)
            .field("base", &self.base)
            .field("model", &self.model)
            .field("azure", &self.azure)
            .field("provider", &self.provider)
            .finish()
    }
}

impl Rewrite {
    /// Sends `key` the way `auth` says, replacing whatever credential the request had.
    pub fn key(mut self, key: Secret, auth: Auth) -> Self {
        self.key = Some(key);
        self.auth = auth;
        self
    }

    /// Sends to `base`'s scheme and host (and port), its path (if any) in front of the
    /// request's (`https://api.groq.com/openai` sends `/v1/chat/completions` to
    /// `/openai/v1/chat/completions`). Without a
    /// [`key`](Self::key) of the member's own, the caller's credentials are dropped when this
    /// is another host than the request's (see [Credentials](Self#credentials)).
    ///
    /// # Panics
    ///
    /// When `base` is not an absolute URI.
    pub fn base(mut self, base: &str) -> Self {
        let uri: Uri = base.parse().expect("an absolute base URI");
        assert!(
            uri.scheme().is_some() && uri.authority().is_some(),
            "the base needs a scheme and a host"
        );
        self.base = Some(uri);
        self
    }

    /// Sets the body's `model` (a fallback model).
    pub fn model(mut self, model: &str) -> Self {
        self.model = Some(model.into());
        self
    }

    /// Marks requests as going to `provider`, whose way of answering (headers, errors) the
    /// member's layers then read. Gemini's is reached through its OpenAI-compatible API: an
    /// OpenAI path (`/v1/chat/completions`) goes to `/v1beta/openai/chat/completions`.
    pub fn provider(mut self, provider: Provider) -> Self {
        self.provider = Some(provider);
        self
    }

    /// Sends OpenAI-style paths (`/v1/chat/completions`, `/v1/embeddings`) to an Azure OpenAI
    /// deployment: `/openai/deployments/{deployment}/...?api-version={version}`.
    pub fn azure(mut self, deployment: &str, api_version: &str) -> Self {
        self.azure = Some((deployment.into(), api_version.into()));
        self
    }
}

impl Rewrite {
    /// Whether `base` sends a request for `uri` to another scheme or host (a request without
    /// one counts as another: its credentials were not meant for `base`).
    fn moves(&self, uri: &Uri) -> bool {
        self.base.as_ref().is_some_and(|base| {
            base.scheme() != uri.scheme() || base.authority() != uri.authority()
        })
    }
}

/// Removes the API-key headers and the `key` query parameter; when the request `moves` to
/// another host, every other credential header (cookies, a proxy's) too.
fn strip_credentials(request: &mut Request<Full<Bytes>>, moves: bool) -> Result<(), BoxError> {
    let headers = request.headers_mut();
    let names: &[&str] = if moves {
        &CREDENTIAL_HEADERS
    } else {
        &API_KEY_HEADERS
    };
    for name in names {
        headers.remove(*name);
    }
    let Some(query) = request.uri().query().and_then(without_key_param) else {
        return Ok(());
    };
    let path = request.uri().path();
    let path_and_query: PathAndQuery = if query.is_empty() {
        path.parse()?
    } else {
        format!("{path}?{query}").parse()?
    };
    let mut parts = request.uri().clone().into_parts();
    parts.path_and_query = Some(path_and_query);
    *request.uri_mut() = Uri::from_parts(parts)?;
    Ok(())
}

impl Adapter for Rewrite {
    fn credential(&self) -> Option<CredentialId> {
        self.key
            .as_ref()
            .map(|key| CredentialId::from_secret(key.expose().as_bytes()))
    }

    fn adapt(&self, request: &mut Request<Full<Bytes>>) -> Result<(), BoxError> {
        if let Some(provider) = self.provider
            && let Some(llm) = request.extensions_mut().get_mut::<LlmRequest>()
        {
            llm.provider = provider;
        }
        let moves = self.moves(request.uri());
        if self.key.is_some() || moves {
            strip_credentials(request, moves)?;
        }
        if moves
            && self.key.is_none()
            && let Some(llm) = request.extensions_mut().get_mut::<LlmRequest>()
        {
            // It goes without a credential now: its scope must not name the caller's key.
            llm.credential = None;
        }
        if let Some(key) = &self.key {
            let headers = request.headers_mut();
            let (name, value) = match self.auth {
                Auth::Bearer => (AUTHORIZATION, format!("Bearer {}", key.expose())),
                Auth::XApiKey => (
                    HeaderName::from_static("x-api-key"),
                    key.expose().to_owned(),
                ),
                Auth::ApiKey => (HeaderName::from_static("api-key"), key.expose().to_owned()),
                Auth::GoogApiKey => (
                    HeaderName::from_static("x-goog-api-key"),
                    key.expose().to_owned(),
                ),
            };
            let mut value =
                HeaderValue::from_str(&value).map_err(|_| "a key that is not a header value")?;
            value.set_sensitive(true);
            headers.insert(name, value);
            if let Some(llm) = request.extensions_mut().get_mut::<LlmRequest>() {
                llm.credential = Some(CredentialId::from_secret(key.expose().as_bytes()));
            }
        }
        let gemini =
            self.provider == Some(Provider::Gemini) && request.uri().path().starts_with("/v1/");
        let prefix = self
            .base
            .as_ref()
            .map_or("", |base| base.path().trim_end_matches('/'));
        if self.base.is_some() || self.azure.is_some() {
            let mut parts = request.uri().clone().into_parts();
            if let Some(base) = &self.base {
                parts.scheme = base.scheme().cloned();
                parts.authority = base.authority().cloned();
            }
            if !prefix.is_empty() || gemini {
                let (path, query) = parts
                    .path_and_query
                    .as_ref()
                    .map_or(("/", None), |p| (p.path(), p.query()));
                // Gemini answers OpenAI's API under /v1beta/openai/.
                let path = match path.strip_prefix("/v1/") {
                    Some(rest) if gemini => format!("/v1beta/openai/{rest}"),
                    _ => path.to_owned(),
                };
                let query = query.map(|q| format!("?{q}")).unwrap_or_default();
                parts.path_and_query = Some(format!("{prefix}{path}{query}").parse()?);
            }
            if let Some((deployment, version)) = &self.azure {
                let path = parts.path_and_query.as_ref().map_or("/", |p| p.path());
                let operation = path
                    .strip_prefix("/v1/")
                    .unwrap_or(path.trim_start_matches('/'));
                parts.path_and_query = Some(
                    format!("/openai/deployments/{deployment}/{operation}?api-version={version}")
                        .parse()?,
                );
            }
            *request.uri_mut() = Uri::from_parts(parts)?;
        }
        // A body that already asks for the model (as its request says) is left as it is.
        let asks_already = |model: &str| {
            request
                .extensions()
                .get::<LlmRequest>()
                .is_some_and(|llm| llm.model.as_deref() == Some(model))
        };
        if let Some(model) = self.model.as_ref().filter(|m| !asks_already(m)) {
            let body = tollgate_core::body::full_bytes(request.body().clone());
            let mut json: serde_json::Value = serde_json::from_slice(&body)
                .map_err(|e| format!("cannot set the model of a body that is not JSON: {e}"))?;
            let object = json
                .as_object_mut()
                .ok_or("the body is not a JSON object")?;
            object.insert("model".into(), serde_json::Value::from(&**model));
            let body = Bytes::from(serde_json::to_vec(&json)?);
            request
                .headers_mut()
                .insert(CONTENT_LENGTH, HeaderValue::from(body.len() as u64));
            *request.body_mut() = Full::new(body);
            if let Some(llm) = request.extensions_mut().get_mut::<LlmRequest>() {
                llm.model = Some(model.clone());
            }
        }
        Ok(())
    }
}

/// One member of a pool: a name (for reports and logs; never a secret), how requests are
/// pointed at it, and how the pool treats it.
#[derive(Clone)]
pub struct Member {
    pub(crate) name: Arc<str>,
    pub(crate) adapter: Arc<dyn Adapter>,
    pub(crate) tier: u32,
    pub(crate) weight: u32,
    pub(crate) context_window: Option<u64>,
}

impl fmt::Debug for Member {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Member")
            .field("name", &self.name)
            .field("tier", &self.tier)
            .field("weight", &self.weight)
            .field("context_window", &self.context_window)
            .finish_non_exhaustive()
    }
}

impl Member {
    /// A member that sends `key` as a bearer token, in tier 0, weight 1.
    pub fn key(name: &str, key: Secret) -> Self {
        Self::with_adapter(name, Rewrite::default().key(key, Auth::Bearer))
    }

    /// A member whose requests `adapter` rewrites.
    pub fn with_adapter(name: &str, adapter: impl Adapter) -> Self {
        Self {
            name: name.into(),
            adapter: Arc::new(adapter),
            tier: 0,
            weight: 1,
            context_window: None,
        }
    }

    /// Its tier: tier 0 serves first; tier 1 only when no tier-0 member can (a fallback model
    /// or provider), and so on.
    pub fn tier(mut self, tier: u32) -> Self {
        self.tier = tier;
        self
    }

    /// Its share under [`Policy::Weighted`](crate::Policy::Weighted) (at least 1).
    pub fn weight(mut self, weight: u32) -> Self {
        self.weight = weight.max(1);
        self
    }

    /// Its model's context window in tokens: a context-length error falls back only to members
    /// with a larger one.
    pub fn context_window(mut self, tokens: u64) -> Self {
        self.context_window = Some(tokens);
        self
    }

    /// Its name.
    pub fn name(&self) -> &str {
        &self.name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> Request<Full<Bytes>> {
        Request::post("https://api.openai.com/v1/chat/completions")
            .header("authorization", "Bearer sk-caller")
            .body(Full::new(Bytes::from_static(
                br#"{"model":"gpt-4o","messages":[]}"#,
            )))
            .unwrap()
    }

    #[test]
    fn rewrites_key_host_model_and_azure_path() {
        let mut r = request();
        Rewrite::default()
            .key(Secret::new("az-key"), Auth::ApiKey)
            .base("https://contoso.openai.azure.com")
            .azure("gpt-4o-mini-prod", "2024-10-21")
            .model("gpt-4o-mini")
            .adapt(&mut r)
            .unwrap();
        assert_eq!(
            r.uri(),
            "https://contoso.openai.azure.com/openai/deployments/gpt-4o-mini-prod/chat/completions?api-version=2024-10-21"
        );
        assert!(r.headers().get("authorization").is_none());
        assert_eq!(r.headers()["api-key"], "az-key");
        assert!(r.headers()["api-key"].is_sensitive());
        let body: serde_json::Value =
            serde_json::from_slice(&tollgate_core::body::full_bytes(r.body().clone())).unwrap();
        assert_eq!(body["model"], "gpt-4o-mini");
    }

    #[test]
    fn a_base_path_goes_in_front_and_gemini_takes_openai_paths_under_v1beta() {
        let mut r = request();
        Rewrite::default()
            .key(Secret::new("gsk"), Auth::Bearer)
            .base("https://api.groq.com/openai/")
            .adapt(&mut r)
            .unwrap();
        assert_eq!(r.uri(), "https://api.groq.com/openai/v1/chat/completions");
        let mut r = request();
        Rewrite::default()
            .key(Secret::new("g"), Auth::GoogApiKey)
            .provider(Provider::Gemini)
            .base("https://generativelanguage.googleapis.com")
            .adapt(&mut r)
            .unwrap();
        assert_eq!(
            r.uri(),
            "https://generativelanguage.googleapis.com/v1beta/openai/chat/completions"
        );
    }

    #[test]
    fn a_body_that_already_asks_for_the_model_is_left_as_it_is() {
        let mut r = request();
        let mut llm = LlmRequest::new(
            Provider::OpenAi,
            tollgate_core::EndpointKind::ChatCompletions,
        );
        llm.model = Some("gpt-4o".into());
        r.extensions_mut().insert(llm);
        let before = tollgate_core::body::full_bytes(r.body().clone());
        Rewrite::default().model("gpt-4o").adapt(&mut r).unwrap();
        assert_eq!(tollgate_core::body::full_bytes(r.body().clone()), before);
        Rewrite::default()
            .model("gpt-4o-mini")
            .adapt(&mut r)
            .unwrap();
        let body: serde_json::Value =
            serde_json::from_slice(&tollgate_core::body::full_bytes(r.body().clone())).unwrap();
        assert_eq!(body["model"], "gpt-4o-mini");
    }

    #[test]
    fn debug_never_shows_a_key() {
        let member = Member::key("primary", Secret::new("sk-live-secret"));
        let rewrite = Rewrite::default().key(Secret::new("sk-live-secret"), Auth::Bearer);
        for text in [format!("{member:?}"), format!("{rewrite:?}")] {
            assert!(!text.contains("sk-live-secret"), "{text}");
        }
    }
}
