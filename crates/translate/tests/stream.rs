//! Streams translated event by event: every Anthropic event type into OpenAI chunks, OpenAI's
//! chunks into Anthropic's event sequence, errors mid-stream, a stream cut short, and the same
//! output however the network splits the bytes.

use proptest::prelude::*;
use serde_json::{Value, json};
use tollgate_translate::{Format, StreamTranslator};

const ANTHROPIC_STREAM: &str = "event: message_start\n\
data: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"usage\":{\"input_tokens\":25,\"cache_read_input_tokens\":5,\"output_tokens\":1}}}\n\n\
event: ping\ndata: {\"type\":\"ping\"}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"thinking\",\"thinking\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"thinking_delta\",\"thinking\":\"hmm\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"signature_delta\",\"signature\":\"sig\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me \"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"text_delta\",\"text\":\"check.\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n\
event: content_block_start\n\
data: {\"type\":\"content_block_start\",\"index\":2,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"weather\",\"input\":{}}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"city\\\": \"}}\n\n\
event: content_block_delta\n\
data: {\"type\":\"content_block_delta\",\"index\":2,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"\\\"Oslo\\\"}\"}}\n\n\
event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":2}\n\n\
event: message_delta\n\
data: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"tool_use\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":31}}\n\n\
event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";

const OPENAI_STREAM: &str = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hel\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"id\":\"call_1\",\"type\":\"function\",\"function\":{\"name\":\"weather\",\"arguments\":\"\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"arguments\":\"{\\\"city\\\":\\\"Oslo\\\"}\"}}]},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"tool_calls\"}]}\n\n\
data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[],\"usage\":{\"prompt_tokens\":40,\"completion_tokens\":9,\"total_tokens\":49,\"prompt_tokens_details\":{\"cached_tokens\":30}}}\n\n\
data: [DONE]\n\n";

/// The whole output of translating `input` in one chunk.
fn whole(from: Format, to: Format, input: &[u8]) -> Vec<u8> {
    let mut translator = StreamTranslator::new(from, to, 1_700_000_000);
    let mut out = translator.feed(input);
    out.extend(translator.finish());
    out
}

/// `(event name, data)` of each event of `stream` (`data: [DONE]` as a string).
fn events(stream: &[u8]) -> Vec<(String, Value)> {
    let text = String::from_utf8(stream.to_vec()).unwrap();
    text.split("\n\n")
        .filter(|e| !e.is_empty())
        .map(|event| {
            let mut name = String::from("message");
            let mut data = Value::Null;
            for line in event.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = n.to_owned();
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data = serde_json::from_str(d).unwrap_or_else(|_| json!(d));
                }
            }
            (name, data)
        })
        .collect()
}

#[test]
fn an_anthropic_stream_reaches_an_openai_client_chunk_by_chunk() {
    let out = whole(
        Format::AnthropicMessages,
        Format::OpenAiChat,
        ANTHROPIC_STREAM.as_bytes(),
    );
    let chunks: Vec<Value> = events(&out).into_iter().map(|(_, data)| data).collect();
    let deltas: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c.pointer("/choices/0/delta"))
        .collect();
    assert_eq!(
        deltas,
        [
            &json!({"role": "assistant", "content": ""}),
            &json!({"content": "Let me "}),
            &json!({"content": "check."}),
            &json!({"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function",
                "function": {"name": "weather", "arguments": ""}}]}),
            &json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\": "}}]}),
            &json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Oslo\"}"}}]}),
            &json!({}),
        ]
    );
    let first = &chunks[0];
    assert_eq!(first["object"], "chat.completion.chunk");
    assert_eq!(
        (first["id"].as_str(), first["model"].as_str()),
        (Some("msg_1"), Some("claude-sonnet-4-5"))
    );
    assert_eq!(first["created"], 1_700_000_000);
    let finish = &chunks[chunks.len() - 3];
    assert_eq!(finish["choices"][0]["finish_reason"], "tool_calls");
    let usage = &chunks[chunks.len() - 2];
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(
        usage["usage"],
        json!({"prompt_tokens": 30, "completion_tokens": 31, "total_tokens": 61,
            "prompt_tokens_details": {"cached_tokens": 5}})
    );
    assert_eq!(chunks.last().unwrap(), &json!("[DONE]"));
}

#[test]
fn an_openai_stream_reaches_an_anthropic_client_as_its_event_sequence() {
    let out = whole(
        Format::OpenAiChat,
        Format::AnthropicMessages,
        OPENAI_STREAM.as_bytes(),
    );
    let events = events(&out);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(
        names,
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], name.as_str(), "each event's data names it");
    }
    assert_eq!(events[0].1["message"]["id"], "chatcmpl-1");
    assert_eq!(events[0].1["message"]["model"], "gpt-4o-mini");
    assert_eq!(
        events[1].1["content_block"],
        json!({"type": "text", "text": ""})
    );
    assert_eq!(
        events[2].1["delta"],
        json!({"type": "text_delta", "text": "Hel"})
    );
    assert_eq!(
        events[3].1["delta"],
        json!({"type": "text_delta", "text": "lo"})
    );
    assert_eq!(
        events[5].1,
        json!({"type": "content_block_start", "index": 1, "content_block":
            {"type": "tool_use", "id": "call_1", "name": "weather", "input": {}}})
    );
    assert_eq!(
        events[6].1["delta"],
        json!({"type": "input_json_delta", "partial_json": "{\"city\":\"Oslo\"}"})
    );
    assert_eq!(
        events[8].1,
        json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
            "usage": {"input_tokens": 10, "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 30, "output_tokens": 9}})
    );
}

#[test]
fn an_error_mid_stream_reaches_the_client_in_its_shape_and_ends_the_stream() {
    let stream = format!(
        "{}event: error\ndata: {{\"type\":\"error\",\"error\":{{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}}}\n\n",
        &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: content_block_start").unwrap()]
    );
    let out = whole(
        Format::AnthropicMessages,
        Format::OpenAiChat,
        stream.as_bytes(),
    );
    let chunks = events(&out);
    let last = &chunks.last().unwrap().1;
    assert_eq!(last["error"]["message"], "Overloaded");
    assert_eq!(last["error"]["type"], "server_error");
    assert!(
        !String::from_utf8(out).unwrap().contains("[DONE]"),
        "nothing after the error"
    );

    let stream = format!(
        "{}data: {{\"error\":{{\"message\":\"Rate limit reached\",\"type\":\"requests\",\"code\":\"rate_limit_exceeded\"}}}}\n\n",
        &OPENAI_STREAM[..OPENAI_STREAM.find("data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"gpt-4o-mini\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"lo").unwrap()]
    );
    let out = whole(
        Format::OpenAiChat,
        Format::AnthropicMessages,
        stream.as_bytes(),
    );
    let events = events(&out);
    let (name, data) = events.last().unwrap();
    assert_eq!(name, "error");
    assert_eq!(data["error"]["type"], "rate_limit_error");
    assert!(events.iter().all(|(name, _)| name != "message_stop"));
}

#[test]
fn a_stream_cut_short_still_ends_the_clients() {
    let cut = &ANTHROPIC_STREAM[..ANTHROPIC_STREAM.find("event: message_delta").unwrap()];
    let out = whole(
        Format::AnthropicMessages,
        Format::OpenAiChat,
        cut.as_bytes(),
    );
    assert!(
        String::from_utf8(out)
            .unwrap()
            .ends_with("data: [DONE]\n\n")
    );
    let cut = &OPENAI_STREAM[..OPENAI_STREAM.find("data: [DONE]").unwrap()];
    let out = whole(
        Format::OpenAiChat,
        Format::AnthropicMessages,
        cut.as_bytes(),
    );
    let events = events(&out);
    assert_eq!(events.last().unwrap().0, "message_stop");
}

fn split_at(input: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    cuts.sort_unstable();
    let mut pieces = Vec::new();
    let mut from = 0;
    for cut in cuts {
        pieces.push(input[from..cut].to_vec());
        from = cut;
    }
    pieces.push(input[from..].to_vec());
    pieces
}

proptest! {
    #[test]
    fn a_stream_split_anywhere_translates_to_the_same_events(
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
        anthropic in any::<bool>(),
    ) {
        let (from, to, input) = if anthropic {
            (Format::AnthropicMessages, Format::OpenAiChat, ANTHROPIC_STREAM)
        } else {
            (Format::OpenAiChat, Format::AnthropicMessages, OPENAI_STREAM)
        };
        let expected = whole(from, to, input.as_bytes());
        let mut translator = StreamTranslator::new(from, to, 1_700_000_000);
        let mut out = Vec::new();
        for piece in split_at(input.as_bytes(), &cuts) {
            out.extend(translator.feed(&piece));
        }
        out.extend(translator.finish());
        prop_assert_eq!(out, expected);
    }
}
