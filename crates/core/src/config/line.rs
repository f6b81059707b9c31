//! [`line_of`]: where a field is written in a TOML text.

/// The line (from 1) where the field at `path` (`circuit_breaker.failure_threshold`,
/// `pool.members[1].key_env`) is written in the TOML `text`, or where its closest enclosing
/// table is; `None` when neither is found.
///
/// Used to locate an error found after the text was parsed (a value a layer refuses, a key
/// only known once merged with a preset). Headers (`[a.b]`, `[[a.b]]`), dotted keys
/// (`a.b = 1`) and quoted keys are followed; inline tables count as their key's line.
///
/// ```
/// use tollgate_core::config::line_of;
///
/// let text = "preset = \"balanced\"\n[circuit_breaker]\nfailure_threshold = 0\n";
/// assert_eq!(line_of(text, "circuit_breaker.failure_threshold"), Some(3));
/// assert_eq!(line_of(text, "circuit_breaker.half_open_requests"), Some(2));
/// assert_eq!(line_of(text, "cache.ttl"), None);
/// ```
pub fn line_of(text: &str, path: &str) -> Option<usize> {
    let wanted = segments(path);
    let mut table: Vec<String> = Vec::new();
    // How many times each array of tables was opened so far: `[[a]]` twice makes `a[1]`.
    let mut arrays: Vec<(Vec<String>, usize)> = Vec::new();
    let mut best: Option<(usize, usize)> = None;
    let mut consider = |found: &[String], line: usize| {
        let common = found
            .iter()
            .zip(&wanted)
            .take_while(|(a, b)| same_segment(a, b))
            .count();
        // Only a path that is a prefix of the wanted one locates it.
        if common == found.len() && common > 0 && best.is_none_or(|(depth, _)| common > depth) {
            best = Some((common, line));
        }
    };
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.trim();
        if content.starts_with("[[") {
            let name = indexed(
                keys(content.trim_start_matches("[[").split("]]").next()?),
                &arrays,
            );
            let seen = match arrays.iter_mut().find(|(n, _)| *n == name) {
                Some((_, count)) => {
                    *count += 1;
                    *count - 1
                }
                None => {
                    arrays.push((name.clone(), 1));
                    0
                }
            };
            table = name;
            if let Some(last) = table.last_mut() {
                last.push_str(&format!("[{seen}]"));
            }
            consider(&table, line);
        } else if content.starts_with('[') {
            table = indexed(
                keys(content.trim_start_matches('[').split(']').next()?),
                &arrays,
            );
            consider(&table, line);
        } else if let Some((key, _)) = content.split_once('=')
            && !content.starts_with('#')
        {
            let mut full = table.clone();
            full.extend(keys(key));
            consider(&full, line);
        }
    }
    best.map(|(_, line)| line)
}

/// Whether a segment written in the text (`fallbacks`, `members[1]`) is the wanted one; an
/// element of an array value (`fallbacks[0]`) is found on its key's line.
fn same_segment(found: &str, wanted: &str) -> bool {
    found == wanted
        || (!found.contains('[')
            && wanted
                .strip_prefix(found)
                .is_some_and(|rest| rest.starts_with('[')))
}

/// A table's name with the index of each enclosing array of tables it is under: after
/// `[[models]]` twice, `models.deployments` is `models[1]`, `deployments` (its own index is
/// added by the caller).
fn indexed(mut name: Vec<String>, arrays: &[(Vec<String>, usize)]) -> Vec<String> {
    for end in 1..name.len() {
        let (prefix, _) = name.split_at(end);
        if let Some((_, count)) = arrays.iter().find(|(n, _)| n.as_slice() == prefix) {
            name[end - 1].push_str(&format!("[{}]", count - 1));
        }
    }
    name
}

/// A path's segments, an array index kept on its segment: `a.b[1].c` → `a`, `b[1]`, `c`.
fn segments(path: &str) -> Vec<String> {
    path.split('.')
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// A TOML key's segments, unquoted: `"gpt-4o".rpm` → `gpt-4o`, `rpm`.
fn keys(key: &str) -> Vec<String> {
    key.split('.')
        .map(|k| k.trim().trim_matches('"').trim_matches('\'').to_owned())
        .filter(|k| !k.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_arrays_and_dotted_keys_are_followed() {
        let text = r#"
preset = "balanced"
circuit_breaker.failure_threshold = 3

[stack.cache]
ttl = "1h"

[[pool.members]]
name = "a"

[[pool.members]]
name = "b"
key_env = "B_KEY"

[models."gpt-4o-mini"]
requests_per_minute = 120
"#;
        assert_eq!(line_of(text, "circuit_breaker.failure_threshold"), Some(3));
        assert_eq!(line_of(text, "stack.cache.ttl"), Some(6));
        assert_eq!(line_of(text, "stack.cache.max_bytes"), Some(5));
        assert_eq!(line_of(text, "pool.members[1].key_env"), Some(13));
        assert_eq!(line_of(text, "pool.members[0].key_env"), Some(8));
        assert_eq!(
            line_of(text, "models.gpt-4o-mini.requests_per_minute"),
            Some(16)
        );
        assert_eq!(line_of(text, "seed"), None);
        let nested = "[[models]]\nname = \"a\"\n[[models.deployments]]\nmodel = \"x\"\n\
                      [[models]]\nname = \"b\"\n[[models.deployments]]\nmodel = \"y\"\n\
                      [[models.deployments]]\nkeys_env = \"K\"\n[models.affinity]\nuser = true\n";
        assert_eq!(
            line_of(nested, "models[1].deployments[1].keys_env"),
            Some(10)
        );
        assert_eq!(line_of(nested, "models[1].deployments[0].model"), Some(8));
        assert_eq!(line_of(nested, "models[0].deployments[0].model"), Some(4));
        assert_eq!(line_of(nested, "models[1].name"), Some(6));
        assert_eq!(line_of(nested, "models[1].affinity.user"), Some(12));
        let list = "[[models]]\nname = \"a\"\nfallbacks = [\"b\", \"c\"]\n";
        assert_eq!(line_of(list, "models[0].fallbacks[1]"), Some(3));
        assert_eq!(line_of("", "seed"), None);
    }
}
