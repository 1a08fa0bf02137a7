//! The documentation stays true to itself: the README's figures are BENCHMARKS.md's, and every
//! link between the pages leads somewhere.

use std::path::{Path, PathBuf};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The text between the headline markers.
fn headline(text: &str, name: &str) -> String {
    let start =
        text.find("<!-- headline:start -->").unwrap_or_else(|| panic!("{name} has no headline block"));
    let end = text.find("<!-- headline:end -->").unwrap_or_else(|| panic!("{name} has no headline end"));
    text[start..end].to_owned()
}

#[test]
fn the_readme_quotes_the_headline_figures_of_benchmarks_md_as_they_are() {
    let readme = read(&root().join("README.md"));
    let benchmarks = read(&root().join("BENCHMARKS.md"));
    assert_eq!(
        headline(&readme, "README.md"),
        headline(&benchmarks, "BENCHMARKS.md"),
        "the README's figures differ from BENCHMARKS.md's headline block: copy the block"
    );
    // Each figure carries its date (YYYY-MM-DD).
    let block = headline(&readme, "README.md");
    for item in block.split("\n- ").skip(1) {
        let dated = item.as_bytes().windows(10).any(|w| {
            w.iter().enumerate().all(|(i, b)| if i == 4 || i == 7 { *b == b'-' } else { b.is_ascii_digit() })
        });
        assert!(dated, "a figure without its date: {item}");
    }
}

#[test]
fn every_relative_link_of_the_readme_and_the_guides_leads_to_a_file() {
    let mut pages = vec![root().join("README.md"), root().join("BENCHMARKS.md")];
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        pages.push(entry.unwrap().path());
    }
    for page in pages {
        let text = read(&page);
        for (i, _) in text.match_indices("](") {
            let target = &text[i + 2..];
            let target = &target[..target.find(')').unwrap_or(target.len())];
            if target.contains("://") || target.starts_with('#') || target.starts_with("mailto:") {
                continue;
            }
            let file = target.split('#').next().unwrap();
            let resolved = page.parent().unwrap().join(file);
            assert!(resolved.exists(), "{}: the link to {target} leads nowhere", page.display());
        }
    }
}

#[test]
fn the_first_screen_of_the_readme_has_the_two_commands_cargo_add_and_the_features() {
    let readme = read(&root().join("README.md"));
    let first: String = readme.lines().take(40).collect::<Vec<_>>().join("\n");
    for want in
        ["./scripts/demo.sh", "./scripts/test.sh", "cargo add actix-cognito", "| `redis` |", "| `events` |"]
    {
        assert!(first.contains(want), "the README's first screen lacks {want}");
    }
}
