//! What a JSON request body says about its session and its prompt, found by walking the
//! top-level object's bytes: nothing is parsed, unescaped or allocated, and a value is skipped
//! by counting its brackets and quotes. A body that is not a JSON object says nothing.

/// The fields that give a request its affinity key, as written in the body.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Fields<'a> {
    /// The first of `prompt_cache_key`, `user`, `safety_identifier` (OpenAI) and
    /// `metadata.user_id` (Anthropic) that is set: a string's bytes without its quotes.
    pub(super) session: Option<&'a [u8]>,
    /// `system` (Anthropic), `instructions` (OpenAI Responses) or `systemInstruction`
    /// (Gemini), as written.
    pub(super) system: Option<&'a [u8]>,
    /// `messages` (chat, Anthropic), `input` (OpenAI Responses) or `contents` (Gemini), as
    /// written.
    pub(super) conversation: Option<&'a [u8]>,
}

/// The session fields, in the order they win.
const SESSION_FIELDS: [&[u8]; 3] = [b"prompt_cache_key", b"user", b"safety_identifier"];

impl<'a> Fields<'a> {
    pub(super) fn read(body: &'a [u8]) -> Self {
        let mut sessions: [Option<&[u8]>; 4] = [None; 4];
        let mut fields = Self::default();
        for (key, value) in members(body) {
            if let Some(i) = SESSION_FIELDS.iter().position(|field| *field == key) {
                sessions[i] = text(value);
            }
            match key {
                b"metadata" => {
                    sessions[3] = members(value)
                        .find(|(key, _)| *key == b"user_id")
                        .and_then(|(_, value)| text(value));
                }
                b"system" | b"instructions" | b"systemInstruction" | b"system_instruction" => {
                    fields.system = fields.system.or(Some(value));
                }
                b"messages" | b"input" | b"contents" => {
                    fields.conversation = fields.conversation.or(Some(value));
                }
                _ => {}
            }
        }
        fields.session = sessions.into_iter().flatten().next();
        fields
    }
}

/// A session id as written: a string without its quotes, a number's digits; nothing for
/// `null` or `""`.
fn text(value: &[u8]) -> Option<&[u8]> {
    let inner = match value {
        [b'"', inner @ .., b'"'] => inner,
        b"null" => return None,
        other => other,
    };
    (!inner.is_empty()).then_some(inner)
}

/// The members of the JSON object `json` holds, as (key, value): the key's bytes between its
/// quotes (escapes left as written), the value as written. Ends at the object's end, or at the
/// first member that is not JSON.
fn members(json: &[u8]) -> Members<'_> {
    let start = skip_space(json, 0);
    Members {
        json,
        at: (json.get(start) == Some(&b'{')).then_some(start + 1),
    }
}

struct Members<'a> {
    json: &'a [u8],
    /// Where the next member starts; `None` once done.
    at: Option<usize>,
}

impl<'a> Iterator for Members<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let json = self.json;
        let key = skip_space(json, self.at.take()?);
        if json.get(key) != Some(&b'"') {
            return None;
        }
        let key_end = string_end(json, key)?;
        let colon = skip_space(json, key_end);
        if json.get(colon) != Some(&b':') {
            return None;
        }
        let value = skip_space(json, colon + 1);
        let value_end = value_end(json, value)?;
        let after = skip_space(json, value_end);
        match json.get(after) {
            Some(b',') => self.at = Some(after + 1),
            Some(b'}') => {}
            _ => return None,
        }
        Some((&json[key + 1..key_end - 1], &json[value..value_end]))
    }
}

fn skip_space(json: &[u8], mut at: usize) -> usize {
    while matches!(json.get(at), Some(b' ' | b'\t' | b'\n' | b'\r')) {
        at += 1;
    }
    at
}

/// Past the closing quote of the string that opens at `at`.
fn string_end(json: &[u8], at: usize) -> Option<usize> {
    let mut i = at + 1;
    loop {
        match json.get(i)? {
            b'"' => return Some(i + 1),
            b'\\' => i += 2,
            _ => i += 1,
        }
    }
}

/// Past the end of the value that starts at `at`: a string, an object or array (to its
/// matching bracket, strings skipped whole), or a number, `true`, `false` or `null`.
fn value_end(json: &[u8], at: usize) -> Option<usize> {
    match json.get(at)? {
        b'"' => string_end(json, at),
        b'{' | b'[' => {
            let mut depth = 0_usize;
            let mut i = at;
            loop {
                match json.get(i)? {
                    b'"' => {
                        i = string_end(json, i)?;
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' => {
                        depth -= 1;
                        if depth == 0 {
                            return Some(i + 1);
                        }
                    }
                    _ => {}
                }
                i += 1;
            }
        }
        _ => {
            let len = json[at..]
                .iter()
                .position(|b| matches!(b, b',' | b'}' | b']' | b' ' | b'\t' | b'\n' | b'\r'))
                .unwrap_or(json.len() - at);
            (len > 0).then_some(at + len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openai_chat_reads_the_user_and_the_messages_as_written() {
        let body =
            br#"{"model":"gpt-4o", "messages" : [{"role":"system","content":"be \"brief\" {"}],
            "temperature":0.2,"user":"u-1"}"#;
        let fields = Fields::read(body);
        assert_eq!(fields.session, Some(&b"u-1"[..]));
        assert_eq!(fields.system, None);
        assert_eq!(
            fields.conversation,
            Some(&br#"[{"role":"system","content":"be \"brief\" {"}]"#[..])
        );
    }

    #[test]
    fn anthropic_reads_metadata_user_id_and_the_system_prompt() {
        let body =
            br#"{"model":"claude","max_tokens":10,"messages":[{"role":"user","content":"hi"}],
            "system":[{"type":"text","text":"long"}],"metadata":{"user_id":"abc"}}"#;
        let fields = Fields::read(body);
        assert_eq!(fields.session, Some(&b"abc"[..]));
        assert_eq!(
            fields.system,
            Some(&br#"[{"type":"text","text":"long"}]"#[..])
        );
        assert_eq!(
            fields.conversation,
            Some(&br#"[{"role":"user","content":"hi"}]"#[..])
        );
    }

    #[test]
    fn prompt_cache_key_wins_over_user_whatever_the_order() {
        let body = br#"{"user":"u","input":"hi","instructions":"be brief","prompt_cache_key":"k","metadata":null}"#;
        let fields = Fields::read(body);
        assert_eq!(fields.session, Some(&b"k"[..]));
        assert_eq!(fields.system, Some(&br#""be brief""#[..]));
        assert_eq!(fields.conversation, Some(&br#""hi""#[..]));
    }

    #[test]
    fn empty_or_null_sessions_and_bodies_that_are_not_objects_say_nothing() {
        assert_eq!(
            Fields::read(br#"{"user":"","safety_identifier":null}"#),
            Fields::default()
        );
        for body in [
            &b""[..],
            b"[1,2]",
            b"not json",
            b"{\"user\"",
            b"{\"user\":\"open",
        ] {
            assert_eq!(Fields::read(body), Fields::default(), "{body:?}");
        }
        // A number is its digits; what follows a broken member is not read.
        let fields = Fields::read(br#"{"user":42,"messages":[1,2] x,"system":"s"}"#);
        assert_eq!(fields.session, Some(&b"42"[..]));
        assert_eq!(fields.system, None);
    }
}
