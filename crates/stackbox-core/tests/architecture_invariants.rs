//! Architecture invariants that the compiler cannot check.

/// "The core does no IO": no async runtime, Docker client, database, HTTP, AWS, mail or
/// randomness crate may appear among its dependencies.
#[test]
fn core_has_no_io_dependencies() {
    let manifest =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml")).unwrap();
    let dependencies = manifest
        .split("[dependencies]")
        .nth(1)
        .unwrap()
        .split("\n[")
        .next()
        .unwrap();
    let allowed = [
        "serde",
        "serde_json",
        "toml",
        "thiserror",
        "deunicode",
        "sha2",
    ];
    for line in dependencies
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        let name = line.split(['.', ' ', '=']).next().unwrap();
        assert!(
            allowed.contains(&name),
            "stackbox-core must stay pure; `{name}` is not an allowed dependency"
        );
    }
    let source_dir = concat!(env!("CARGO_MANIFEST_DIR"), "/src");
    for entry in walk(std::path::Path::new(source_dir)) {
        let text = std::fs::read_to_string(&entry).unwrap();
        for forbidden in [
            "std::fs",
            "std::net",
            "std::process",
            "std::env",
            "SystemTime",
            "Instant::now",
        ] {
            assert!(
                !text.contains(forbidden),
                "{} uses {forbidden}",
                entry.display()
            );
        }
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            files.push(path);
        }
    }
    files
}
