//! Keeping secrets out of logs, events and errors.

/// Replaces the password of every `postgres://user:password@host` URL in
/// `text` with `***`. Used on anything that may echo a connection string
/// (tool output, driver errors) before it leaves the process.
pub fn redact_urls(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme + 3);
        out.push_str(head);
        let end = tail.find(|c: char| c.is_whitespace() || c == '"' || c == '\'').unwrap_or(tail.len());
        let authority_end = tail[..end].find('/').unwrap_or(end);
        let authority = &tail[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push_str(":***");
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// Removes a known secret wherever it appears.
pub fn redact_secret(text: &str, secret: &str) -> String {
    if secret.is_empty() { text.to_owned() } else { text.replace(secret, "***") }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_passwords_in_urls() {
        assert_eq!(
            redact_urls("could not connect to postgres://app:s3cret@db:5432/app?x=1 (refused)"),
            "could not connect to postgres://app:***@db:5432/app?x=1 (refused)"
        );
        assert_eq!(redact_urls("postgres://app@db/app"), "postgres://app@db/app");
        assert_eq!(redact_urls("no url here"), "no url here");
    }
}
