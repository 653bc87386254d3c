//! The open-file limit. Every HTTP connection, `/watch` stream, proxied connection and DNS
//! socket is a file descriptor, and most systems start processes with a soft limit of 1,024,
//! far below `--max-connections` (10,000). The hard limit is the administrator's decision; the
//! soft one is only a default that a server may raise up to it, as Go's runtime and many
//! servers do at start. Both binaries do, so the limit to set is the hard one (`LimitNOFILE=`
//! in a systemd unit, `ulimit -Hn` in a shell, the container runtime's `nofile`).

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// The soft open-file limit before and after raising it to the hard limit (`None`: unlimited).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFiles {
    /// The soft limit the process started with.
    pub before: Option<u64>,
    /// The soft limit now.
    pub now: Option<u64>,
}

/// What to ask for when the hard limit is "unlimited": the kernel refuses a soft limit of
/// infinity for open files (it caps them at `fs.nr_open`, 1,048,576 by default on Linux).
const UNLIMITED_HARD: u64 = 1 << 20;

/// Raises the soft open-file limit to the hard limit (or to [`UNLIMITED_HARD`], then 65,536,
/// when the hard one is unlimited). A refusal leaves the limit as it was: the server still
/// runs, with fewer connections possible.
pub fn raise_open_files() -> OpenFiles {
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    let wanted: &[u64] = match limit.maximum {
        Some(max) => &[max],
        None => &[UNLIMITED_HARD, 65_536],
    };
    for &want in wanted {
        if before.is_none_or(|now| now >= want) {
            break;
        }
        let raised = Rlimit {
            current: Some(want),
            maximum: limit.maximum,
        };
        if setrlimit(Resource::Nofile, raised).is_ok() {
            return OpenFiles {
                before,
                now: Some(want),
            };
        }
    }
    OpenFiles {
        before,
        now: before,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_is_raised_as_far_as_allowed_and_reported() {
        let files = raise_open_files();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(files.now, limit.current, "what it reports is what holds");
        let at_least = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(a), Some(b)) => a >= b,
        };
        assert!(at_least(files.now, files.before), "{files:?}");
        if limit.maximum.is_some() {
            assert_eq!(limit.current, limit.maximum);
        }
        // Raising again changes nothing.
        assert_eq!(
            raise_open_files(),
            OpenFiles {
                before: files.now,
                now: files.now
            }
        );
    }
}
