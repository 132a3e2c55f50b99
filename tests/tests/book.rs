//! The book in `docs/` builds with mdbook, and no internal link in it leads
//! nowhere: every relative link names a page or file of the book, every
//! `#fragment` an id of its page, and no link is left pointing at a `.md`
//! file mdbook did not render. A second, tiny book with known broken links
//! proves the checker finds them, so the first test cannot pass on a
//! checker that sees nothing.

use std::path::Path;

use runway_tests::book::{BrokenLink, build, check_links, is_external, markdown_links};
use runway_tests::process::workspace_root;

#[test]
fn the_book_builds_with_no_broken_internal_link() {
    let site = tempfile::tempdir().expect("temp dir");
    build(&workspace_root().join("docs"), site.path());

    let report = check_links(site.path());
    println!("checked {} internal links on {} pages", report.links, report.pages);
    let broken: Vec<String> = report.broken.iter().map(BrokenLink::to_string).collect();
    assert!(
        broken.is_empty(),
        "{} broken internal link(s) in the book:\n{}",
        broken.len(),
        broken.join("\n")
    );

    // Every chapter of SUMMARY.md rendered, and the check saw their links.
    for chapter in [
        "introduction",
        "security",
        "backups",
        "performance",
        "reference/configuration",
        "reference/exit-codes",
    ] {
        assert!(site.path().join(format!("{chapter}.html")).is_file(), "{chapter}.html was not rendered");
    }
    assert!(report.pages >= 20, "only {} pages checked", report.pages);
    assert!(report.links >= 200, "only {} internal links checked", report.links);
}

/// The README is mostly links into the book: each names a file that exists.
#[test]
fn the_readme_links_name_files_that_exist() {
    let root = workspace_root();
    let readme = std::fs::read_to_string(root.join("README.md")).expect("read README.md");
    let links: Vec<String> = markdown_links(&readme).into_iter().filter(|l| !is_external(l)).collect();
    assert!(links.len() >= 10, "only {} links in the README: {links:?}", links.len());
    let missing: Vec<&String> =
        links.iter().filter(|l| !root.join(l.split('#').next().unwrap_or(l)).is_file()).collect();
    assert!(missing.is_empty(), "README links to files that do not exist: {missing:?}");
}

#[test]
fn the_checker_reports_broken_links() {
    let dir = tempfile::tempdir().expect("temp dir");
    let book = dir.path().join("book");
    write(&book.join("book.toml"), "[book]\ntitle = \"broken\"\n[build]\ncreate-missing = false\n");
    write(&book.join("src/SUMMARY.md"), "# Summary\n\n- [One](one.md)\n- [Two](two.md)\n");
    write(
        &book.join("src/one.md"),
        "# One\n\n## A heading\n\n\
         [fine](two.md#second), [fine too](#a-heading), [external](https://example.org/x.md)\n\n\
         [no page](missing.md), [no id](two.md#nowhere), [outside](../../README.md)\n\n\
         [not rendered](NOTES.MD)\n",
    );
    write(&book.join("src/two.md"), "# Two\n\n## Second\n");
    let site = dir.path().join("site");
    build(&book, &site);

    let report = check_links(&site);
    let in_one: Vec<&BrokenLink> = report.broken.iter().filter(|b| b.page == Path::new("one.html")).collect();
    let hrefs: Vec<&str> = in_one.iter().map(|b| b.href.as_str()).collect();
    for (href, why) in [
        ("missing.html", "no such file"),
        ("two.html#nowhere", "no id \"nowhere\""),
        ("../../README.html", "outside the book"),
        ("NOTES.MD", "Markdown file mdbook did not render"),
    ] {
        assert!(
            in_one.iter().any(|b| b.href == href && b.why.contains(why)),
            "{href} not reported as {why:?}; reported: {in_one:#?}"
        );
    }
    for fine in ["two.html#second", "#a-heading"] {
        assert!(!hrefs.contains(&fine), "{fine} reported although it exists: {in_one:#?}");
    }
    assert_eq!(in_one.len(), 4, "reported: {in_one:#?}");
}

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("create dir");
    std::fs::write(path, text).expect("write");
}
