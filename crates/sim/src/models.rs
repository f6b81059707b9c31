//! The Models API: `GET /v1/models` and `GET /v1/models/{id}`, listing
//! [`SimConfig::models`](crate::SimConfig::models).
//!
//! A client asks it to check a key, discover what it may call, or probe a provider's health
//! without spending quota, so it is authenticated like every call (401 in the provider's shape
//! for an unknown or revoked key) but charged to no rate limit and never failed by a fault.
//! A request with an `anthropic-version` header gets Anthropic's shape (paged with `limit`,
//! `after_id` and `before_id`, as its message batches are); any other gets OpenAI's (or
//! Mistral's errors, under `openai_flavor = "mistral"`).

use std::sync::Arc;

use bytes::Bytes;
use http::request::Parts;
use http::{HeaderMap, Method, Response, StatusCode};
use serde_json::{Value, json};

use crate::batch::Query;
use crate::body::SimBody;
use crate::config::OpenAiFlavor;
use crate::dialect::{Dialect, Refuse};
use crate::respond::{finish_headers, refuse};
use crate::route::decode;
use crate::state::{KeyRefusal, Shared};
use crate::stats::LogEntry;

/// When every listed model was created: 2024-07-18T00:00:00Z, in Unix seconds.
const CREATED: u64 = 1_721_260_800;

/// The same instant, as Anthropic writes it.
const CREATED_AT: &str = "2024-07-18T00:00:00Z";

/// A Models API call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ModelsRoute {
    /// `GET /v1/models`
    List,
    /// `GET /v1/models/{id}` (the id percent-decoded)
    Retrieve(String),
}

/// The Models API call `method` and `path` name, if any.
pub(crate) fn route(method: &Method, path: &str) -> Option<ModelsRoute> {
    if method != Method::GET {
        return None;
    }
    match path.strip_prefix("/v1/models")? {
        "" | "/" => Some(ModelsRoute::List),
        rest => {
            let id = decode(rest.strip_prefix('/')?);
            (!id.is_empty() && !id.contains('/')).then_some(ModelsRoute::Retrieve(id))
        }
    }
}

/// Serves one Models API call.
pub(crate) fn handle(
    shared: &Arc<Shared>,
    route: &ModelsRoute,
    parts: &Parts,
    entry: &mut LogEntry,
) -> Response<SimBody> {
    let dialect = if parts.headers.contains_key("anthropic-version") {
        Dialect::Anthropic
    } else {
        match shared.config.openai_flavor {
            OpenAiFlavor::OpenAi => Dialect::OpenAi,
            OpenAiFlavor::Mistral => Dialect::Mistral,
        }
    };
    if let Err(refusal) = shared.authenticate(parts, entry) {
        let missing = refusal == KeyRefusal::Missing;
        return refuse(
            shared,
            dialect,
            Refuse::Unauthorized { missing },
            entry,
            HeaderMap::new(),
        );
    }
    let models = &shared.config.models;
    let body = match route {
        ModelsRoute::Retrieve(id) => match models.iter().find(|model| *model == id) {
            Some(model) => model_object(model, dialect),
            None => {
                let refusal = Refuse::ModelNotFound(id.clone());
                return refuse(shared, dialect, refusal, entry, HeaderMap::new());
            }
        },
        ModelsRoute::List if dialect == Dialect::Anthropic => {
            let query = match Query::anthropic(&parts.uri) {
                Ok(query) => query,
                Err(message) => {
                    let refusal = Refuse::BadRequest(message);
                    return refuse(shared, dialect, refusal, entry, HeaderMap::new());
                }
            };
            let Some(page) = query.page(models) else {
                let message = format!("no model found with id '{}'", query.cursor);
                let refusal = Refuse::BadRequest(message);
                return refuse(shared, dialect, refusal, entry, HeaderMap::new());
            };
            let page_models = &models[page.range];
            json!({
                "data": page_models.iter().map(|m| model_object(m, dialect)).collect::<Vec<_>>(),
                "has_more": page.has_more,
                "first_id": page_models.first(),
                "last_id": page_models.last(),
            })
        }
        ModelsRoute::List => json!({
            "object": "list",
            "data": models.iter().map(|m| model_object(m, dialect)).collect::<Vec<_>>(),
        }),
    };
    let mut response = Response::new(SimBody::full(Bytes::from(body.to_string())));
    *response.status_mut() = StatusCode::OK;
    let content_type = dialect.json_content_type();
    finish_headers(
        shared,
        dialect,
        entry.seq,
        HeaderMap::new(),
        content_type,
        &mut response,
    );
    response
}

/// One model, in `dialect`'s shape.
fn model_object(id: &str, dialect: Dialect) -> Value {
    match dialect {
        Dialect::Anthropic => json!({"type": "model", "id": id, "display_name": id,
            "created_at": CREATED_AT}),
        _ => json!({"id": id, "object": "model", "created": CREATED, "owned_by": "tollgate-sim"}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_name_the_list_or_one_model() {
        let at = |method: Method, path: &str| route(&method, path);
        assert_eq!(at(Method::GET, "/v1/models"), Some(ModelsRoute::List));
        assert_eq!(
            at(Method::GET, "/v1/models/ft%3Agpt-4o-mini%3Aorg"),
            Some(ModelsRoute::Retrieve("ft:gpt-4o-mini:org".into()))
        );
        assert_eq!(at(Method::POST, "/v1/models"), None);
        assert_eq!(at(Method::GET, "/v1/models/a/b"), None);
        assert_eq!(at(Method::GET, "/v1/models/a%2Fb"), None);
        assert_eq!(at(Method::GET, "/v1/modelsx"), None);
    }

    #[test]
    fn created_at_is_created() {
        let at = time::OffsetDateTime::from_unix_timestamp(CREATED as i64).unwrap();
        let text = at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        assert_eq!(text, CREATED_AT);
    }
}
