//! The SDK's one error type. A control plane's refusal keeps its problem document, so callers
//! can branch on the stable [`ErrorCode`] instead of parsing messages.

use waypost_model::{ErrorCode, Problem};

/// Everything a [`Client`](crate::Client) call can fail with.
///
/// ```
/// use waypost_client::{Error, model::ErrorCode};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
/// let client = waypost_client::Client::new(&cp.url)?;
/// let err = client
///     .heartbeat(waypost_client::model::InstanceRef::by_id("web", "never-registered"))
///     .await
///     .unwrap_err();
/// assert_eq!(err.code(), Some(ErrorCode::InstanceNotFound));
/// assert!(err.is_not_found());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The client was configured wrongly (no endpoint, an endpoint that is not a URL...).
    #[error("invalid client configuration: {0}")]
    Config(String),
    /// The control plane refused the request with a problem document (RFC 9457).
    #[error("{endpoint} answered {status} {}: {}", .problem.code.as_str(), .problem.detail)]
    Problem {
        /// The control plane that answered.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The problem document, with its stable `code`.
        problem: Problem,
    },
    /// The control plane answered something this SDK cannot read (a proxy's error page, a
    /// newer server's shape...).
    #[error("{endpoint} answered {status} with an unexpected body: {body}")]
    Unexpected {
        /// The control plane that answered.
        endpoint: String,
        /// The HTTP status.
        status: u16,
        /// The start of the body, for the log.
        body: String,
    },
    /// No connection, a reset or a timeout talking to one control plane.
    #[error("{endpoint}: {source}")]
    Transport {
        /// The control plane tried.
        endpoint: String,
        /// What reqwest reported.
        #[source]
        source: reqwest::Error,
    },
    /// Every endpoint was tried and none answered; the last failure is kept.
    #[error("no control plane answered ({tried} tried); last: {last}")]
    Unavailable {
        /// How many endpoints were tried.
        tried: usize,
        /// The last endpoint's failure.
        last: Box<Error>,
    },
    /// The background task behind a handle has stopped (the runtime is shutting down).
    #[error("the registration's background task has stopped")]
    Closed,
}

impl Error {
    /// The server's stable problem code, when the server refused the request.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::model::{ErrorCode, RegisterRequest};
    ///
    /// let client = waypost_client::Client::new(&cp.url)?;
    /// let err = client
    ///     .register_once(&RegisterRequest::new("Not_A_Label", "127.0.0.1:80"))
    ///     .await
    ///     .unwrap_err();
    /// assert_eq!(err.code(), Some(ErrorCode::InvalidServiceName));
    /// # Ok(())
    /// # }
    /// ```
    pub fn code(&self) -> Option<ErrorCode> {
        match self {
            Self::Problem { problem, .. } => Some(problem.code),
            Self::Unavailable { last, .. } => last.code(),
            _ => None,
        }
    }

    /// `true` when the control plane does not know the instance (expired or never registered):
    /// the cue to register again.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), waypost_client::Error> {
    /// # let cp = waypost_control::testkit::TestControlPlane::in_memory(|_| {}).await;
    /// use waypost_client::model::InstanceRef;
    ///
    /// let client = waypost_client::Client::new(&cp.url)?;
    /// let err = client.deregister(InstanceRef::by_id("web", "gone")).await.unwrap_err();
    /// assert!(err.is_not_found());
    /// # Ok(())
    /// # }
    /// ```
    pub fn is_not_found(&self) -> bool {
        self.code() == Some(ErrorCode::InstanceNotFound)
    }

    /// `true` when another attempt (later, or at another endpoint) may succeed: transport
    /// failures and the server's own temporary refusals (503, 502, 504, 429).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // Nothing listens on port 1: a transport failure, worth retrying later.
    /// let client = waypost_client::Client::new("http://127.0.0.1:1").unwrap();
    /// let err = client.services().await.unwrap_err();
    /// assert!(err.is_retryable());
    /// # }
    /// ```
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Transport { .. } | Self::Unavailable { .. } => true,
            Self::Problem { status, .. } | Self::Unexpected { status, .. } => {
                matches!(status, 429 | 502 | 503 | 504)
            }
            Self::Config(_) | Self::Closed => false,
        }
    }
}
