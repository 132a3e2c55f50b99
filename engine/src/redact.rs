//! Keeping secrets out of logs, events and errors.
//!
//! Two kinds of secret reach text that leaves the process: passwords in
//! connection strings (`postgres://user:password@host`, `?password=`, libpq's
//! `password=` keyword, `PGPASSWORD=`), which [`redact_urls`] finds by their
//! shape, and secrets runway knows by value (object-store keys, a parsed
//! password), which [`redact_secret`] removes wherever they appear.

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Replaces every password in `text` with `***`: the `user:password@` of a
/// URL and the value of every `password=` parameter (`?password=`,
/// `&password=`, libpq's `password=…`, `PGPASSWORD=…`; any case). Used on
/// anything that may echo a connection string (tool output, driver errors,
/// configs in `Debug`) before it leaves the process.
pub fn redact_urls(text: &str) -> String {
    redact_parameters(&redact_userinfo(text))
}

/// `scheme://user:password@host` → `scheme://user:***@host`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(scheme) = rest.find("://") {
        let (head, tail) = rest.split_at(scheme + 3);
        out.push_str(head);
        let end = tail.find(ends_value).unwrap_or(tail.len());
        let authority_end = tail[..end].find(['/', '?', '#']).unwrap_or(end);
        let authority = &tail[..authority_end];
        match (authority.rfind('@'), authority.find(':')) {
            (Some(at), Some(colon)) if colon < at => {
                out.push_str(&authority[..colon]);
                out.push(':');
                out.push_str(MASK);
                out.push_str(&authority[at..]);
            }
            _ => out.push_str(authority),
        }
        rest = &tail[authority_end..];
    }
    out.push_str(rest);
    out
}

/// `…password=VALUE…` → `…password=***…`, for every case of `password`
/// (so also `sslpassword=` and `PGPASSWORD=`). The value ends at `&`, `;`,
/// whitespace or a quote; a quoted value (`password='a b'`) at its closing quote.
fn redact_parameters(text: &str) -> String {
    const KEY: &str = "password=";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(found) = lower[from..].find(KEY) {
        let mut value_start = from + found + KEY.len();
        let rest = &text[value_start..];
        // libpq's quoted form, `password='a b'`: up to the closing quote.
        let value_len = match rest.chars().next() {
            Some(quote @ ('\'' | '"')) => {
                value_start += 1;
                rest[1..].find(quote).unwrap_or(rest.len() - 1)
            }
            _ => rest.find(|c| ends_value(c) || c == '&' || c == ';').unwrap_or(rest.len()),
        };
        if value_len > 0 {
            out.push_str(&text[copied..value_start]);
            out.push_str(MASK);
            copied = value_start + value_len;
        }
        from = value_start + value_len;
    }
    out.push_str(&text[copied..]);
    out
}

/// Where a URL or parameter value ends in running text.
fn ends_value(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '\'' | '`' | '<' | '>')
}

/// Masks both kinds of secret: passwords by their shape ([`redact_urls`])
/// and a set of secrets known by value (a database password, object-store
/// keys). `Debug` shows how many secrets it holds, never one of them.
#[derive(Clone, Default)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is masked whole.
    secrets: Vec<String>,
}

impl Redactor {
    /// Masks `secrets` (empty ones are ignored) besides URL passwords.
    pub fn new(secrets: impl IntoIterator<Item = String>) -> Self {
        let mut secrets: Vec<String> = secrets.into_iter().filter(|s| !s.is_empty()).collect();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        secrets.dedup();
        Self { secrets }
    }

    /// `text` with every password and known secret masked.
    pub fn redact(&self, text: &str) -> String {
        self.secrets.iter().fold(redact_urls(text), |text, secret| redact_secret(&text, secret))
    }
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redactor").field("secrets", &self.secrets.len()).finish()
    }
}

/// Removes a known secret wherever it appears.
pub fn redact_secret(text: &str, secret: &str) -> String {
    if secret.is_empty() { text.to_owned() } else { text.replace(secret, MASK) }
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
        // A password with an `@` (percent-encoded or not) is hidden whole.
        assert_eq!(redact_urls("postgres://app:p%40ss@db/app"), "postgres://app:***@db/app");
        assert_eq!(redact_urls("\"postgres://app:p@ss@db\""), "\"postgres://app:***@db\"");
        // No path: the authority ends at `?`.
        assert_eq!(
            redact_urls("postgres://app:pw@db?sslmode=require"),
            "postgres://app:***@db?sslmode=require"
        );
    }

    #[test]
    fn hides_password_parameters() {
        assert_eq!(
            redact_urls("postgres://app@db/app?sslmode=require&password=s3cret&schema=x"),
            "postgres://app@db/app?sslmode=require&password=***&schema=x"
        );
        assert_eq!(redact_urls("postgres://db/app?PASSWORD=s3cret"), "postgres://db/app?PASSWORD=***");
        assert_eq!(
            redact_urls("host=db user=app password=s3cret dbname=app"),
            "host=db user=app password=*** dbname=app"
        );
        assert_eq!(redact_urls("PGPASSWORD=s3cret pg_dump"), "PGPASSWORD=*** pg_dump");
        assert_eq!(redact_urls("sslpassword='s3cret'"), "sslpassword='***'");
        assert_eq!(redact_urls("password=\"s3 cret\" host=db"), "password=\"***\" host=db");
        assert_eq!(redact_urls("password= nothing"), "password= nothing");
        assert_eq!(redact_urls("password=a password=b"), "password=*** password=***");
    }

    #[test]
    fn hides_known_secrets() {
        assert_eq!(redact_secret("key=AKIA/abc", "AKIA/abc"), "key=***");
        assert_eq!(redact_secret("nothing", ""), "nothing");
        let redactor = Redactor::new(["abc".to_owned(), "abcdef".to_owned(), String::new()]);
        assert_eq!(
            redactor.redact("token abcdef, key abc, postgres://u:pw@h"),
            "token ***, key ***, postgres://u:***@h"
        );
        assert!(!format!("{redactor:?}").contains("abc"));
    }
}
