//! Several hosts on one machine: network namespaces joined by veth pairs to a bridge in the
//! root namespace (which the test itself lives in). Partitions take a host's link down;
//! packet loss is real (nftables random drop inside the host's namespace). Needs root and
//! iproute2 + nftables (scripts/test installs them).

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

/// Runs a command line (words separated by spaces; no quoting needed here).
fn run(line: &str) -> Result<(), String> {
    let args: Vec<&str> = line.split_whitespace().collect();
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{line}: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// `ip <args>`, which must succeed.
fn ip(args: &str) {
    run(&format!("ip {args}")).unwrap_or_else(|e| {
        panic!("network setup failed: {e} (the multi-host tests need root, iproute2 and nftables)")
    });
}

pub struct Net {
    tag: String,
    bridge: String,
    subnet: String,
    hosts: Vec<String>,
}

static N: AtomicU32 = AtomicU32::new(0);

impl Net {
    /// A bridge `10.<a>.<b>.254/24` in the root namespace and one namespace per host,
    /// host i at `10.<a>.<b>.<i+1>`.
    pub fn new(hosts: &[&str]) -> Net {
        let n = std::process::id() % 100_000 * 10 + N.fetch_add(1, Ordering::Relaxed) % 10;
        let tag = format!("{:x}", n);
        let (a, b) = (100 + (n / 250) % 150, n % 250);
        let net = Net {
            bridge: format!("mcb{tag}"),
            subnet: format!("10.{a}.{b}"),
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            tag,
        };
        let (bridge, subnet) = (&net.bridge, &net.subnet);
        ip(&format!("link add {bridge} type bridge"));
        ip(&format!("addr add {subnet}.254/24 dev {bridge}"));
        ip(&format!("link set {bridge} up"));
        for (i, h) in hosts.iter().enumerate() {
            let ns = net.ns(h);
            let (outer, inner) = net.veth(i);
            ip(&format!("netns add {ns}"));
            ip(&format!("netns exec {ns} ip link set lo up"));
            ip(&format!("link add {outer} type veth peer name {inner}"));
            ip(&format!("link set {inner} netns {ns}"));
            ip(&format!("link set {outer} master {bridge}"));
            ip(&format!("link set {outer} up"));
            ip(&format!(
                "netns exec {ns} ip addr add {subnet}.{}/24 dev {inner}",
                i + 1
            ));
            ip(&format!("netns exec {ns} ip link set {inner} up"));
            ip(&format!(
                "netns exec {ns} ip route add default via {subnet}.254"
            ));
        }
        net
    }

    fn index(&self, host: &str) -> usize {
        self.hosts
            .iter()
            .position(|h| h == host)
            .unwrap_or_else(|| panic!("no host {host}"))
    }

    fn veth(&self, i: usize) -> (String, String) {
        (format!("mco{}{i}", self.tag), format!("mci{}{i}", self.tag))
    }

    pub fn ns(&self, host: &str) -> String {
        format!("mc{}-{host}", self.tag)
    }

    pub fn ip(&self, host: &str) -> String {
        format!("{}.{}", self.subnet, self.index(host) + 1)
    }

    /// The root namespace's address on the bridge (where the test and its relays live).
    pub fn gateway(&self) -> String {
        format!("{}.254", self.subnet)
    }

    /// A command run inside `host`'s namespace.
    pub fn command(&self, host: &str, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(host)]).arg(program);
        c
    }

    /// Cuts `host` off the network (its link goes down: packets vanish, no resets).
    pub fn partition(&self, host: &str) {
        ip(&format!("link set {} down", self.veth(self.index(host)).0));
    }

    pub fn heal(&self, host: &str) {
        ip(&format!("link set {} up", self.veth(self.index(host)).0));
    }

    /// Drops `percent`% of TCP packets in and out of `host`, at random (nft joins its
    /// arguments, so a rule can be passed as words).
    pub fn loss(&self, host: &str, percent: u32) {
        let ns = self.ns(host);
        ip(&format!("netns exec {ns} nft add table inet mcloss"));
        for hook in ["input", "output"] {
            ip(&format!(
                "netns exec {ns} nft add chain inet mcloss {hook} {{ type filter hook {hook} priority 0 ; }}"
            ));
            ip(&format!(
                "netns exec {ns} nft add rule inet mcloss {hook} meta l4proto tcp numgen random mod 100 < {percent} drop"
            ));
        }
    }

    pub fn clear_loss(&self, host: &str) {
        let _ = run(&format!(
            "ip netns exec {} nft delete table inet mcloss",
            self.ns(host)
        ));
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for (i, h) in self.hosts.iter().enumerate() {
            // Deleting one end of a veth pair deletes both, even if a namespace lingers
            // (a process still exiting keeps it alive).
            let _ = run(&format!("ip link delete {}", self.veth(i).0));
            let _ = run(&format!("ip netns delete {}", self.ns(h)));
        }
        let _ = run(&format!("ip link delete {}", self.bridge));
    }
}
