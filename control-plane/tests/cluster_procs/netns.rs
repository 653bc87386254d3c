//! Network namespaces for the partition test, with iproute2 only.
//!
//! Layout, all names carrying the test process's id (`wpc<pid>...`):
//! - a bridge namespace `wpc<pid>-br` holding the bridge `br0`;
//! - one namespace per node, `wpc<pid>-n<i>`, with `eth0` (a veth whose other end is a port
//!   of `br0`) at `10.213.0.<i>/24`;
//! - a veth from the root namespace into the bridge, `wpc<pid>h`, with `10.213.0.254/24` on the
//!   root side only: the test's own HTTP clients reach every node through it.
//!
//! A partition is made with routes, not by taking links down (which would also cut the test
//! off from the node it isolates): in the isolated node's namespace the other nodes' addresses
//! are routed into a sink (a veth pair of the namespace's own, the packets addressed to a MAC
//! address nobody has, so its other end drops them), and in theirs the isolated node's address
//! likewise. Packets between the two sides vanish (connections time out, as in a real
//! partition) while `10.213.0.254` still reaches everyone. Healing deletes the routes. (No
//! `dummy` device as the sink: the kernel the tests run on lacks it, as it lacks `tc netem`.)
//!
//! Everything is removed on drop, also when the test panics; leftovers of an earlier run that
//! was killed (namespaces and the root-side veth of a process that no longer exists) are
//! removed first.

use std::process::Command;

/// The subnet's first three octets.
pub const NET: &str = "10.213.0";
/// The test's address, on the root side.
pub const HOST: &str = "10.213.0.254";
/// The MAC address a partition sends the other side's packets to: nobody's.
const SINK_MAC: &str = "02:00:00:00:00:01";

/// Runs `ip args...`; its error output on failure.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip {}: {e}", args.join(" ")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn ip_ok(args: &[&str]) {
    if let Err(err) = ip(args) {
        panic!("{err}");
    }
}

/// The namespaces of one test; removed on drop.
#[derive(Debug)]
pub struct Net {
    prefix: String,
    pub n: usize,
    host_link: String,
    created: Vec<String>,
}

impl Net {
    /// The namespace of node `i` (0-based).
    pub fn ns(&self, i: usize) -> String {
        format!("{}-n{}", self.prefix, i + 1)
    }

    fn bridge_ns(&self) -> String {
        format!("{}-br", self.prefix)
    }

    /// Node `i`'s address.
    pub fn addr(&self, i: usize) -> String {
        format!("{NET}.{}", i + 1)
    }

    /// Builds the namespaces for `n` nodes, or says why it cannot (then nothing is left).
    /// An `Err` means namespaces are not permitted here; anything failing after the first
    /// namespace was made panics.
    pub fn build(n: usize) -> Result<Self, String> {
        remove_leftovers();
        let prefix = format!("wpc{}", std::process::id());
        let mut net = Self {
            host_link: format!("{prefix}h"),
            prefix,
            n,
            created: Vec::new(),
        };
        // The probe: the first namespace. Not root, or no permission: skip.
        let br = net.bridge_ns();
        ip(&["netns", "add", &br])?;
        net.created.push(br.clone());
        ip_ok(&["-n", &br, "link", "set", "lo", "up"]);
        ip_ok(&["-n", &br, "link", "add", "br0", "type", "bridge"]);
        ip_ok(&["-n", &br, "link", "set", "br0", "up"]);
        for i in 0..n {
            let ns = net.ns(i);
            ip_ok(&["netns", "add", &ns]);
            net.created.push(ns.clone());
            ip_ok(&["-n", &ns, "link", "set", "lo", "up"]);
            let port = format!("{}p{}", net.prefix, i + 1);
            ip_ok(&[
                "link", "add", "eth0", "netns", &ns, "type", "veth", "peer", "name", &port,
                "netns", &br,
            ]);
            ip_ok(&["-n", &br, "link", "set", &port, "master", "br0"]);
            ip_ok(&["-n", &br, "link", "set", &port, "up"]);
            let cidr = format!("{}/24", net.addr(i));
            ip_ok(&["-n", &ns, "addr", "add", &cidr, "dev", "eth0"]);
            ip_ok(&["-n", &ns, "link", "set", "eth0", "up"]);
            // Where a partition's packets go: a veth pair of its own, whose other end drops
            // them (they are addressed to a MAC address that is not its).
            ip_ok(&[
                "-n", &ns, "link", "add", "drop0", "type", "veth", "peer", "name", "drop1",
            ]);
            ip_ok(&["-n", &ns, "link", "set", "drop0", "up"]);
            ip_ok(&["-n", &ns, "link", "set", "drop1", "up"]);
        }
        let host = net.host_link.clone();
        let host_peer = format!("{}hb", net.prefix);
        ip_ok(&[
            "link", "add", &host, "type", "veth", "peer", "name", &host_peer, "netns", &br,
        ]);
        ip_ok(&["-n", &br, "link", "set", &host_peer, "master", "br0"]);
        ip_ok(&["-n", &br, "link", "set", &host_peer, "up"]);
        ip_ok(&["addr", "add", &format!("{HOST}/24"), "dev", &host]);
        ip_ok(&["link", "set", &host, "up"]);
        Ok(net)
    }

    /// Cuts node `i` off from every other node (both directions); the test still reaches it.
    pub fn isolate(&self, i: usize) {
        self.routes(i, "add");
    }

    /// Undoes [`Self::isolate`].
    pub fn heal(&self, i: usize) {
        self.routes(i, "del");
    }

    fn routes(&self, i: usize, verb: &str) {
        for j in (0..self.n).filter(|j| *j != i) {
            for (from, to) in [(i, j), (j, i)] {
                let ns = self.ns(from);
                let addr = self.addr(to);
                let dest = format!("{addr}/32");
                ip_ok(&["-n", &ns, "route", verb, &dest, "dev", "drop0"]);
                if verb == "add" {
                    ip_ok(&[
                        "-n",
                        &ns,
                        "neigh",
                        "replace",
                        &addr,
                        "lladdr",
                        SINK_MAC,
                        "dev",
                        "drop0",
                        "nud",
                        "permanent",
                    ]);
                } else {
                    ip_ok(&["-n", &ns, "neigh", "del", &addr, "dev", "drop0"]);
                }
            }
        }
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_link]);
        for ns in self.created.drain(..).rev() {
            let _ = ip(&["netns", "del", &ns]);
        }
    }
}

/// Removes namespaces `wpc<pid>-*` and links `wpc<pid>h` of processes that are gone.
fn remove_leftovers() {
    let gone = |name: &str| -> bool {
        let digits: String = name
            .strip_prefix("wpc")
            .unwrap_or("")
            .chars()
            .take_while(char::is_ascii_digit)
            .collect();
        !digits.is_empty() && !std::path::Path::new(&format!("/proc/{digits}")).exists()
    };
    if let Ok(out) = Command::new("ip").args(["netns", "list"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let name = line.split_whitespace().next().unwrap_or("");
            if name.starts_with("wpc") && gone(name) {
                let _ = ip(&["netns", "del", name]);
            }
        }
    }
    if let Ok(out) = Command::new("ip").args(["-o", "link", "show"]).output() {
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            // "12: wpc123h@if11: <...>"
            let name = line
                .split(": ")
                .nth(1)
                .and_then(|n| n.split('@').next())
                .unwrap_or("");
            if name.starts_with("wpc") && name.ends_with('h') && gone(name) {
                let _ = ip(&["link", "del", name]);
            }
        }
    }
}
