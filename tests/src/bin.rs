//! Finds the workspace's built binaries (`mc`, `mc-control-plane`, …) next to the test
//! executable. `scripts/test` builds them before running the tests.

use std::path::PathBuf;

/// `target/<profile>/` of the running test.
pub fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("the test knows its own path");
    // target/<profile>/deps/<test> → target/<profile>
    let mut dir = exe
        .parent()
        .expect("test binary has a directory")
        .to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir
}

/// Path of a workspace binary; panics with the fix if it was not built.
pub fn path(name: &str) -> PathBuf {
    let p = target_dir().join(name);
    assert!(
        p.exists(),
        "{} is not built; run `cargo build --workspace --bins` (scripts/test does) first",
        p.display()
    );
    p
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ is inside the repository")
        .to_path_buf()
}

/// A tool `scripts/test` installs (buf, python packages, …) under `.tools/`, or on PATH.
pub fn tool(name: &str) -> PathBuf {
    let local = repo_root().join(".tools/node_modules/.bin").join(name);
    if local.exists() {
        return local;
    }
    if let Ok(path) = std::env::var("PATH") {
        for dir in std::env::split_paths(&path) {
            let p = dir.join(name);
            if p.exists() {
                return p;
            }
        }
    }
    panic!("{name} is not installed; run scripts/test (it installs the tools the tests use)");
}
