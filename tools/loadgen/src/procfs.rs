//! What the kernel says about the server process: resident memory and CPU time, read from
//! `/proc` (Linux only), so that figures describe the server and not the load generator. The
//! machine-wide busy time shows when something else (a build, another test) shared the CPUs
//! during a run, which on a small machine skews req/s.

use std::time::Duration;

use crate::Error;

/// Clock ticks per second in `/proc/PID/stat`: `USER_HZ`, which Linux fixes at 100 for user
/// space on every common architecture.
const USER_HZ: u64 = 100;

/// `VmRSS` of `pid`, in bytes.
pub(crate) fn rss_bytes(pid: u32) -> Result<u64, Error> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    parse_vm_rss(&status).ok_or_else(|| format!("no VmRSS line in {path}").into())
}

fn parse_vm_rss(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// User plus system CPU time `pid` has used so far (all its threads, live and ended).
pub(crate) fn cpu_time(pid: u32) -> Result<Duration, Error> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let ticks = parse_cpu_ticks(&stat).ok_or_else(|| format!("cannot parse {path}"))?;
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// CPUs of the machine (the `cpuN` lines of `/proc/stat`), not those this process may run on:
/// the busy time [`CpuUse::other`] is taken from is the whole machine's, and under `taskset`
/// `available_parallelism` would count only the load tool's CPU.
pub(crate) fn machine_cpus() -> usize {
    std::fs::read_to_string("/proc/stat")
        .map(|stat| {
            stat.lines()
                .filter(|l| {
                    l.strip_prefix("cpu")
                        .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
                })
                .count()
        })
        .ok()
        .filter(|n| *n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// CPU time all CPUs of the machine spent busy (not idle, not waiting for I/O) since boot.
pub(crate) fn machine_busy() -> Result<Duration, Error> {
    let stat = std::fs::read_to_string("/proc/stat")
        .map_err(|e| format!("cannot read /proc/stat: {e}"))?;
    let ticks = parse_busy_ticks(&stat).ok_or("cannot parse /proc/stat")?;
    Ok(Duration::from_millis(ticks * 1000 / USER_HZ))
}

fn parse_busy_ticks(stat: &str) -> Option<u64> {
    // First line: "cpu user nice system idle iowait irq softirq steal guest guest_nice"; guest
    // time is already counted in user.
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = f[..] else {
        return None;
    };
    Some(user + nice + system + irq + softirq + steal)
}

/// CPU time used so far by the server (if known), by this process and by the whole machine.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuUse {
    /// The server process (or processes, added up).
    pub(crate) server: Option<Duration>,
    /// This load generator.
    pub(crate) load: Duration,
    /// Every process on the machine.
    pub(crate) machine: Duration,
}

impl CpuUse {
    /// Reads the three counters now; the server's is the sum over `server` (none: unknown).
    pub(crate) fn now(server: &[u32]) -> Result<Self, Error> {
        let mut total = None;
        for pid in server {
            total = Some(total.unwrap_or(Duration::ZERO) + cpu_time(*pid)?);
        }
        Ok(Self {
            server: total,
            load: cpu_time(std::process::id())?,
            machine: machine_busy()?,
        })
    }

    /// The use between `earlier` and `self`.
    pub(crate) fn since(&self, earlier: &Self) -> Self {
        Self {
            server: self
                .server
                .zip(earlier.server)
                .map(|(a, b)| a.saturating_sub(b)),
            load: self.load.saturating_sub(earlier.load),
            machine: self.machine.saturating_sub(earlier.machine),
        }
    }

    /// Machine time used by neither the server nor this process.
    pub(crate) fn other(&self) -> Duration {
        self.machine
            .saturating_sub(self.load)
            .saturating_sub(self.server.unwrap_or_default())
    }
}

fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    // Fields 14 (utime) and 15 (stime); the command name (field 2) may hold spaces, so count
    // from the closing parenthesis, after which field 3 comes first.
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vm_rss() {
        let status = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t3\n";
        assert_eq!(parse_vm_rss(status), Some(1234 * 1024));
    }

    #[test]
    fn reads_cpu_ticks_past_a_name_with_spaces() {
        let stat = "42 (tokio (rt) x) S 1 42 42 0 -1 4194304 10 0 0 0 250 17 0 0 20 0 3 0 100";
        assert_eq!(parse_cpu_ticks(stat), Some(267));
    }

    #[test]
    fn reads_machine_busy_ticks() {
        let stat = "cpu  100 5 50 9000 30 1 2 3 0 0\ncpu0 50 2 25 4500 15 0 1 1 0 0\n";
        assert_eq!(parse_busy_ticks(stat), Some(161));
    }

    #[test]
    fn reads_this_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).expect("rss") > 0);
        cpu_time(me).expect("cpu time");
        machine_busy().expect("machine busy time");
    }
}
