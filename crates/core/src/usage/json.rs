//! Finding `"usage": {...}` in a JSON body without buffering or parsing the body.
//!
//! A non-streamed response can be megabytes (an embeddings response with 2,048 vectors) while
//! its usage object is a few dozen bytes. Parsing the body would mean holding all of it, so we
//! search the bytes for the keys `"usage"` and `"usageMetadata"` and capture only the object
//! that follows.
//!
//! Why a byte search is enough: in valid JSON an unescaped `"usage"` is a whole string token,
//! a key or a value, and only a key is followed by `:`. A quote inside a string is escaped, so
//! a match preceded by `\` is string content (a `\\` before it would end the string, and
//! `usage"` could not follow), and is skipped.

use std::sync::LazyLock;

use memchr::memmem::Finder;
use memchr::{memchr2, memchr3};

/// The common start of both keys.
const NEEDLE: &[u8] = b"\"usage";
/// What follows [`NEEDLE`] in `"usageMetadata"`.
const METADATA_TAIL: &[u8] = b"Metadata\"";
/// A usage object larger than this is not one: its capture is abandoned.
pub(super) const MAX_USAGE_OBJECT_BYTES: usize = 16 * 1024;
/// Room made for a usage object when one starts (OpenAI's, with its token details, is ~300).
const USUAL_USAGE_OBJECT_BYTES: usize = 512;

static FINDER: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(NEEDLE));

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Looking for [`NEEDLE`].
    Searching,
    /// The last chunk ended with the first `matched` bytes of [`NEEDLE`].
    Needle { matched: usize, escaped: bool },
    /// After [`NEEDLE`]: `matched` bytes of [`METADATA_TAIL`] seen, or expecting `"` at 0.
    KeyEnd { matched: usize },
    /// After the key: whitespace, then `:`.
    Colon,
    /// After the colon: whitespace, then `{` (anything else, `null` included, is not usage).
    Value,
    /// Inside the object; `keep` is false once it outgrew the cap and is only being skipped.
    Object {
        depth: usize,
        in_string: bool,
        escape: bool,
        keep: bool,
    },
}

/// Finds the usage objects of a JSON body fed in chunks, split at any byte.
#[derive(Debug)]
pub(super) struct UsageObjectScanner {
    state: State,
    /// The last byte of the previous chunk, to tell an escaped quote at a chunk's start.
    last_byte: u8,
    object: Vec<u8>,
}

impl UsageObjectScanner {
    pub(super) fn new() -> Self {
        Self {
            state: State::Searching,
            last_byte: 0,
            object: Vec::new(),
        }
    }

    /// Scans the next chunk, calling `on_object` with each complete usage object (its bytes,
    /// braces included).
    pub(super) fn feed(&mut self, chunk: &[u8], mut on_object: impl FnMut(&[u8])) {
        let mut pos = 0;
        while pos < chunk.len() {
            pos = match self.state {
                State::Searching => self.search(chunk, pos),
                State::Object { .. } => self.object_bytes(chunk, pos, &mut on_object),
                // A byte the matcher does not consume is searched again.
                _ => pos + usize::from(self.step(chunk[pos])),
            };
        }
        if let Some(&byte) = chunk.last() {
            self.last_byte = byte;
        }
    }

    /// The heap memory held, in bytes.
    #[cfg(test)]
    pub(super) fn buffered_bytes(&self) -> usize {
        self.object.capacity()
    }

    fn byte_before(&self, chunk: &[u8], at: usize) -> u8 {
        if at == 0 {
            self.last_byte
        } else {
            chunk[at - 1]
        }
    }

    fn search(&mut self, chunk: &[u8], pos: usize) -> usize {
        let haystack = &chunk[pos..];
        if let Some(found) = FINDER.find(haystack) {
            let at = pos + found;
            if self.byte_before(chunk, at) != b'\\' {
                self.state = State::KeyEnd { matched: 0 };
            }
            return at + NEEDLE.len();
        }
        // The needle may start in this chunk and end in the next.
        let longest = haystack.len().min(NEEDLE.len() - 1);
        if let Some(matched) = (1..=longest)
            .rev()
            .find(|&len| haystack.ends_with(&NEEDLE[..len]))
        {
            let at = chunk.len() - matched;
            let escaped = self.byte_before(chunk, at) == b'\\';
            self.state = State::Needle { matched, escaped };
        }
        chunk.len()
    }

    /// Advances the key/colon/value matcher by one byte; `false` when the byte ends the match
    /// and must be searched again.
    fn step(&mut self, byte: u8) -> bool {
        let next = match self.state {
            State::Needle { matched, escaped } if NEEDLE[matched] == byte => {
                match (matched + 1 == NEEDLE.len(), escaped) {
                    (false, _) => State::Needle {
                        matched: matched + 1,
                        escaped,
                    },
                    (true, false) => State::KeyEnd { matched: 0 },
                    (true, true) => State::Searching,
                }
            }
            State::KeyEnd { matched: 0 } if byte == b'"' => State::Colon,
            State::KeyEnd { matched } if METADATA_TAIL[matched] == byte => {
                if matched + 1 == METADATA_TAIL.len() {
                    State::Colon
                } else {
                    State::KeyEnd {
                        matched: matched + 1,
                    }
                }
            }
            State::Colon | State::Value if is_whitespace(byte) => self.state,
            State::Colon if byte == b':' => State::Value,
            State::Value if byte == b'{' => {
                self.object.clear();
                // Usage objects run to a few hundred bytes: one allocation, not a regrowth per
                // doubling.
                self.object.reserve(USUAL_USAGE_OBJECT_BYTES);
                self.object.push(b'{');
                State::Object {
                    depth: 1,
                    in_string: false,
                    escape: false,
                    keep: true,
                }
            }
            _ => {
                self.state = State::Searching;
                return false;
            }
        };
        self.state = next;
        true
    }

    /// Reads object bytes from `pos`, tracking strings so braces inside them do not count.
    fn object_bytes(
        &mut self,
        chunk: &[u8],
        pos: usize,
        on_object: &mut impl FnMut(&[u8]),
    ) -> usize {
        let State::Object {
            mut depth,
            mut in_string,
            mut escape,
            mut keep,
        } = self.state
        else {
            return pos;
        };
        let mut at = pos;
        let mut closed = false;
        while at < chunk.len() && !closed {
            if escape {
                escape = false;
                at += 1;
                continue;
            }
            let rest = &chunk[at..];
            let found = if in_string {
                memchr2(b'"', b'\\', rest)
            } else {
                memchr3(b'"', b'{', b'}', rest)
            };
            let Some(offset) = found else {
                at = chunk.len();
                break;
            };
            at += offset;
            match chunk[at] {
                b'\\' => escape = true,
                b'"' => in_string = !in_string,
                b'{' => depth += 1,
                _ => {
                    depth -= 1;
                    closed = depth == 0;
                }
            }
            at += 1;
        }
        if keep {
            let segment = &chunk[pos..at];
            if self.object.len() + segment.len() > MAX_USAGE_OBJECT_BYTES {
                keep = false;
                self.object.clear();
            } else {
                self.object.extend_from_slice(segment);
            }
        }
        if closed {
            if keep {
                on_object(&self.object);
            }
            self.object.clear();
            self.state = State::Searching;
        } else {
            self.state = State::Object {
                depth,
                in_string,
                escape,
                keep,
            };
        }
        at
    }
}

/// JSON's insignificant whitespace.
fn is_whitespace(byte: u8) -> bool {
    matches!(byte, b' ' | b'\t' | b'\n' | b'\r')
}
