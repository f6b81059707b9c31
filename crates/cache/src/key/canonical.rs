//! A JSON body hashed in canonical form as it is parsed, without building a `Value` tree.
//!
//! Scalars and arrays are hashed as they come. An object's members are gathered as borrowed
//! `(key, raw value)` pairs — one `Vec` per object, no copy of the text unless a key has
//! escapes —, sorted by key (the last of repeated keys wins, as in `serde_json::Value`), and
//! each value is hashed by parsing its raw text in turn. Every part is self-delimiting (a tag,
//! then a length-prefixed string, a number ended by `;`, or the parts of an array or object
//! and an end tag), so two different values never feed the same bytes.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;

use super::Hasher;

/// The deepest nesting hashed (as serde_json's own limit); a deeper body counts as raw bytes.
const MAX_DEPTH: u32 = 128;

/// Feeds the canonical form of the JSON document `body` to `h`.
pub(super) fn hash(h: &mut Hasher, body: &[u8]) -> serde_json::Result<()> {
    let mut de = serde_json::Deserializer::from_slice(body);
    Canon { h, depth: 0 }.deserialize(&mut de)?;
    de.end()
}

fn hash_raw(h: &mut Hasher, raw: &RawValue, depth: u32) -> serde_json::Result<()> {
    let mut de = serde_json::Deserializer::from_str(raw.get());
    Canon { h, depth }.deserialize(&mut de)
}

struct Canon<'h> {
    h: &'h mut Hasher,
    depth: u32,
}

impl Canon<'_> {
    fn number<E>(self, number: fmt::Arguments<'_>) -> Result<(), E> {
        self.h.tag(b"#");
        // A `Hasher` never fails to take text.
        let _ = fmt::Write::write_fmt(self.h, number);
        self.h.tag(b";");
        Ok(())
    }

    fn deeper<E: de::Error>(&self) -> Result<u32, E> {
        if self.depth >= MAX_DEPTH {
            return Err(E::custom("nested too deep"));
        }
        Ok(self.depth + 1)
    }
}

impl<'de> DeserializeSeed<'de> for Canon<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Canon<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_unit<E>(self) -> Result<(), E> {
        self.h.tag(b"n");
        Ok(())
    }

    fn visit_bool<E>(self, value: bool) -> Result<(), E> {
        self.h.tag(if value { b"t" } else { b"f" });
        Ok(())
    }

    fn visit_u64<E>(self, value: u64) -> Result<(), E> {
        self.number(format_args!("{value}"))
    }

    fn visit_i64<E>(self, value: i64) -> Result<(), E> {
        self.number(format_args!("{value}"))
    }

    fn visit_f64<E: de::Error>(self, value: f64) -> Result<(), E> {
        // serde_json's shortest form that reads back as the same number: `0.10` is `0.1`.
        let number = serde_json::Number::from_f64(value).ok_or_else(|| E::custom("not finite"))?;
        self.number(format_args!("{number}"))
    }

    fn visit_str<E>(self, value: &str) -> Result<(), E> {
        self.h.tag(b"s");
        self.h.field(value.as_bytes());
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut items: A) -> Result<(), A::Error> {
        let depth = self.deeper()?;
        self.h.tag(b"[");
        while items
            .next_element_seed(Canon {
                h: &mut *self.h,
                depth,
            })?
            .is_some()
        {}
        self.h.tag(b"]");
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let depth = self.deeper()?;
        let mut members: Vec<(Key<'de>, &'de RawValue)> = Vec::new();
        while let Some(key) = map.next_key::<Key<'de>>()? {
            members.push((key, map.next_value()?));
        }
        // Stable: of repeated keys, the last is last.
        members.sort_by(|a, b| a.0.cmp(&b.0));
        self.h.tag(b"{");
        for (i, (key, value)) in members.iter().enumerate() {
            if members.get(i + 1).is_some_and(|next| next.0 == *key) {
                continue;
            }
            self.h.tag(b"k");
            self.h.field(key.0.as_bytes());
            hash_raw(self.h, value, depth).map_err(de::Error::custom)?;
        }
        self.h.tag(b"}");
        Ok(())
    }
}

/// An object key, borrowed from the body unless it has escapes.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Key<'de>(Cow<'de, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_str(KeyVisitor)
    }
}

struct KeyVisitor;

impl<'de> Visitor<'de> for KeyVisitor {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, key: &'de str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Borrowed(key)))
    }

    fn visit_str<E>(self, key: &str) -> Result<Key<'de>, E> {
        Ok(Key(Cow::Owned(key.to_owned())))
    }
}

#[cfg(test)]
mod tests {
    use sha2::{Digest, Sha256};

    use super::*;

    fn canonical(body: &str) -> Option<[u8; 32]> {
        let mut h = Hasher(Sha256::new());
        hash(&mut h, body.as_bytes()).ok()?;
        Some(h.0.finalize().into())
    }

    #[test]
    fn values_not_spellings() {
        let same = [
            (
                r#"{"b":[1,{"y":2,"x":1}],"a":"\u0041"}"#,
                r#"{ "a" : "A", "b" : [ 1, { "x":1, "y":2 } ] }"#,
            ),
            (r#"{"a":1,"a":2}"#, r#"{"a":2}"#),
            (r#"{"a\"b":1}"#, r#"{"a\u0022b":1}"#),
            ("[0.10, 1e2]", "[0.1,100.0]"),
        ];
        for (a, b) in same {
            assert_eq!(canonical(a), canonical(b), "{a} vs {b}");
        }
        let different = [
            (r#"["ab","c"]"#, r#"["a","bc"]"#),
            (r#"[[1],2]"#, r#"[1,[2]]"#),
            (r#"{"a":[]}"#, r#"{"a":{}}"#),
            ("1", "1.0"),
            ("null", r#""n""#),
            (r#"{"a":{"b":1}}"#, r#"{"a":{},"b":1}"#),
        ];
        for (a, b) in different {
            assert_ne!(canonical(a), canonical(b), "{a} vs {b}");
        }
    }

    #[test]
    fn what_is_not_json_or_too_deep_is_refused() {
        assert!(canonical("{").is_none());
        assert!(canonical("{} x").is_none());
        assert!(canonical("").is_none());
        let deep = format!("{}1{}", r#"{"a":"#.repeat(200), "}".repeat(200));
        assert!(canonical(&deep).is_none());
        let fine = format!("{}1{}", r#"{"a":"#.repeat(100), "}".repeat(100));
        assert!(canonical(&fine).is_some());
    }
}
