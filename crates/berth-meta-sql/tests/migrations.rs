//! Both backends must carry the same migrations: same versions, same
//! names, in `migrations/sqlite` and `migrations/postgres`. A migration
//! added to one directory only would leave the other database's schema a
//! version behind with nothing to say so.

use std::collections::BTreeMap;
use std::path::Path;

/// `version -> file name` of the `.sql` files in `migrations/<backend>`.
fn migrations(backend: &str) -> BTreeMap<u64, String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../migrations").join(backend);
    let mut found = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
        let name = entry.expect("dir entry").file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".sql") else { continue };
        let (version, _) = stem.split_once('_').unwrap_or_else(|| panic!("{backend}/{name}: no VERSION_ prefix"));
        let version: u64 = version.parse().unwrap_or_else(|_| panic!("{backend}/{name}: version is not a number"));
        if let Some(other) = found.insert(version, name.clone()) {
            panic!("{backend}: version {version} is used by {other} and {name}");
        }
    }
    found
}

#[test]
fn sqlite_and_postgres_have_the_same_versions() {
    let sqlite = migrations("sqlite");
    let postgres = migrations("postgres");
    assert!(!sqlite.is_empty(), "no SQLite migrations found");
    let only = |a: &BTreeMap<u64, String>, b: &BTreeMap<u64, String>| -> Vec<String> {
        a.iter().filter(|(v, _)| !b.contains_key(v)).map(|(_, n)| n.clone()).collect()
    };
    assert_eq!(only(&sqlite, &postgres), Vec::<String>::new(), "in migrations/sqlite only");
    assert_eq!(only(&postgres, &sqlite), Vec::<String>::new(), "in migrations/postgres only");
    assert_eq!(sqlite, postgres, "same versions, but named differently");
}
