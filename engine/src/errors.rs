//! Printing an error the way an operator needs it: with every cause.

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
