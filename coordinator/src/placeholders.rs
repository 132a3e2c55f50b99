//! `{{name}}` placeholders in operator-written text: webhook bodies and
//! links (see [`crate::webhooks`]) and analysis queries (see
//! [`crate::analysis`]). Each caller says what a name stands for and how
//! its value is escaped for where it goes.

/// `text` with every `{{name}}` replaced by `value(name)` (the name
/// trimmed; kept as it is when `None`, and an unclosed `{{` kept too).
pub fn fill(text: &str, value: impl Fn(&str) -> Option<String>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let Some(end) = after.find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        match value(after[..end].trim()) {
            Some(v) => out.push_str(&v),
            None => out.push_str(&rest[start..start + 2 + end + 2]),
        }
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_names_are_filled_and_the_rest_kept_as_written() {
        let value = |name: &str| (name == "env").then(|| "prod".to_owned());
        assert_eq!(fill("a {{env}} b {{ env }} c", value), "a prod b prod c");
        assert_eq!(fill("{{other}} and {{env", value), "{{other}} and {{env");
        assert_eq!(fill("no placeholder", value), "no placeholder");
    }
}
