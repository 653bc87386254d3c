//! Graceful shutdown for services: deregister when SIGINT or SIGTERM arrives, so callers
//! stop being sent to an instance that is going away instead of waiting for its TTL.

use waypost_model::DeregisterResponse;

use crate::{Error, Registration};

/// Resolves on the first SIGINT (Ctrl-C) or SIGTERM after the call. The signal handlers are
/// installed by the call itself, not when the future is first polled, so a signal that
/// arrives in between is not lost (and does not kill the process with the default action).
/// Call it inside a Tokio runtime.
///
/// ```no_run
/// # #[tokio::main]
/// # async fn main() {
/// let stop = waypost_client::shutdown_signal(); // listening from here on
/// // ... start serving ...
/// stop.await;
/// println!("stopping");
/// # }
/// ```
pub fn shutdown_signal() -> impl Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        // A handler that cannot be installed leaves that signal's default action in place.
        let mut interrupt = signal(SignalKind::interrupt()).ok();
        let mut terminate = signal(SignalKind::terminate()).ok();
        async move {
            let interrupted = async {
                match interrupt.as_mut() {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending().await,
                }
            };
            let terminated = async {
                match terminate.as_mut() {
                    Some(s) => drop(s.recv().await),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                () = interrupted => {}
                () = terminated => {}
            }
        }
    }
    #[cfg(not(unix))]
    {
        async {
            if tokio::signal::ctrl_c().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
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
