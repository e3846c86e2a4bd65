//! Every `pub async fn` case of the shared store suite must be listed in
//! `meta_store_suite!`, or no backend would ever run it. The check reads the
//! suite's source, so it runs without the `testsuite` feature (in a plain
//! `cargo test -p berth-meta`), and it fails for a case module the macro
//! has no list for.

use std::collections::BTreeSet;
use std::path::Path;

/// Names of the top-level `pub async fn` items of a source file.
fn defined(source: &str) -> BTreeSet<String> {
    source
        .lines()
        .filter_map(|l| l.strip_prefix("pub async fn "))
        .filter_map(|l| l.split(['(', '<']).next())
        .map(str::to_owned)
        .collect()
}

/// The macro's case lists: the unnamed first one (key "") for
/// `testsuite.rs`, then one per module, `auth [ ... ]` and so on.
fn listed(suite: &str) -> Vec<(String, BTreeSet<String>)> {
    let mut lists = Vec::new();
    let first = "@cases $prefix, $constructor, [";
    let mut at = suite.find(first).expect("the macro's first case list") + first.len();
    let mut key = String::new();
    loop {
        let end = at + suite[at..].find(']').expect("end of a case list");
        let names = suite[at..end].split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect();
        lists.push((key, names));
        // The next list, `], <module> [`, or the end of the invocation, `]);`.
        let rest = &suite[end + 1..];
        let Some(next) = rest.strip_prefix(", ") else { break };
        let open = next.find('[').expect("a list after its module name");
        key = next[..open].trim().to_owned();
        at = end + 1 + 2 + open + 1;
    }
    lists
}

#[test]
fn macro_lists_every_case() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let suite = std::fs::read_to_string(src.join("testsuite.rs")).expect("read testsuite.rs");
    // Normalize the list's line breaks so `], auth [` is found as one token.
    let flat: String = suite.split_whitespace().collect::<Vec<_>>().join(" ");
    let lists = listed(&flat);
    assert!(lists.len() >= 5, "found {} case lists", lists.len());

    let mut files = vec![(String::new(), suite.clone())];
    for entry in std::fs::read_dir(src.join("testsuite")).expect("read testsuite/") {
        let path = entry.expect("dir entry").path();
        let module = path.file_stem().expect("file name").to_string_lossy().into_owned();
        files.push((module, std::fs::read_to_string(&path).expect("read case module")));
    }
    for (module, source) in &files {
        let cases = defined(source);
        if cases.is_empty() {
            continue;
        }
        let list = lists.iter().find(|(key, _)| key == module).map(|(_, names)| names);
        let Some(list) = list else {
            panic!("meta_store_suite! has no case list for testsuite/{module}.rs, whose cases would never run")
        };
        let name = if module.is_empty() { "testsuite.rs".to_owned() } else { format!("testsuite/{module}.rs") };
        let missing: Vec<_> = cases.difference(list).collect();
        assert!(missing.is_empty(), "cases of {name} not listed in meta_store_suite!: {missing:?}");
        let unknown: Vec<_> = list.difference(&cases).collect();
        assert!(unknown.is_empty(), "meta_store_suite! lists cases that {name} does not define: {unknown:?}");
    }
    let main_cases = defined(&suite).len();
    assert!(main_cases > 30, "found only {main_cases} cases in testsuite.rs");
}

#[test]
fn a_case_missing_from_the_list_is_noticed() {
    let suite = "@cases $prefix, $constructor, [ a, b, ], auth [ c, ]);";
    let lists = listed(suite);
    assert_eq!(lists[0].1, BTreeSet::from(["a".to_owned(), "b".to_owned()]));
    assert_eq!(lists[1].0, "auth");
    let source = "pub async fn a(s: &dyn X) {}\npub async fn b() {}\npub async fn new_case() {}\nasync fn helper() {}";
    let missing: Vec<_> = defined(source).difference(&lists[0].1).cloned().collect();
    assert_eq!(missing, ["new_case"]);
}
