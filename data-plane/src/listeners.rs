//! Every socket the sidecar listens on, in one place.
//!
//! At start, [`bind`] binds them all (DNS on UDP and TCP, admin, the HTTP proxy, the explicit
//! TCP routes) before any part of the sidecar runs: a port in use fails the start with nothing
//! half-started, and every address is known (port 0 becomes a real port) when the listening
//! line is logged. While the sidecar runs, [`serve_tcp`] owns the TCP proxy's listeners: the
//! explicit routes' for the sidecar's whole life and, in VIP mode, one on `VIP:port` for every
//! service that has a virtual IP and every port its `up` instances use, reconciled after each
//! snapshot. With the DNS name answering the VIP, any program that resolves
//! `payments.service.waypost` and connects reaches a healthy instance; inside 127.0.0.0/8 (the
//! default range) Linux needs no interface set-up.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use tokio::{
    net::{TcpListener, UdpSocket},
    task::JoinHandle,
};
use tokio_util::sync::CancellationToken;

use crate::{
    Config, SidecarError,
    proxy::tcp::{self, TcpProxy},
    snapshot::Snapshot,
};

/// The sockets bound at start, with their addresses.
#[derive(Debug)]
pub(crate) struct Bound {
    /// DNS over UDP and over TCP, on the same address.
    pub(crate) dns_udp: UdpSocket,
    pub(crate) dns_tcp: TcpListener,
    pub(crate) dns_addr: SocketAddr,
    pub(crate) admin: TcpListener,
    pub(crate) admin_addr: SocketAddr,
    pub(crate) http: TcpListener,
    pub(crate) http_addr: SocketAddr,
    /// The explicit TCP routes, in the configuration's order.
    pub(crate) tcp_routes: Vec<RouteListener>,
}

/// An explicit TCP route's listener.
#[derive(Debug)]
pub(crate) struct RouteListener {
    pub(crate) listener: TcpListener,
    pub(crate) addr: SocketAddr,
    pub(crate) service: String,
}

/// Binds every listener of `config`.
pub(crate) async fn bind(config: &Config) -> Result<Bound, SidecarError> {
    let dns_error = |source| SidecarError::Bind {
        what: "DNS",
        addr: config.dns_listen,
        source,
    };
    let (dns_udp, dns_tcp) = bind_dns(config.dns_listen).await.map_err(dns_error)?;
    let dns_addr = dns_udp.local_addr().map_err(dns_error)?;
    let (admin, admin_addr) = bind_tcp("admin", config.admin_listen).await?;
    let (http, http_addr) = bind_tcp("HTTP proxy", config.http_listen).await?;
    let mut tcp_routes = Vec::new();
    for route in &config.tcp {
        let (listener, addr) = bind_tcp("TCP proxy", route.listen).await?;
        tcp_routes.push(RouteListener {
            listener,
            addr,
            service: route.service.clone(),
        });
    }
    Ok(Bound {
        dns_udp,
        dns_tcp,
        dns_addr,
        admin,
        admin_addr,
        http,
        http_addr,
        tcp_routes,
    })
}

async fn bind_tcp(
    what: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), SidecarError> {
    let error = |source| SidecarError::Bind { what, addr, source };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

/// Binds UDP and TCP on `addr` (with port 0: a free port that both can use).
async fn bind_dns(addr: SocketAddr) -> std::io::Result<(UdpSocket, TcpListener)> {
    if addr.port() != 0 {
        return Ok((UdpSocket::bind(addr).await?, TcpListener::bind(addr).await?));
    }
    // A free UDP port may be taken for TCP: try a few.
    let mut last = None;
    for _ in 0..16 {
        let udp = UdpSocket::bind(addr).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(err) => last = Some(err),
        }
    }
    Err(last.unwrap_or_else(|| std::io::Error::other("no port free for both UDP and TCP")))
}

/// Starts the TCP proxy's listeners on its tasks: `routes` until shutdown, and with
/// `vip_mode` the VIP listeners, following the snapshot.
pub(crate) fn serve_tcp(routes: Vec<RouteListener>, vip_mode: bool, proxy: &Arc<TcpProxy>) {
    for route in routes {
        proxy.tasks.spawn(tcp::serve(
            route.listener,
            route.service,
            None,
            proxy.clone(),
            proxy.shutdown.clone(),
        ));
    }
    if vip_mode {
        proxy.tasks.spawn(follow_vips(proxy.clone()));
    }
}

/// An open VIP listener: its service, what closes it, and its task.
type VipListener = (String, CancellationToken, JoinHandle<()>);

/// Keeps the VIP listeners in line with the snapshot until shutdown.
async fn follow_vips(proxy: Arc<TcpProxy>) {
    let mut listening: HashMap<SocketAddr, VipListener> = HashMap::new();
    let mut changes = proxy.snapshots.clone();
    loop {
        let wanted = vip_addresses(&proxy.snapshots.current());
        listening.retain(|addr, (service, stop, task)| {
            let keep = wanted.get(addr) == Some(service) && !task.is_finished();
            if !keep {
                // Its connections go on (they run on the sidecar's tasks).
                stop.cancel();
                tracing::info!(%addr, %service, "VIP listener closed");
            }
            keep
        });
        for (addr, service) in wanted {
            if listening.contains_key(&addr) {
                continue;
            }
            match TcpListener::bind(addr).await {
                Ok(listener) => {
                    tracing::info!(%addr, %service, "VIP listener open");
                    let stop = proxy.shutdown.child_token();
                    let task = proxy.tasks.spawn(tcp::serve(
                        listener,
                        service.clone(),
                        Some(addr.port()),
                        proxy.clone(),
                        stop.clone(),
                    ));
                    listening.insert(addr, (service, stop, task));
                }
                // Tried again at the next snapshot.
                Err(err) => tracing::warn!(%addr, %service, %err, "cannot listen on a VIP"),
            }
        }
        tokio::select! {
            () = proxy.shutdown.cancelled() => break,
            () = changes.changed() => {}
        }
    }
    // Each listener's token is a child of the shutdown token: all of them are closing now.
}

/// `VIP:port` → service, for every service with a VIP and every port of its `up` instances.
fn vip_addresses(snapshot: &Snapshot) -> HashMap<SocketAddr, String> {
    let mut wanted = HashMap::new();
    for (name, view) in &snapshot.services {
        let Some(vip) = view.vip else { continue };
        for target in &view.up {
            wanted.insert(SocketAddr::new(vip, target.instance.port), name.clone());
        }
    }
    wanted
}
