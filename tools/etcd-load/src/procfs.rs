//! CPU time from `/proc` (Linux): of the servers, of this process and of the whole machine, so
//! that a row says what each operation cost and whether something else shared the CPUs.

use std::time::Duration;

use crate::Error;

/// Clock ticks per second in `/proc` (`USER_HZ`, 100 on every common Linux architecture).
const USER_HZ: u64 = 100;

fn ticks(t: u64) -> Duration {
    Duration::from_millis(t * 1000 / USER_HZ)
}

/// User plus system time of `pid` so far (fields 14 and 15 of `/proc/PID/stat`, counted after
/// the command name, which may hold spaces).
fn cpu_time(pid: u32) -> Result<Duration, Error> {
    let path = format!("/proc/{pid}/stat");
    let stat = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?;
    let after_name = &stat[stat.rfind(')').ok_or("no command name")? + 1..];
    let f: Vec<&str> = after_name.split_whitespace().collect();
    let field =
        |i: usize| -> Result<u64, Error> { Ok(f.get(i).ok_or("short stat line")?.parse::<u64>()?) };
    // After the name, field 3 (state) comes first: utime is index 11, stime 12.
    Ok(ticks(field(11)? + field(12)?))
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

/// Busy time of all CPUs since boot: user, nice, system, irq, softirq and steal from the
/// first line of `/proc/stat`.
fn machine_busy() -> Result<Duration, Error> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("cpu "))
        .ok_or("cannot parse /proc/stat")?;
    let f: Vec<u64> = line
        .split_whitespace()
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()?;
    let [user, nice, system, _idle, _iowait, irq, softirq, steal] = f[..] else {
        return Err("cannot parse /proc/stat".into());
    };
    Ok(ticks(user + nice + system + irq + softirq + steal))
}

/// CPU time used so far by the servers (added up; `None` when no process id was given), by
/// this load generator and by the whole machine.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CpuUse {
    pub(crate) server: Option<Duration>,
    pub(crate) load: Duration,
    machine: Duration,
}

impl CpuUse {
    /// Reads the counters now.
    pub(crate) fn now(servers: &[u32]) -> Result<Self, Error> {
        let mut server = None;
        for pid in servers {
            server = Some(server.unwrap_or(Duration::ZERO) + cpu_time(*pid)?);
        }
        Ok(Self {
            server,
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

    /// Machine time used by neither the servers nor this process.
    pub(crate) fn other(&self) -> Duration {
        self.machine
            .saturating_sub(self.load)
            .saturating_sub(self.server.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_this_process_and_the_machine() {
        let before = super::CpuUse::now(&[std::process::id()]).expect("cpu");
        let after = super::CpuUse::now(&[std::process::id()]).expect("cpu");
        assert!(after.since(&before).server.is_some());
    }
}
