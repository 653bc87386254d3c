//! [`ClientBuilder`]: endpoints, timeouts, identity and TLS settings, checked once; the HTTP
//! client itself is made by the transport.

use std::{path::PathBuf, time::Duration};

use url::Url;

use crate::{
    Error,
    client::Client,
    transport::{Settings, Transport},
};

/// How long one request may take, unless [`ClientBuilder::timeout`] says otherwise.
///
/// ```
/// assert_eq!(waypost_client::DEFAULT_TIMEOUT.as_secs(), 5);
/// ```
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long connecting to one endpoint may take before the next one is tried.
///
/// ```
/// assert_eq!(waypost_client::DEFAULT_CONNECT_TIMEOUT.as_secs(), 2);
/// ```
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// Builds a [`Client`].
///
/// ```
/// use std::time::Duration;
///
/// # fn main() -> Result<(), waypost_client::Error> {
/// let client = waypost_client::Client::builder()
///     .endpoint("http://127.0.0.1:9000")
///     .endpoint("http://127.0.0.1:9001")
///     .timeout(Duration::from_secs(3))
///     .user_agent("billing/1.4")
///     .build()?;
/// assert_eq!(client.endpoints().len(), 2);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct ClientBuilder {
    endpoints: Vec<String>,
    timeout: Duration,
    connect_timeout: Duration,
    user_agent: String,
    token: Option<String>,
    ca_cert: Option<PathBuf>,
    client_cert: Option<(PathBuf, PathBuf)>,
}

impl std::fmt::Debug for ClientBuilder {
    // By hand, so that the token never shows.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("endpoints", &self.endpoints)
            .field("timeout", &self.timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field("user_agent", &self.user_agent)
            .field("token", &self.token.as_ref().map(|_| "[redacted]"))
            .field("ca_cert", &self.ca_cert)
            .field("client_cert", &self.client_cert)
            .finish()
    }
}

impl Default for ClientBuilder {
    fn default() -> Self {
        Self {
            endpoints: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            user_agent: concat!("waypost-client/", env!("CARGO_PKG_VERSION")).to_owned(),
            token: None,
            ca_cert: None,
            client_cert: None,
        }
    }
}

impl ClientBuilder {
    /// Adds a control-plane base URL (`http://127.0.0.1:9000`). Requests go to the first that
    /// answers, and stay there until it fails.
    ///
    /// ```
    /// let client = waypost_client::Client::builder()
    ///     .endpoint("http://127.0.0.1:9000")
    ///     .endpoint("http://10.0.0.2:9000/registry") // behind a path prefix
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(client.endpoints()[1].as_str(), "http://10.0.0.2:9000/registry/");
    /// ```
    pub fn endpoint(mut self, url: impl Into<String>) -> Self {
        self.endpoints.push(url.into());
        self
    }

    /// The limit for one request to one endpoint (default 5 s). Watches are exempt: they are
    /// bounded by an idle timeout instead.
    ///
    /// ```
    /// let builder = waypost_client::Client::builder()
    ///     .endpoint("http://127.0.0.1:9000")
    ///     .timeout(std::time::Duration::from_secs(1));
    /// # builder.build().unwrap();
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The limit for connecting to one endpoint (default 2 s).
    ///
    /// ```
    /// let builder = waypost_client::Client::builder()
    ///     .endpoint("http://127.0.0.1:9000")
    ///     .connect_timeout(std::time::Duration::from_millis(500));
    /// # builder.build().unwrap();
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// The `User-Agent` header (default `waypost-client/<version>`).
    ///
    /// ```
    /// let builder = waypost_client::Client::builder()
    ///     .endpoint("http://127.0.0.1:9000")
    ///     .user_agent("billing/1.4");
    /// # builder.build().unwrap();
    /// ```
    pub fn user_agent(mut self, user_agent: impl Into<String>) -> Self {
        self.user_agent = user_agent.into();
        self
    }

    /// The bearer token sent with every request, for a control plane with authorization on.
    /// It is marked sensitive, so it does not show in debug output of requests.
    ///
    /// ```
    /// let builder = waypost_client::Client::builder()
    ///     .endpoint("http://127.0.0.1:9000")
    ///     .token("s3cr3t-token");
    /// # builder.build().unwrap();
    /// ```
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    /// For `https://` endpoints: trust only the CA certificates in this PEM file (instead of
    /// the system's roots).
    pub fn ca_cert(mut self, path: impl Into<PathBuf>) -> Self {
        self.ca_cert = Some(path.into());
        self
    }

    /// For a control plane that asks for client certificates (mTLS): the PEM certificate
    /// chain and private key to present.
    pub fn client_cert(mut self, cert: impl Into<PathBuf>, key: impl Into<PathBuf>) -> Self {
        self.client_cert = Some((cert.into(), key.into()));
        self
    }

    /// Fills what is not set yet from the environment, as Consul's client does:
    /// `WAYPOST_TOKEN`, `WAYPOST_CA_CERT`, and `WAYPOST_CLIENT_CERT` with
    /// `WAYPOST_CLIENT_KEY`. [`Client::new`] calls this.
    ///
    /// ```
    /// let client = waypost_client::Client::builder()
    ///     .endpoint("http://127.0.0.1:9000")
    ///     .env()
    ///     .build()
    ///     .unwrap();
    /// # drop(client);
    /// ```
    pub fn env(self) -> Self {
        self.env_from(|name| std::env::var(name).ok())
    }

    /// [`Self::env`] with the variables read through `var`.
    fn env_from(mut self, var: impl Fn(&str) -> Option<String>) -> Self {
        let var = |name: &str| var(name).filter(|v| !v.is_empty());
        if self.token.is_none() {
            self.token = var("WAYPOST_TOKEN");
        }
        if self.ca_cert.is_none() {
            self.ca_cert = var("WAYPOST_CA_CERT").map(PathBuf::from);
        }
        if self.client_cert.is_none()
            && let (Some(cert), Some(key)) = (var("WAYPOST_CLIENT_CERT"), var("WAYPOST_CLIENT_KEY"))
        {
            self.client_cert = Some((cert.into(), key.into()));
        }
        self
    }

    /// Checks the endpoints and builds the client. No request is made.
    ///
    /// ```
    /// use waypost_client::Client;
    ///
    /// assert!(Client::builder().build().is_err()); // no endpoint
    /// assert!(Client::builder().endpoint("ftp://example").build().is_err());
    /// assert!(Client::builder().endpoint("http://127.0.0.1:9000").build().is_ok());
    /// ```
    pub fn build(self) -> Result<Client, Error> {
        if self.endpoints.is_empty() {
            return Err(Error::Config("give at least one endpoint".into()));
        }
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for raw in &self.endpoints {
            let mut url = Url::parse(raw)
                .map_err(|e| Error::Config(format!("endpoint {raw:?} is not a URL: {e}")))?;
            if !matches!(url.scheme(), "http" | "https") || url.cannot_be_a_base() {
                return Err(Error::Config(format!(
                    "endpoint {raw:?} must be an http:// or https:// URL"
                )));
            }
            // A base path (a control plane behind a prefix) keeps its segments; calls append.
            if !url.path().ends_with('/') {
                let path = format!("{}/", url.path());
                url.set_path(&path);
            }
            endpoints.push(url);
        }
        let transport = Transport::connect(Settings {
            endpoints,
            timeout: self.timeout,
            connect_timeout: self.connect_timeout,
            user_agent: self.user_agent,
            token: self.token,
            ca_cert: self.ca_cert,
            client_cert: self.client_cert,
        })?;
        Ok(Client::over(transport))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_environment_fills_only_what_is_unset_and_the_token_never_shows() {
        let vars = |name: &str| {
            Some(
                match name {
                    "WAYPOST_TOKEN" => "from-env",
                    "WAYPOST_CA_CERT" => "/etc/ca.pem",
                    "WAYPOST_CLIENT_CERT" => "/etc/c.pem",
                    "WAYPOST_CLIENT_KEY" => "/etc/k.pem",
                    _ => return None,
                }
                .to_owned(),
            )
        };
        let b = ClientBuilder::default().env_from(vars);
        assert_eq!(b.token.as_deref(), Some("from-env"));
        assert_eq!(b.ca_cert, Some(PathBuf::from("/etc/ca.pem")));
        assert_eq!(
            b.client_cert,
            Some((PathBuf::from("/etc/c.pem"), PathBuf::from("/etc/k.pem")))
        );
        assert!(!format!("{b:?}").contains("from-env"));
        let b = ClientBuilder::default().token("given").env_from(vars);
        assert_eq!(b.token.as_deref(), Some("given"));
        // A key without its certificate (or an empty value) is not half-used.
        let b = ClientBuilder::default()
            .env_from(|n| (n == "WAYPOST_CLIENT_KEY" || n == "WAYPOST_TOKEN").then(String::new));
        assert_eq!((b.token, b.client_cert), (None, None));
    }
}
