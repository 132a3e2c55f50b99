//! The book under `docs/`: built with mdbook into a directory, then every
//! internal link of the HTML it rendered checked against the files and
//! element ids that exist.
//!
//! A plain scan for `href="…"`, `src="…"` and `id="…"` attributes is enough:
//! mdbook writes them double-quoted, and the book is ours.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path, PathBuf};
use std::process::Command;

/// `mdbook build BOOK --dest-dir DEST`. Panics with the fix when mdbook is
/// not on `PATH` (`deploy/install-deps.sh` installs it from crates.io) or
/// when the build fails (a chapter missing, a bad `{{#include}}`).
pub fn build(book: &Path, dest: &Path) {
    let out = match Command::new("mdbook").arg("build").arg(book).arg("--dest-dir").arg(dest).output() {
        Ok(out) => out,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => panic!(
            "mdbook is not on PATH: run deploy/install-deps.sh (it runs `cargo install mdbook@0.5.4 --locked \
             --no-default-features --features search`) and make sure ~/.cargo/bin is on PATH"
        ),
        Err(e) => panic!("run mdbook: {e}"),
    };
    assert!(
        out.status.success(),
        "mdbook build {} failed ({}):\n{}{}",
        book.display(),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// One link that leads nowhere.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokenLink {
    /// The page holding the link, relative to the site root.
    pub page: PathBuf,
    /// The link as written in the page.
    pub href: String,
    /// What is wrong with it.
    pub why: String,
}

impl std::fmt::Display for BrokenLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {:?}: {}", self.page.display(), self.href, self.why)
    }
}

/// What [`check_links`] looked at and what it found.
#[derive(Debug, Default)]
pub struct LinkReport {
    /// HTML pages read.
    pub pages: usize,
    /// Internal links checked (external ones are not counted).
    pub links: usize,
    /// Every internal link that leads nowhere.
    pub broken: Vec<BrokenLink>,
}

/// Checks every internal link of every `.html` page under `site`: the file a
/// relative link names must exist inside `site`, a `#fragment` must be an
/// `id` of the target page, and no link may still name a `.md` file (mdbook
/// rewrites Markdown links to `x.md` into `x.html`, but not `X.MD` or an
/// `<img src>`: such a link leads nowhere on the site). `http(s):`,
/// `mailto:` and other links with a scheme are not checked.
pub fn check_links(site: &Path) -> LinkReport {
    let site = &site.canonicalize().unwrap_or_else(|e| panic!("{}: {e}", site.display()));
    let mut paths = Vec::new();
    collect_html(site, &mut paths);
    paths.sort();
    let pages: Vec<(PathBuf, String)> = paths
        .into_iter()
        .map(|path| {
            let html =
                std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
            (path, html)
        })
        .collect();
    let ids: Ids = pages
        .iter()
        .map(|(path, html)| (path.clone(), attributes(html, "id").into_iter().collect()))
        .collect();
    let mut report = LinkReport { pages: pages.len(), ..LinkReport::default() };
    for (page, html) in &pages {
        let relative = page.strip_prefix(site).expect("page under the site").to_path_buf();
        for href in attributes(html, "href").into_iter().chain(attributes(html, "src")) {
            if is_external(&href) {
                continue;
            }
            report.links += 1;
            if let Some(why) = check_one(site, page, &href, &ids) {
                report.broken.push(BrokenLink { page: relative.clone(), href, why });
            }
        }
    }
    report
}

/// The `id`s of each page, by its path.
type Ids = BTreeMap<PathBuf, BTreeSet<String>>;

/// Why `href` on `page` leads nowhere, or `None` when it is fine.
fn check_one(site: &Path, page: &Path, href: &str, ids: &Ids) -> Option<String> {
    let href = href.replace("&amp;", "&");
    let (path, fragment) = match href.split_once('#') {
        Some((path, fragment)) => (path, Some(fragment)),
        None => (href.as_str(), None),
    };
    let path = path.split_once('?').map_or(path, |(path, _query)| path);
    let path = percent_decode(path);
    if path.to_ascii_lowercase().ends_with(".md") {
        return Some("a Markdown file mdbook did not render: link a chapter, or a file by its URL".into());
    }
    let target = if path.is_empty() {
        page.to_path_buf()
    } else {
        let base = if path.starts_with('/') { site } else { page.parent().expect("page dir") };
        let Some(joined) = normalize(&base.join(path.trim_start_matches('/'))) else {
            return Some("climbs above the file system root".into());
        };
        if !joined.starts_with(site) {
            return Some("points outside the book".into());
        }
        if joined.is_dir() { joined.join("index.html") } else { joined }
    };
    let shown = target.strip_prefix(site).unwrap_or(&target).display();
    if !target.is_file() {
        return Some(format!("no such file in the book: {shown}"));
    }
    match (fragment.map(percent_decode), ids.get(&target)) {
        (Some(fragment), Some(page_ids)) if !fragment.is_empty() && !page_ids.contains(&fragment) => {
            Some(format!("no id {fragment:?} in {shown}"))
        }
        // No fragment, an id that exists, or a fragment into a file that is
        // not a page (a script, a font): nothing to look up.
        _ => None,
    }
}

/// The targets of the inline Markdown links `[text](target)` in `markdown`
/// (code spans and blocks are not told apart: runway's README has no link
/// syntax in its code).
pub fn markdown_links(markdown: &str) -> Vec<String> {
    let mut links = Vec::new();
    let mut rest = markdown;
    while let Some(at) = rest.find("](") {
        let after = &rest[at + 2..];
        let Some(end) = after.find(')') else { break };
        links.push(after[..end].to_string());
        rest = &after[end..];
    }
    links
}

/// A link with a scheme (`https:`, `mailto:`, `data:`…) or protocol-relative:
/// not a file of ours.
pub fn is_external(href: &str) -> bool {
    if href.starts_with("//") {
        return true;
    }
    match href.split_once(':') {
        Some((scheme, _)) => {
            !scheme.is_empty()
                && scheme.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
                && !scheme.contains('/')
        }
        None => false,
    }
}

/// Every value of `name="…"` in `html`, in order (whole attribute names
/// only: `data-id="…"` is not an `id`).
fn attributes(html: &str, name: &str) -> Vec<String> {
    let needle = format!("{name}=\"");
    let mut values = Vec::new();
    let mut rest = html;
    while let Some(at) = rest.find(&needle) {
        let before = rest[..at].chars().next_back();
        let after = &rest[at + needle.len()..];
        let Some(end) = after.find('"') else { break };
        if before.is_some_and(char::is_whitespace) {
            values.push(after[..end].to_string());
        }
        rest = &after[end..];
    }
    values
}

/// `a%20b` → `a b`; anything that is not a valid escape stays as written.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `a/./b/../c` → `a/c` without touching the file system; `None` if `..`
/// climbs above the root.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            other => out.push(other),
        }
    }
    Some(out)
}

fn collect_html(dir: &Path, pages: &mut Vec<PathBuf>) {
    let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            collect_html(&path, pages);
        } else if path.extension().is_some_and(|ext| ext == "html") {
            pages.push(path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_whole_names() {
        let html = r#"<h2 id="a"><a data-id="x" href="b.html#c">x</a></h2><img src="i.png">"#;
        assert_eq!(attributes(html, "id"), ["a"]);
        assert_eq!(attributes(html, "href"), ["b.html#c"]);
        assert_eq!(attributes(html, "src"), ["i.png"]);
    }

    #[test]
    fn schemes_are_external() {
        for href in ["https://x.org/a", "http://x", "mailto:a@b", "data:image/png;base64,AA", "//cdn/x.js"] {
            assert!(is_external(href), "{href}");
        }
        for href in ["a.html", "#x", "../a.html#b:c", "dir/a.html"] {
            assert!(!is_external(href), "{href}");
        }
    }

    #[test]
    fn markdown_links_are_found() {
        let text = "See [a](docs/src/a.md), [b](https://x.org) and `code`.\n[c](b.md#d)";
        assert_eq!(markdown_links(text), ["docs/src/a.md", "https://x.org", "b.md#d"]);
    }

    #[test]
    fn paths_normalize_and_decode() {
        assert_eq!(normalize(Path::new("/s/a/./b/../c.html")), Some(PathBuf::from("/s/a/c.html")));
        assert_eq!(normalize(Path::new("/..")), None);
        assert_eq!(percent_decode("a%20b%zz"), "a b%zz");
    }
}
