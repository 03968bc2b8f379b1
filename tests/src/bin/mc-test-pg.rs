//! Starts or stops the throwaway Postgres cluster a test run shares.
//! `mc-test-pg start DIR` prints the cluster's URL; `mc-test-pg stop DIR` stops it.

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    match (args.get(1).map(String::as_str), args.get(2)) {
        (Some("start"), Some(dir)) => {
            let url = mc_tests::pg::start_cluster(std::path::Path::new(dir))?;
            println!("{url}");
        }
        (Some("stop"), Some(dir)) => mc_tests::pg::stop_cluster(std::path::Path::new(dir))?,
        _ => anyhow::bail!("usage: mc-test-pg start|stop DIR"),
    }
    Ok(())
}
