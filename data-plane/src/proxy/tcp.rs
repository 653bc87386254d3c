//! The TCP proxy: explicit routes (`listen = "127.0.0.1:7001", service = "db"`). Each accepted
//! connection goes to an `up` instance chosen by the same balancers as HTTP (least request
//! counts open connections); a refused connect tries another instance. Bytes are copied both
//! ways; when one side finishes sending, the other side's write half is shut down (half-close),
//! and a connection silent in both directions for the idle timeout is closed.

use std::{
    net::SocketAddr,
    str::FromStr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::{sync::CancellationToken, task::TaskTracker};

use super::{
    ProxyConfig,
    balance::{Balancer, Endpoint},
};
use crate::snapshot::Snapshots;

/// One explicit TCP route.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TcpRoute {
    /// Where the sidecar listens.
    pub listen: SocketAddr,
    /// The service connections go to.
    pub service: String,
}

impl FromStr for TcpRoute {
    type Err = String;

    /// `127.0.0.1:7001=db`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (listen, service) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: write a TCP route as LISTEN=SERVICE"))?;
        Ok(Self {
            listen: listen
                .parse()
                .map_err(|e| format!("{s:?}: {listen:?} is not an address: {e}"))?,
            service: service.to_owned(),
        })
    }
}

/// The shared state of every TCP listener.
pub(crate) struct TcpProxy {
    pub(crate) snapshots: Snapshots,
    /// Shared with the admin's explain, which reads its stats.
    pub(crate) balancer: Arc<Balancer>,
    pub(crate) config: ProxyConfig,
    /// The sidecar's tasks: every relayed connection runs on one of them.
    pub(crate) tasks: TaskTracker,
    /// The sidecar's shutdown, which ends every relayed connection.
    pub(crate) shutdown: CancellationToken,
}

/// Accepts on `listener` for `service` until `stop` (the sidecar's shutdown, or the end of a
/// VIP listener). Connections are relayed on the sidecar's tasks until they end or the sidecar
/// shuts down, so they outlive a VIP listener that closes. With `port`, only instances on that
/// port are used (a VIP listener per port). Started by [`crate::listeners`] only.
pub(crate) async fn serve(
    listener: TcpListener,
    service: String,
    port: Option<u16>,
    proxy: Arc<TcpProxy>,
    stop: CancellationToken,
) {
    loop {
        let Some((client, _)) = waypost_runtime::net::accept(&listener, &stop).await else {
            return;
        };
        let (relaying, service) = (proxy.clone(), service.clone());
        proxy.tasks.spawn(async move {
            tokio::select! {
                () = relaying.shutdown.cancelled() => {}
                () = relaying.relay(client, &service, port) => {}
            }
        });
    }
}

impl TcpProxy {
    async fn relay(&self, client: TcpStream, service: &str, port: Option<u16>) {
        let mut endpoints: Vec<Endpoint> = {
            let snapshot = self.snapshots.current();
            let Some(view) = snapshot.services.get(service) else {
                tracing::debug!(%service, "no such service; closing the connection");
                return;
            };
            view.up
                .iter()
                .filter(|t| port.is_none_or(|p| t.instance.port == p))
                .filter_map(|t| {
                    Some(Endpoint {
                        id: t.instance.id.as_str().to_owned(),
                        addr: t.socket_addr()?,
                        weight: t.instance.weight,
                        h2c: false,
                        stats: Arc::default(),
                        policy: t.instance.policy,
                    })
                })
                .collect()
        };
        self.balancer.attach(service, &mut endpoints);
        let mut tried = Vec::new();
        let (upstream, stats) = loop {
            let Some(choice) =
                self.balancer
                    .choose(service, &endpoints, self.config.balance, &tried)
            else {
                tracing::debug!(%service, tried = tried.len(), "no instance reachable; closing");
                return;
            };
            let endpoint = &endpoints[choice.index];
            let connect = TcpStream::connect(endpoint.addr);
            match tokio::time::timeout(self.config.connect_timeout, connect).await {
                Ok(Ok(stream)) => {
                    self.balancer.succeeded(&endpoint.stats);
                    break (stream, endpoint.stats.clone());
                }
                _ => {
                    self.balancer.failed(&endpoint.stats);
                    tried.push(choice.index);
                }
            }
        };
        stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let _ = upstream.set_nodelay(true);
        copy_both_ways(client, upstream, self.config.idle_timeout).await;
        stats.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Copies both ways with half-close, until both directions end or both are silent for `idle`.
pub(crate) async fn copy_both_ways(a: TcpStream, b: TcpStream, idle: Duration) {
    let started = Instant::now();
    let last = Arc::new(AtomicU64::new(0));
    let watchdog = async {
        loop {
            tokio::time::sleep(idle / 4).await;
            let quiet = started.elapsed().as_millis() as u64 - last.load(Ordering::Relaxed);
            if quiet >= idle.as_millis() as u64 {
                return;
            }
        }
    };
    tokio::select! {
        () = copy(a, b, Activity { last: &last, started }) => {}
        () = watchdog => tracing::debug!("TCP connection idle; closing"),
    }
}

/// Where the copies note that bytes moved (for the idle timeout).
#[derive(Clone, Copy)]
struct Activity<'a> {
    last: &'a AtomicU64,
    started: Instant,
}

impl Activity<'_> {
    fn now(&self) {
        let now = self.started.elapsed().as_millis() as u64;
        self.last.store(now, Ordering::Relaxed);
    }
}

/// On Linux, bytes move socket to pipe to socket inside the kernel (`splice(2)`), never
/// through the proxy's memory: loopback throughput then comes close to a direct connection
/// (BENCHMARKS.md). Safe wrappers from rustix; each direction waits on Tokio's readiness.
#[cfg(target_os = "linux")]
async fn copy(a: TcpStream, b: TcpStream, activity: Activity<'_>) {
    let forward = async {
        if let Err(err) = splice::one_way(&a, &b, activity).await {
            tracing::debug!(%err, "TCP proxy: copy to the upstream ended");
        }
        let _ = rustix::net::shutdown(&b, rustix::net::Shutdown::Write);
    };
    let backward = async {
        if let Err(err) = splice::one_way(&b, &a, activity).await {
            tracing::debug!(%err, "TCP proxy: copy to the client ended");
        }
        let _ = rustix::net::shutdown(&a, rustix::net::Shutdown::Write);
    };
    tokio::join!(forward, backward);
}

#[cfg(target_os = "linux")]
mod splice {
    use std::io;

    use rustix::pipe::{PipeFlags, SpliceFlags};
    use tokio::{io::Interest, net::TcpStream};

    use super::Activity;

    /// The pipe between the two sockets (the most an unprivileged process may ask for by
    /// default; a smaller pipe still works).
    const PIPE_SIZE: usize = 1 << 20;

    /// Moves bytes from `from` to `to` until `from` ends.
    pub(super) async fn one_way(
        from: &TcpStream,
        to: &TcpStream,
        activity: Activity<'_>,
    ) -> io::Result<()> {
        let (pipe_out, pipe_in) =
            rustix::pipe::pipe_with(PipeFlags::NONBLOCK | PipeFlags::CLOEXEC)?;
        let room = rustix::pipe::fcntl_setpipe_size(&pipe_in, PIPE_SIZE).unwrap_or(64 * 1024);
        let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
        loop {
            // Fill the pipe from the source; 0 is the source's end of stream.
            let mut held = from
                .async_io(Interest::READABLE, || {
                    Ok(rustix::pipe::splice(
                        from, None, &pipe_in, None, room, flags,
                    )?)
                })
                .await?;
            if held == 0 {
                return Ok(());
            }
            activity.now();
            // Empty it into the destination before reading more.
            while held > 0 {
                held -= to
                    .async_io(Interest::WRITABLE, || {
                        Ok(rustix::pipe::splice(
                            &pipe_out, None, to, None, held, flags,
                        )?)
                    })
                    .await?;
            }
        }
    }
}

/// Elsewhere, through a buffer per direction.
#[cfg(not(target_os = "linux"))]
use buffered::copy;

#[cfg(not(target_os = "linux"))]
mod buffered {
    use std::{
        pin::Pin,
        task::{Context, Poll},
    };

    use tokio::{
        io::{AsyncRead, AsyncWriteExt, BufReader, ReadBuf},
        net::TcpStream,
    };

    use super::Activity;

    /// The copy buffer per direction.
    const COPY_BUFFER: usize = 256 * 1024;

    pub(super) async fn copy(a: TcpStream, b: TcpStream, activity: Activity<'_>) {
        let (a_read, mut a_write) = a.into_split();
        let (b_read, mut b_write) = b.into_split();
        // Large buffers: bulk transfers then cost far fewer system calls per byte.
        let mut a_read = BufReader::with_capacity(
            COPY_BUFFER,
            Active {
                inner: a_read,
                activity,
            },
        );
        let mut b_read = BufReader::with_capacity(
            COPY_BUFFER,
            Active {
                inner: b_read,
                activity,
            },
        );
        let forward = async {
            let _ = tokio::io::copy_buf(&mut a_read, &mut b_write).await;
            let _ = b_write.shutdown().await;
        };
        let backward = async {
            let _ = tokio::io::copy_buf(&mut b_read, &mut a_write).await;
            let _ = a_write.shutdown().await;
        };
        tokio::join!(forward, backward);
    }

    /// A read half that records when it last read something.
    struct Active<'a, R> {
        inner: R,
        activity: Activity<'a>,
    }

    impl<R: AsyncRead + Unpin> AsyncRead for Active<'_, R> {
        fn poll_read(
            mut self: Pin<&mut Self>,
            cx: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<std::io::Result<()>> {
            let before = buf.filled().len();
            let polled = Pin::new(&mut self.inner).poll_read(cx, buf);
            if buf.filled().len() > before {
                self.activity.now();
            }
            polled
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_parse() {
        let r: TcpRoute = "127.0.0.1:7001=db".parse().unwrap();
        assert_eq!(r.listen, "127.0.0.1:7001".parse().unwrap());
        assert_eq!(r.service, "db");
        assert!("127.0.0.1:7001".parse::<TcpRoute>().is_err());
        assert!("nowhere=db".parse::<TcpRoute>().is_err());
    }
}
