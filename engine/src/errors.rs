//! Printing an error the way an operator needs it: with every cause.
//!
//! The rule runway's own error types follow: a message that prints its
//! cause (`cannot read {path}: {error}`) keeps that cause in a field that
//! is not its `source()` (not named `source`, not `#[from]`; write the
//! `From` by hand). A cause is either in the message or the source, never
//! both, so [`chain`] and anyhow's `{:?}` in the daemons' `main` print it
//! once.

/// `error: cause: cause's cause`, one line; `Display` of most errors
/// (tonic's transport errors among them) shows only the outermost layer.
pub fn chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        text.push_str(": ");
        text.push_str(&e.to_string());
        source = e.source();
    }
    text
}
