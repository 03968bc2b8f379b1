//! House rules checked on the source tree (as rust-analyzer's tidy test does): every Rust
//! file says what it is in a `//!` line at its top, and no source file holds more than 800
//! lines outside its tests (a file that big holds several concepts: split it).

use std::path::{Path, PathBuf};

const MAX_LINES: usize = 800;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let p = e.path();
        let name = e.file_name();
        let name = name.to_string_lossy();
        if p.is_dir() {
            if !matches!(name.as_ref(), "target" | ".git" | ".tools" | "node_modules") {
                rust_files(&p, out);
            }
        } else if name.ends_with(".rs") {
            out.push(p);
        }
    }
}

/// Lines before the file's `#[cfg(test)]` module (the whole file if it has none).
fn lines_outside_tests(text: &str) -> usize {
    text.lines()
        .take_while(|l| !l.starts_with("#[cfg(test)]"))
        .count()
}

/// Test code (integration tests, benchmarks) may be long: one file per subject.
fn is_test_code(rel: &Path) -> bool {
    let s = rel.to_string_lossy();
    s.starts_with("tests/tests/") || s.starts_with("tests/benches/") || s.contains("/tests/")
}

#[test]
fn every_rust_file_says_what_it_is_and_none_is_too_big() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let root = root.canonicalize().unwrap();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    assert!(files.len() > 50, "found the sources: {}", files.len());
    let mut problems = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&root).unwrap();
        let text = std::fs::read_to_string(f).unwrap();
        if !text.starts_with("//!") {
            problems.push(format!(
                "{}: does not start with a `//!` line saying what it is",
                rel.display()
            ));
        }
        let n = lines_outside_tests(&text);
        if !is_test_code(rel) && n > MAX_LINES {
            problems.push(format!(
                "{}: {n} lines outside its tests (at most {MAX_LINES}): split it by concept",
                rel.display()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "house rules broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_rules_see_what_they_should() {
    assert_eq!(lines_outside_tests("a\nb\n#[cfg(test)]\nmod tests {}\n"), 2);
    assert_eq!(lines_outside_tests("a\nb\n"), 2);
    assert!(is_test_code(Path::new("tests/tests/console.rs")));
    assert!(is_test_code(Path::new("worker-agent/tests/output_fuzz.rs")));
    assert!(!is_test_code(Path::new("control-plane/src/session.rs")));
    assert!(!is_test_code(Path::new("tests/src/cp.rs")));
}
