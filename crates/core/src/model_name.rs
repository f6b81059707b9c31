//! What a model name may be.
//!
//! The model comes from the caller (the body's `model`, a Gemini or Azure path) and every layer
//! keys state by it: scopes, metric labels, health reports. Unbounded, one request with a 4 MiB
//! name would be kept in each of them; so [`AnnotateLayer`](crate::annotate::AnnotateLayer)
//! refuses a name that no provider uses before anything is sent or kept, with
//! [`InvalidModel`].
//!
//! A name is 1 to [`MAX_MODEL_NAME_BYTES`] bytes of ASCII letters, digits and `- . _ : / @ + = ~`.
//! That covers every provider's ids: `gpt-4o-2024-08-06`, `ft:gpt-4o-mini:acme::abc123`,
//! `claude-3-5-sonnet@20240620`, `models/gemini-2.0-flash`, `meta-llama/Llama-3.3-70B-Instruct`,
//! `anthropic.claude-3-haiku-20240307-v1:0`, `llama3.2:3b`, Azure deployment names.

use crate::error::InvalidModel;

/// The longest model name accepted, in bytes.
pub const MAX_MODEL_NAME_BYTES: usize = 256;

/// Whether `byte` may appear in a model name.
const fn allowed(byte: u8) -> bool {
    byte.is_ascii_alphanumeric()
        || matches!(
            byte,
            b'-' | b'.' | b'_' | b':' | b'/' | b'@' | b'+' | b'=' | b'~'
        )
}

/// Checks a model name; the error says what is wrong without repeating the name.
pub fn check_model_name(name: &str) -> Result<(), InvalidModel> {
    if name.is_empty() {
        return Err(InvalidModel::Empty);
    }
    if name.len() > MAX_MODEL_NAME_BYTES {
        return Err(InvalidModel::TooLong { len: name.len() });
    }
    match name.bytes().position(|b| !allowed(b)) {
        None => Ok(()),
        Some(at) => Err(InvalidModel::Character {
            at,
            found: name[at..].chars().next().unwrap_or_default(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_providers_ids_are_accepted() {
        for name in [
            "gpt-4o-2024-08-06",
            "ft:gpt-4o-mini:acme::abc123",
            "claude-3-5-sonnet@20240620",
            "models/gemini-2.0-flash",
            "meta-llama/Llama-3.3-70B-Instruct",
            "anthropic.claude-3-haiku-20240307-v1:0",
            "llama3.2:3b",
            "my_deployment-01",
            "a",
            &"m".repeat(MAX_MODEL_NAME_BYTES),
        ] {
            assert_eq!(check_model_name(name), Ok(()), "{name}");
        }
    }

    #[test]
    fn empty_long_or_odd_names_are_refused_without_echoing_them() {
        assert_eq!(check_model_name(""), Err(InvalidModel::Empty));
        let long = "m".repeat(MAX_MODEL_NAME_BYTES + 1);
        assert_eq!(
            check_model_name(&long),
            Err(InvalidModel::TooLong { len: 257 })
        );
        for (name, at, found) in [
            ("gpt 4o", 3, ' '),
            ("gpt-4o\n", 6, '\n'),
            ("gpt-4o\"}", 6, '"'),
            ("modèle", 3, 'è'),
            ("a{b}", 1, '{'),
            ("x\u{0}", 1, '\0'),
        ] {
            let error = check_model_name(name).unwrap_err();
            assert_eq!(error, InvalidModel::Character { at, found }, "{name:?}");
            assert!(!error.to_string().contains(name), "{error}");
        }
        let text = InvalidModel::Character { at: 3, found: ' ' }.to_string();
        assert!(text.contains("U+0020 at byte 3"), "{text}");
    }
}
