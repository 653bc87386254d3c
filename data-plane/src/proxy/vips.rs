//! VIP mode: a TCP listener on `VIP:port` for every service that has a virtual IP and every
//! port its `up` instances use, reconciled after each snapshot. With the DNS name answering the
//! VIP, any program that resolves `payments.service.waypost` and connects reaches a healthy
//! instance. Inside 127.0.0.0/8 (the default range) Linux needs no interface set-up.

use std::{collections::HashMap, net::SocketAddr, sync::Arc};

use tokio::{net::TcpListener, task::JoinHandle};
use tokio_util::sync::CancellationToken;

use super::tcp::{self, TcpProxy};
use crate::snapshot::Snapshots;

/// Follows the snapshot and keeps the VIP listeners in line with it.
pub(crate) async fn run(snapshots: Snapshots, proxy: Arc<TcpProxy>, shutdown: CancellationToken) {
    let mut listening: HashMap<SocketAddr, (String, JoinHandle<()>)> = HashMap::new();
    let mut changes = snapshots.clone();
    loop {
        let snapshot = snapshots.current();
        let mut wanted: HashMap<SocketAddr, String> = HashMap::new();
        for (name, view) in &snapshot.services {
            let Some(vip) = view.vip else { continue };
            for target in &view.up {
                wanted.insert(SocketAddr::new(vip, target.instance.port), name.clone());
            }
        }
        drop(snapshot);
        listening.retain(|addr, (service, task)| {
            let keep = wanted.get(addr) == Some(service) && !task.is_finished();
            if !keep {
                task.abort();
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
                    let task = tokio::spawn(tcp::serve(
                        listener,
                        service.clone(),
                        Some(addr.port()),
                        proxy.clone(),
                        shutdown.clone(),
                    ));
                    listening.insert(addr, (service, task));
                }
                // Tried again at the next snapshot.
                Err(err) => tracing::warn!(%addr, %service, %err, "cannot listen on a VIP"),
            }
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = changes.changed() => {}
        }
    }
    for (_, (_, task)) in listening {
        task.abort();
    }
}
