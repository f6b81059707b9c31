//! [`PromptPackingCodec`]: short, independent chat prompts packed into one call that answers
//! them all as a JSON array.

use std::collections::BTreeMap;

use bytes::Bytes;
use http::request;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};
use tollgate_core::{BoxError, CredentialId, EndpointKind, LlmRequest};

use crate::codec::{BatchCodec, Part, Weight};
use crate::embeddings::split_proportionally;

/// The instructions a packed call starts with; `{n}` is the number of tasks.
const INSTRUCTIONS: &str = "You will receive {n} independent tasks, numbered 1 to {n}. Answer \
each one on its own, as if it were the only one. Reply with only a JSON array of exactly {n} \
elements, where element i is the answer to task i: a string, or the JSON value the task asks \
for. Write nothing outside the array.";

/// Packs short, independent OpenAI-style chat prompts — "extract the invoice date from ...",
/// "classify this review ..." — into one chat completion that answers them all as a JSON
/// array (24 fields to extract take 2 calls, not 24). Opt-in: use it only for prompts that do not need
/// a conversation of their own.
///
/// A request is packed when it is a non-streamed `/chat/completions` call with one user
/// message of text (after at most one system message), one choice, and no tools or response
/// format; requests merge when their URI, credential, model, system message and every other
/// option are identical. `max_tokens` (or `max_completion_tokens`) is summed.
///
/// The answer is validated on the way back: the reply must be a JSON array (a code fence
/// around it is fine) with one element per task. A member whose element is missing or null
/// — or every member, when the reply is not such an array or was cut short — is sent again
/// alone, so every caller still gets an answer of its own. Usage is split: prompt tokens in
/// proportion to each prompt's estimate, completion tokens to each answer's length.
#[derive(Clone, Copy, Debug)]
pub struct PromptPackingCodec {
    max_prompts: u32,
    max_tokens: u64,
}

impl Default for PromptPackingCodec {
    fn default() -> Self {
        Self::new()
    }
}

impl PromptPackingCodec {
    /// At most 12 prompts and 16,000 input tokens per packed call.
    pub const fn new() -> Self {
        Self {
            max_prompts: 12,
            max_tokens: 16_000,
        }
    }

    /// At most `prompts` prompts per packed call (more makes answers worse).
    ///
    /// # Panics
    ///
    /// When 0.
    pub fn with_max_prompts(mut self, prompts: u32) -> Self {
        assert!(prompts > 0, "a packed call holds at least one prompt");
        self.max_prompts = prompts;
        self
    }

    /// At most `tokens` input tokens per packed call.
    pub fn with_max_tokens(mut self, tokens: u64) -> Self {
        self.max_tokens = tokens.max(1);
        self
    }
}

/// What must match for two prompts to share a call.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PackingKey {
    uri: String,
    credential: Option<CredentialId>,
    system: Option<String>,
    /// Every other field, in key order, as sent.
    options: String,
}

/// One packed prompt.
#[derive(Debug)]
pub struct PackingMember {
    prompt: String,
    system: Option<String>,
    options: BTreeMap<String, Box<RawValue>>,
    /// The output cap it asked for, and under which name.
    max_tokens: Option<(&'static str, u64)>,
    tokens: u64,
}

#[derive(Deserialize)]
struct Message {
    role: String,
    content: Value,
}

const CAP_FIELDS: [&str; 2] = ["max_tokens", "max_completion_tokens"];
const REFUSED_FIELDS: [&str; 6] = [
    "tools",
    "functions",
    "tool_choice",
    "function_call",
    "response_format",
    "stream",
];

impl BatchCodec for PromptPackingCodec {
    type Key = PackingKey;
    type Member = PackingMember;

    fn admit(
        &self,
        head: &request::Parts,
        body: &Bytes,
    ) -> Option<(PackingKey, Weight, PackingMember)> {
        let llm = head.extensions.get::<LlmRequest>()?;
        if llm.endpoint != EndpointKind::ChatCompletions
            || head.method != http::Method::POST
            || llm.stream
            || llm.n.is_some_and(|n| n != 1)
        {
            return None;
        }
        let mut fields: BTreeMap<String, Box<RawValue>> = serde_json::from_slice(body).ok()?;
        if REFUSED_FIELDS.iter().any(|f| fields.contains_key(*f)) {
            return None;
        }
        let messages: Vec<Message> = serde_json::from_str(fields.remove("messages")?.get()).ok()?;
        let (system, user) = match messages.as_slice() {
            [user] => (None, user),
            [system, user] if system.role == "system" => {
                (Some(system.content.as_str()?.to_owned()), user)
            }
            _ => return None,
        };
        if user.role != "user" {
            return None;
        }
        let prompt = user.content.as_str()?.to_owned();
        let mut max_tokens = None;
        for name in CAP_FIELDS {
            if let Some(raw) = fields.remove(name) {
                max_tokens = Some((name, raw.get().parse().ok()?));
            }
        }
        let mut options = String::new();
        for (name, value) in &fields {
            options.push_str(&serde_json::to_string(name).ok()?);
            options.push(':');
            options.push_str(value.get());
            options.push(',');
        }
        let key = PackingKey {
            uri: head.uri.to_string(),
            credential: llm.credential.clone(),
            system: system.clone(),
            options,
        };
        let tokens = u64::from(llm.input_tokens_estimate);
        let member = PackingMember {
            prompt,
            system,
            options: fields,
            max_tokens,
            tokens,
        };
        Some((key, Weight { items: 1, tokens }, member))
    }

    fn merge(&self, members: &[&PackingMember]) -> Result<Bytes, BoxError> {
        let first = members.first().ok_or("nothing to merge")?;
        let n = members.len();
        let mut system = INSTRUCTIONS.replace("{n}", &n.to_string());
        if let Some(own) = &first.system {
            system.push_str("\n\n");
            system.push_str(own);
        }
        let tasks: Vec<String> = members
            .iter()
            .enumerate()
            .map(|(i, m)| format!("Task {}:\n{}", i + 1, m.prompt))
            .collect();
        let mut body = serde_json::Map::new();
        for (name, value) in &first.options {
            body.insert(name.clone(), serde_json::from_str(value.get())?);
        }
        body.insert(
            "messages".into(),
            json!([
                {"role": "system", "content": system},
                {"role": "user", "content": tasks.join("\n\n")},
            ]),
        );
        // Every prompt's cap, added up, when they all set one.
        if let Some(caps) = members
            .iter()
            .map(|m| m.max_tokens)
            .collect::<Option<Vec<_>>>()
        {
            let name = caps.first().map_or("max_tokens", |(name, _)| *name);
            let total: u64 = caps.iter().map(|(_, cap)| cap).sum();
            body.insert(name.into(), json!(total));
        }
        Ok(Bytes::from(serde_json::to_vec(&body)?))
    }

    fn split(&self, body: &[u8], members: &[&PackingMember]) -> Vec<Part> {
        let resend_all = || members.iter().map(|_| Part::Resend).collect();
        let Ok(response) = serde_json::from_slice::<Value>(body) else {
            return resend_all();
        };
        let choice = &response["choices"][0];
        if choice["finish_reason"] == "length" {
            return resend_all();
        }
        let Some(answers) = choice["message"]["content"].as_str().and_then(json_array) else {
            return resend_all();
        };
        if answers.len() != members.len() {
            return resend_all();
        }
        let contents: Vec<Option<String>> = answers
            .into_iter()
            .map(|answer| match answer {
                Value::Null => None,
                Value::String(text) => Some(text),
                other => Some(other.to_string()),
            })
            .collect();
        let weights: Vec<u64> = members.iter().map(|m| m.tokens).collect();
        let lengths: Vec<u64> = contents
            .iter()
            .map(|c| c.as_ref().map_or(0, |c| c.len() as u64))
            .collect();
        let usage = &response["usage"];
        let prompt = split_proportionally(usage["prompt_tokens"].as_u64().unwrap_or(0), &weights);
        let completion =
            split_proportionally(usage["completion_tokens"].as_u64().unwrap_or(0), &lengths);
        let id = response["id"].as_str().unwrap_or("packed");
        contents
            .into_iter()
            .enumerate()
            .map(|(i, content)| {
                let Some(content) = content else {
                    return Part::Resend;
                };
                let own = json!({
                    "id": format!("{id}-{i}"),
                    "object": "chat.completion",
                    "created": response["created"],
                    "model": response["model"],
                    "choices": [{
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }],
                    "usage": {
                        "prompt_tokens": prompt[i],
                        "completion_tokens": completion[i],
                        "total_tokens": prompt[i] + completion[i],
                    },
                });
                match serde_json::to_vec(&own) {
                    Ok(body) => Part::Body(Bytes::from(body)),
                    Err(error) => Part::Failed(Box::new(error)),
                }
            })
            .collect()
    }

    fn max_items(&self) -> u32 {
        self.max_prompts
    }

    fn max_tokens(&self) -> u64 {
        self.max_tokens
    }
}

/// The JSON array in a model's reply: the whole reply, or what a code fence holds, or the span
/// from the first `[` to the last `]`.
fn json_array(reply: &str) -> Option<Vec<Value>> {
    let reply = reply.trim();
    let unfenced = reply
        .strip_prefix("```json")
        .or_else(|| reply.strip_prefix("```"))
        .and_then(|r| r.trim_end().strip_suffix("```"))
        .unwrap_or(reply)
        .trim();
    if let Ok(answers) = serde_json::from_str(unfenced) {
        return Some(answers);
    }
    let (start, end) = (unfenced.find('[')?, unfenced.rfind(']')?);
    serde_json::from_str(unfenced.get(start..=end)?).ok()
}

#[cfg(test)]
mod tests {
    use tollgate_core::Provider;

    use super::*;

    fn admit(body: Value) -> Option<(PackingKey, Weight, PackingMember)> {
        let mut llm = LlmRequest::new(Provider::OpenAi, EndpointKind::ChatCompletions);
        llm.input_tokens_estimate = 20;
        let head = http::Request::post("https://api.openai.com/v1/chat/completions")
            .extension(llm)
            .body(())
            .unwrap()
            .into_parts()
            .0;
        PromptPackingCodec::new().admit(&head, &Bytes::from(body.to_string()))
    }

    fn prompt(text: &str) -> Value {
        json!({"model": "m", "max_tokens": 20, "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": text},
        ]})
    }

    #[test]
    fn only_plain_single_prompts_are_packed() {
        let (key, weight, _) = admit(prompt("a")).unwrap();
        assert_eq!(weight.items, 1);
        assert_eq!(
            key,
            admit(prompt("b")).unwrap().0,
            "the prompt is not in the key"
        );
        let mut other_system = prompt("a");
        other_system["messages"][0]["content"] = json!("Be long.");
        assert_ne!(key, admit(other_system).unwrap().0);
        let mut tools = prompt("a");
        tools["tools"] = json!([]);
        assert!(admit(tools).is_none());
        let mut conversation = prompt("a");
        conversation["messages"]
            .as_array_mut()
            .unwrap()
            .push(json!({"role": "assistant", "content": "x"}));
        assert!(admit(conversation).is_none());
        let mut parts = prompt("a");
        parts["messages"][1]["content"] = json!([{"type": "text", "text": "a"}]);
        assert!(admit(parts).is_none());
    }

    #[test]
    fn merge_asks_for_an_array_and_sums_the_caps() {
        let a = admit(prompt("Extract the date: 3 May")).unwrap().2;
        let b = admit(prompt("Extract the total: $12")).unwrap().2;
        let merged: Value =
            serde_json::from_slice(&PromptPackingCodec::new().merge(&[&a, &b]).unwrap()).unwrap();
        assert_eq!(merged["max_tokens"], 40);
        assert_eq!(merged["model"], "m");
        let system = merged["messages"][0]["content"].as_str().unwrap();
        assert!(system.contains("2 independent tasks") && system.ends_with("Be brief."));
        assert_eq!(
            merged["messages"][1]["content"],
            "Task 1:\nExtract the date: 3 May\n\nTask 2:\nExtract the total: $12"
        );
    }

    #[test]
    fn split_validates_the_array() {
        let a = admit(prompt("a")).unwrap().2;
        let b = admit(prompt("b")).unwrap().2;
        let reply = |content: &str| {
            json!({"id": "c1", "created": 1, "model": "m", "choices": [{"index": 0,
                "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
                "usage": {"prompt_tokens": 40, "completion_tokens": 6, "total_tokens": 46}})
            .to_string()
        };
        let codec = PromptPackingCodec::new();
        let parts = codec.split(reply("```json\n[\"3 May\", 12]\n```").as_bytes(), &[&a, &b]);
        let Part::Body(first) = &parts[0] else {
            panic!("{parts:?}")
        };
        let first: Value = serde_json::from_slice(first).unwrap();
        assert_eq!(first["choices"][0]["message"]["content"], "3 May");
        assert_eq!(first["usage"]["prompt_tokens"], 20);
        let Part::Body(second) = &parts[1] else {
            panic!("{parts:?}")
        };
        let second: Value = serde_json::from_slice(second).unwrap();
        assert_eq!(second["choices"][0]["message"]["content"], "12");
        assert_eq!(
            first["usage"]["completion_tokens"].as_u64().unwrap()
                + second["usage"]["completion_tokens"].as_u64().unwrap(),
            6
        );
        // A null answer is re-sent alone; a short or missing array re-sends everyone.
        let parts = codec.split(reply(r#"["3 May", null]"#).as_bytes(), &[&a, &b]);
        assert!(matches!(parts[0], Part::Body(_)) && matches!(parts[1], Part::Resend));
        for bad in [r#"["3 May"]"#, "Sure! The date is 3 May.", ""] {
            let parts = codec.split(reply(bad).as_bytes(), &[&a, &b]);
            assert!(parts.iter().all(|p| matches!(p, Part::Resend)), "{bad}");
        }
    }
}
