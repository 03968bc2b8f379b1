//! Benchmark (not a test): output streaming through the pty runtime (the worker's pty
//! runtime, its output source, line splitting and escape stripping: what an attempt does
//! with every chunk) versus reading the same pty raw with portable-pty, in MiB/s.
//!
//! `cargo bench -p mc-tests --bench pty_stream [-- --mib 256]`

// A benchmark measures wall time; the clock rule is for the system's logic.
#![allow(clippy::disallowed_methods)]

use std::io::Read;
use std::time::Instant;

use mc_worker_agent::output::{self, Lines};
use mc_worker_agent::runtime::{SpawnSpec, pty};
use portable_pty::{CommandBuilder, PtySize, native_pty_system};

use mc_tests::bench_args::number as arg;

/// A text file of `mib` MiB of 100-character lines.
fn input(dir: &std::path::Path, mib: usize) -> std::path::PathBuf {
    let p = dir.join("input.txt");
    let line = format!(
        "{}\n",
        &"0123456789abcdefghijklmnopqrstuvwxyz".repeat(3)[..99]
    );
    let mut s = String::with_capacity(mib << 20);
    while s.len() < mib << 20 {
        s.push_str(&line);
    }
    std::fs::write(&p, s).unwrap();
    p
}

fn raw(file: &std::path::Path) -> (usize, f64) {
    let pair = native_pty_system()
        .openpty(PtySize {
            rows: 50,
            cols: 200,
            pixel_width: 0,
            pixel_height: 0,
        })
        .unwrap();
    let mut cmd = CommandBuilder::new("cat");
    cmd.arg(file);
    let mut child = pair.slave.spawn_command(cmd).unwrap();
    drop(pair.slave);
    let mut r = pair.master.try_clone_reader().unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n = 0;
    let t = Instant::now();
    loop {
        match r.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(k) => n += k,
        }
    }
    let secs = t.elapsed().as_secs_f64();
    let _ = child.wait();
    (n, secs)
}

async fn through_runtime(file: &std::path::Path) -> (usize, f64) {
    let spec = SpawnSpec {
        argv: vec!["cat".into(), file.to_string_lossy().to_string()],
        cwd: std::env::temp_dir(),
        env: vec![],
    };
    let t = Instant::now();
    let (_rt, mut src) = pty::spawn(&spec).unwrap();
    let mut lines = Lines::default();
    let mut n = 0;
    let mut signals = 0;
    let mut tail = output::Tail::default();
    // A text-format profile's usage-limit markers are looked for in every line.
    let markers = mc_worker_agent::profiles::builtin()["aider"]
        .usage_limit_markers
        .clone();
    assert!(!markers.is_empty());
    while let Some(b) = src.next().await {
        n += b.len();
        // What an attempt does with every chunk of a text-format agent.
        tail.push(&b);
        for l in lines.push(&b) {
            let p = output::parse(mc_worker_agent::profiles::OutputFormat::Text, l, &markers);
            for t in p.text {
                if output::signal(&t).is_some() {
                    signals += 1;
                }
            }
        }
    }
    let _ = tail.fingerprint();
    assert_eq!(signals, 0);
    (n, t.elapsed().as_secs_f64())
}

fn main() {
    let mib = arg("--mib", 256);
    let dir = tempfile::tempdir().unwrap();
    let file = input(dir.path(), mib);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("pty output streaming: {mib} MiB of text lines, release build");
    let mut best_raw: f64 = 0.0;
    let mut best_rt: f64 = 0.0;
    for _ in 0..3 {
        let (n, s) = raw(&file);
        best_raw = best_raw.max(n as f64 / s / 1_048_576.0);
        let (n2, s2) = rt.block_on(through_runtime(&file));
        best_rt = best_rt.max(n2 as f64 / s2 / 1_048_576.0);
    }
    println!("raw pty read:          {best_raw:>8.1} MiB/s");
    println!(
        "through the runtime:   {best_rt:>8.1} MiB/s  ({:.2}x of raw)",
        best_rt / best_raw
    );
}
