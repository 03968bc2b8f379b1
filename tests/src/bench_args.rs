//! The benchmarks' command line: `--name value` after `--bench`.

/// The value given for `--name`, if any.
pub fn text(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

/// The number given for `--name`, or `default` (also for one that does not parse).
pub fn number(name: &str, default: usize) -> usize {
    text(name).and_then(|v| v.parse().ok()).unwrap_or(default)
}
