//! [`EmbeddingsCodec`]: OpenAI-style `/v1/embeddings` requests merged into one array request.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use bytes::Bytes;
use http::request;
use serde::Deserialize;
use serde_json::value::RawValue;
use tollgate_core::{BoxError, CredentialId, EndpointKind, LlmRequest};

use crate::codec::{BatchCodec, Part, Weight};

/// OpenAI's cap on inputs in one embeddings request.
pub const MAX_INPUTS: u32 = 2_048;
/// OpenAI's cap on the tokens of all inputs of one embeddings request.
pub const MAX_TOKENS: u64 = 300_000;

/// Merges OpenAI-compatible embeddings requests (OpenAI, Azure OpenAI, Mistral, the simulator)
/// with the same URI, credential, model and options — `encoding_format`, `dimensions`, `user`
/// and any other field must be identical — into one request whose `input` is every member's
/// inputs in order, up to 2,048 inputs and 300,000 tokens. The response's `data` is cut back
/// by index (each member's indices start at 0 again) and its `usage` split in proportion to
/// each member's estimated tokens, so the members' usage adds up to the whole.
///
/// A request needs the [`LlmRequest`] annotation (for the endpoint and the token estimate);
/// without it, or with a body that is not a JSON object with an `input`, it is sent alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct EmbeddingsCodec;

/// What must match for two embeddings requests to merge.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct EmbeddingsKey {
    uri: String,
    credential: Option<CredentialId>,
    tokens: bool,
    /// Every field but `input`, in key order, as sent.
    options: String,
}

/// One member: its inputs and other fields as sent, and its token estimate.
#[derive(Debug)]
pub struct EmbeddingsMember {
    inputs: Vec<Box<RawValue>>,
    options: BTreeMap<String, Box<RawValue>>,
    tokens: u64,
}

#[derive(Deserialize)]
struct EmbeddingsResponse {
    data: Vec<Datum>,
    #[serde(default)]
    model: Option<Box<RawValue>>,
    #[serde(default)]
    usage: Option<UsageIn>,
}

#[derive(Deserialize)]
struct Datum {
    index: usize,
    embedding: Box<RawValue>,
}

#[derive(Deserialize)]
struct UsageIn {
    prompt_tokens: u64,
    total_tokens: u64,
}

/// Splits `total` in proportion to `weights`, exactly (the remainder goes to the first).
pub(crate) fn split_proportionally(total: u64, weights: &[u64]) -> Vec<u64> {
    let sum: u64 = weights.iter().sum();
    if sum == 0 {
        let n = weights.len().max(1) as u64;
        let mut shares = vec![total / n; weights.len()];
        for share in shares.iter_mut().take((total % n) as usize) {
            *share += 1;
        }
        return shares;
    }
    let mut shares: Vec<u64> = weights
        .iter()
        .map(|w| (u128::from(total) * u128::from(*w) / u128::from(sum)) as u64)
        .collect();
    let mut left = total - shares.iter().sum::<u64>();
    for share in shares.iter_mut() {
        if left == 0 {
            break;
        }
        *share += 1;
        left -= 1;
    }
    shares
}

/// The inputs of an `input` field, and whether they are token ids.
fn inputs(raw: &RawValue) -> Option<(Vec<Box<RawValue>>, bool)> {
    let text = raw.get().trim_start();
    match text.as_bytes().first()? {
        b'"' => Some((vec![raw.to_owned()], false)),
        b'[' => {
            let items: Vec<Box<RawValue>> = serde_json::from_str(raw.get()).ok()?;
            let first = items.first()?.get().as_bytes().first().copied()?;
            match first {
                // One input given as token ids.
                b'-' | b'0'..=b'9' => Some((vec![raw.to_owned()], true)),
                b'"' | b'[' => {
                    let same = items
                        .iter()
                        .all(|item| item.get().as_bytes().first() == Some(&first));
                    same.then_some((items, first == b'['))
                }
                _ => None,
            }
        }
        _ => None,
    }
}

impl BatchCodec for EmbeddingsCodec {
    type Key = EmbeddingsKey;
    type Member = EmbeddingsMember;

    fn admit(
        &self,
        head: &request::Parts,
        body: &Bytes,
    ) -> Option<(EmbeddingsKey, Weight, EmbeddingsMember)> {
        let llm = head.extensions.get::<LlmRequest>()?;
        if llm.endpoint != EndpointKind::Embeddings || head.method != http::Method::POST {
            return None;
        }
        let mut fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body).ok()?;
        let (inputs, tokens) = inputs(&fields.remove("input")?)?;
        let mut options = String::new();
        for (name, value) in &fields {
            // Names as JSON strings, so no field can pose as another.
            let _ = write!(
                options,
                "{}:{},",
                serde_json::to_string(name).ok()?,
                value.get()
            );
        }
        let key = EmbeddingsKey {
            uri: head.uri.to_string(),
            credential: llm.credential.clone(),
            tokens,
            options,
        };
        let weight = Weight {
            items: u32::try_from(inputs.len()).ok()?,
            tokens: u64::from(llm.input_tokens_estimate),
        };
        let member = EmbeddingsMember {
            inputs,
            options: fields,
            tokens: weight.tokens,
        };
        Some((key, weight, member))
    }

    fn merge(&self, members: &[&EmbeddingsMember]) -> Result<Bytes, BoxError> {
        let first = members.first().ok_or("nothing to merge")?;
        let size: usize = members
            .iter()
            .flat_map(|m| m.inputs.iter())
            .map(|i| i.get().len() + 1)
            .sum();
        let mut body = String::with_capacity(size + 256);
        body.push_str("{\"input\":[");
        for (n, input) in members.iter().flat_map(|m| m.inputs.iter()).enumerate() {
            if n > 0 {
                body.push(',');
            }
            body.push_str(input.get());
        }
        body.push(']');
        for (name, value) in &first.options {
            body.push(',');
            body.push_str(&serde_json::to_string(name)?);
            body.push(':');
            body.push_str(value.get());
        }
        body.push('}');
        Ok(Bytes::from(body))
    }

    fn split(&self, body: &[u8], members: &[&EmbeddingsMember]) -> Vec<Part> {
        let failed = |error: String| -> Vec<Part> {
            members
                .iter()
                .map(|_| Part::Failed(error.clone().into()))
                .collect()
        };
        let mut response: EmbeddingsResponse = match serde_json::from_slice(body) {
            Ok(response) => response,
            Err(error) => return failed(format!("malformed merged embeddings response: {error}")),
        };
        let expected: usize = members.iter().map(|m| m.inputs.len()).sum();
        response.data.sort_unstable_by_key(|d| d.index);
        let in_order = response.data.iter().enumerate().all(|(i, d)| d.index == i);
        if response.data.len() != expected || !in_order {
            return failed(format!(
                "the merged embeddings response has {} embeddings for {expected} inputs",
                response.data.len()
            ));
        }
        let weights: Vec<u64> = members.iter().map(|m| m.tokens).collect();
        let (prompt, total) = match &response.usage {
            Some(u) => (
                split_proportionally(u.prompt_tokens, &weights),
                split_proportionally(u.total_tokens, &weights),
            ),
            None => (Vec::new(), Vec::new()),
        };
        let model = response.model.as_deref().map_or("null", RawValue::get);
        let mut data = response.data.into_iter();
        members
            .iter()
            .enumerate()
            .map(|(k, member)| {
                let mut out = String::from("{\"object\":\"list\",\"data\":[");
                for (index, datum) in data.by_ref().take(member.inputs.len()).enumerate() {
                    if index > 0 {
                        out.push(',');
                    }
                    let _ = write!(
                        out,
                        "{{\"object\":\"embedding\",\"index\":{index},\"embedding\":{}}}",
                        datum.embedding.get()
                    );
                }
                let _ = write!(out, "],\"model\":{model}");
                if let (Some(p), Some(t)) = (prompt.get(k), total.get(k)) {
                    let _ = write!(
                        out,
                        ",\"usage\":{{\"prompt_tokens\":{p},\"total_tokens\":{t}}}"
                    );
                }
                out.push('}');
                Part::Body(Bytes::from(out))
            })
            .collect()
    }

    fn max_items(&self) -> u32 {
        MAX_INPUTS
    }

    fn max_tokens(&self) -> u64 {
        MAX_TOKENS
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use tollgate_core::Provider;

    use super::*;

    fn head(body: &str) -> (request::Parts, Bytes) {
        let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::Embeddings);
        llm.input_tokens_estimate = 10;
        llm.credential = Some(CredentialId::named("k"));
        let request = http::Request::post("https://api.openai.com/v1/embeddings")
            .extension(llm)
            .body(())
            .unwrap();
        (request.into_parts().0, Bytes::from(body.to_owned()))
    }

    fn admit(body: &str) -> Option<(EmbeddingsKey, Weight, EmbeddingsMember)> {
        let (head, body) = head(body);
        EmbeddingsCodec.admit(&head, &body)
    }

    #[test]
    fn only_identical_options_share_a_key() {
        let a = admit(r#"{"model":"m","input":"a","dimensions":8}"#).unwrap();
        let b = admit(r#"{"dimensions":8,"input":["b","c"],"model":"m"}"#).unwrap();
        assert_eq!(a.0, b.0, "field order does not matter");
        assert_eq!(b.1.items, 2);
        let c = admit(r#"{"model":"m","input":"a","dimensions":16}"#).unwrap();
        assert_ne!(a.0, c.0);
        let d = admit(r#"{"model":"m","input":"a","dimensions":8,"encoding_format":"base64"}"#)
            .unwrap();
        assert_ne!(a.0, d.0);
        let tokens = admit(r#"{"model":"m","input":[1,2,3],"dimensions":8}"#).unwrap();
        assert_eq!(tokens.1.items, 1, "one input given as token ids");
        assert_ne!(a.0, tokens.0, "text and token inputs never mix");
        assert!(admit(r#"{"model":"m","input":[]}"#).is_none());
        assert!(admit(r#"{"model":"m","input":["a",[1]]}"#).is_none());
        assert!(admit("not json").is_none());
    }

    #[test]
    fn merge_then_split_round_trips() {
        let a = admit(r#"{"model":"m","input":"a"}"#).unwrap().2;
        let b = admit(r#"{"model":"m","input":["b","c"]}"#).unwrap().2;
        let merged = EmbeddingsCodec.merge(&[&a, &b]).unwrap();
        assert_eq!(&merged[..], br#"{"input":["a","b","c"],"model":"m"}"#);
        let response = r#"{"object":"list","data":[
            {"object":"embedding","index":2,"embedding":[3.0]},
            {"object":"embedding","index":0,"embedding":[1.0]},
            {"object":"embedding","index":1,"embedding":[2.0]}],
            "model":"m-1","usage":{"prompt_tokens":7,"total_tokens":7}}"#;
        let parts = EmbeddingsCodec.split(response.as_bytes(), &[&a, &b]);
        let body = |part: &Part| match part {
            Part::Body(body) => body.clone(),
            other => panic!("{other:?}"),
        };
        assert_eq!(
            body(&parts[0]),
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[1.0]}],"model":"m-1","usage":{"prompt_tokens":4,"total_tokens":4}}"#
        );
        assert_eq!(
            body(&parts[1]),
            r#"{"object":"list","data":[{"object":"embedding","index":0,"embedding":[2.0]},{"object":"embedding","index":1,"embedding":[3.0]}],"model":"m-1","usage":{"prompt_tokens":3,"total_tokens":3}}"#
        );
        let short = r#"{"data":[{"index":0,"embedding":[1.0]}]}"#;
        assert!(
            EmbeddingsCodec
                .split(short.as_bytes(), &[&a, &b])
                .iter()
                .all(|p| matches!(p, Part::Failed(_)))
        );
    }

    proptest! {
        #[test]
        fn proportional_split_adds_up(total in 0u64..1_000_000, weights in proptest::collection::vec(0u64..5000, 1..50)) {
            let shares = split_proportionally(total, &weights);
            prop_assert_eq!(shares.len(), weights.len());
            prop_assert_eq!(shares.iter().sum::<u64>(), total);
        }
    }
}
