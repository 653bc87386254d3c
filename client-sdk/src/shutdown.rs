//! Graceful shutdown for services: deregister when SIGINT or SIGTERM arrives, so callers
//! stop being sent to an instance that is going away instead of waiting for its TTL.

use waypost_model::DeregisterResponse;

use crate::{Error, Registration};

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() {
/// waypost_client::shutdown_signal().await;
/// println!("stopping");
/// # }
/// ```
pub async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}

/// Waits for SIGINT or SIGTERM, then deregisters every registration; returns each outcome,
/// in order. Run it as the last step of `main` (or race it with your server's own shutdown).
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() -> Result<(), waypost_client::Error> {
/// use waypost_client::{Client, deregister_on_shutdown, model::RegisterRequest};
///
/// let client = Client::new("http://127.0.0.1:9000")?;
/// let me = client.register(RegisterRequest::new("echo", "http://127.0.0.1:8080")).await?;
/// for outcome in deregister_on_shutdown(vec![me]).await {
///     outcome?;
/// }
/// # Ok(())
/// # }
/// ```
pub async fn deregister_on_shutdown(
    registrations: Vec<Registration>,
) -> Vec<Result<DeregisterResponse, Error>> {
    shutdown_signal().await;
    let mut outcomes = Vec::with_capacity(registrations.len());
    for registration in registrations {
        outcomes.push(registration.deregister().await);
    }
    outcomes
}
