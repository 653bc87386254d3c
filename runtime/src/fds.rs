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

/// Raises the soft open-file limit to the hard limit. A refusal leaves the limit as it was:
/// the server still runs, with fewer connections possible.
pub fn raise_open_files() -> OpenFiles {
    let limit = getrlimit(Resource::Nofile);
    let before = limit.current;
    if limit.current == limit.maximum {
        return OpenFiles {
            before,
            now: before,
        };
    }
    let raised = Rlimit {
        current: limit.maximum,
        maximum: limit.maximum,
    };
    match setrlimit(Resource::Nofile, raised) {
        Ok(()) => OpenFiles {
            before,
            now: limit.maximum,
        },
        Err(_) => OpenFiles {
            before,
            now: before,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_limit() {
        let files = raise_open_files();
        let limit = getrlimit(Resource::Nofile);
        assert_eq!(files.now, limit.current);
        assert_eq!(limit.current, limit.maximum);
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
