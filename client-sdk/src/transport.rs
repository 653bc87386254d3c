//! The one place that speaks HTTP to the control plane: endpoint rotation and fail-over,
//! JSON and problem+json decoding, the event-stream request, and the retry timing shared by the
//! heartbeat task and the watch.

use std::{
    path::PathBuf,
    sync::atomic::{AtomicUsize, Ordering},
    time::Duration,
};

use futures_util::Stream;
use reqwest::header;
use serde::{Serialize, de::DeserializeOwned};
use url::Url;
use waypost_model::Problem;

use crate::Error;

/// What requests need; shared with background tasks, which must not keep the [`Client`]
/// itself alive (the heartbeat task ends when the last client and handle are gone).
#[derive(Debug)]
pub(crate) struct Transport {
    http: reqwest::Client,
    endpoints: Vec<Url>,
    /// The endpoint that answered last; calls start there.
    preferred: AtomicUsize,
    timeout: Duration,
}

/// The HTTP method of a call (reqwest's, named here so that only this module names reqwest).
pub(crate) use reqwest::Method;

/// An event stream's body, as it arrives.
pub(crate) type BodyChunks = reqwest::Result<bytes::Bytes>;

/// What the transport is built from: [`ClientBuilder`](crate::ClientBuilder)'s checked settings.
pub(crate) struct Settings {
    pub(crate) endpoints: Vec<Url>,
    pub(crate) timeout: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) user_agent: String,
    pub(crate) token: Option<String>,
    pub(crate) ca_cert: Option<PathBuf>,
    pub(crate) client_cert: Option<(PathBuf, PathBuf)>,
}

impl Transport {
    /// Builds the HTTP client: the token as a default (sensitive) header, the CA certificates
    /// instead of the system's roots, the client certificate (mTLS). No request is made.
    pub(crate) fn connect(settings: Settings) -> Result<Self, Error> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(settings.connect_timeout)
            .user_agent(settings.user_agent)
            // Redirects are followed by `call_within`, once: reqwest's own would drop the
            // token on the way to another host or port (a cluster member's 307 to its leader).
            .redirect(reqwest::redirect::Policy::none());
        if let Some(token) = &settings.token {
            let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| {
                    Error::Config("the token has characters a header cannot carry".into())
                })?;
            value.set_sensitive(true);
            let headers =
                reqwest::header::HeaderMap::from_iter([(reqwest::header::AUTHORIZATION, value)]);
            http = http.default_headers(headers);
        }
        let read = |path: &PathBuf| {
            std::fs::read(path)
                .map_err(|e| Error::Config(format!("cannot read {}: {e}", path.display())))
        };
        if let Some(path) = &settings.ca_cert {
            let certs = reqwest::Certificate::from_pem_bundle(&read(path)?)
                .ok()
                .filter(|c| !c.is_empty())
                .ok_or_else(|| {
                    Error::Config(format!("{} holds no PEM certificate", path.display()))
                })?;
            http = http.tls_certs_only(certs);
        }
        if let Some((cert, key)) = &settings.client_cert {
            let mut pem = read(cert)?;
            pem.push(b'\n');
            pem.extend(read(key)?);
            let identity = reqwest::Identity::from_pem(&pem).map_err(|e| {
                Error::Config(format!(
                    "client certificate {} with key {}: {e}",
                    cert.display(),
                    key.display()
                ))
            })?;
            http = http.identity(identity);
        }
        let http = http
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client: {e}")))?;
        Ok(Self {
            http,
            endpoints: settings.endpoints,
            preferred: AtomicUsize::new(0),
            timeout: settings.timeout,
        })
    }

    pub(crate) fn endpoints(&self) -> &[Url] {
        &self.endpoints
    }

    /// Opens `GET {base}/watch` as an event stream (no overall timeout: the caller bounds
    /// silence instead), resuming after `last_event_id` when given.
    pub(crate) async fn open_events(
        &self,
        base: &Url,
        query: &[(String, String)],
        last_event_id: Option<&str>,
    ) -> Result<impl Stream<Item = reqwest::Result<bytes::Bytes>> + use<>, Error> {
        let url = Self::url(base, &["watch"], query);
        let mut request = self
            .http
            .get(url)
            .header(header::ACCEPT, "text/event-stream");
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id);
        }
        let response = request.send().await.map_err(|source| Error::Transport {
            endpoint: base.to_string(),
            source,
        })?;
        if !response.status().is_success() {
            let status = response.status().as_u16();
            return Err(read::<serde_json::Value>(base, response)
                .await
                .err()
                .unwrap_or_else(|| Error::Unexpected {
                    endpoint: base.to_string(),
                    status,
                    body: "a JSON body instead of an event stream".into(),
                }));
        }
        Ok(response.bytes_stream())
    }
    /// The endpoints to try for one call, preferred first.
    pub(crate) fn rotation(&self) -> impl Iterator<Item = (usize, &Url)> {
        let n = self.endpoints.len();
        let start = self.preferred.load(Ordering::Relaxed) % n;
        (0..n).map(move |i| {
            let idx = (start + i) % n;
            (idx, &self.endpoints[idx])
        })
    }

    /// Remembers the endpoint that answered, so the next call starts there.
    pub(crate) fn prefer(&self, idx: usize) {
        self.preferred.store(idx, Ordering::Relaxed);
    }

    /// `base` with path segments appended (each percent-encoded) and query pairs added.
    pub(crate) fn url(base: &Url, segments: &[&str], query: &[(String, String)]) -> Url {
        let mut url = base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// One call with fail-over: endpoints are tried in turn while the failure is one another
    /// endpoint may not have (no connection, timeout, 502/503/504/429). Every call here is
    /// idempotent by instance identity, so repeating it elsewhere is safe.
    pub(crate) async fn call<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<&B>,
    ) -> Result<T, Error> {
        self.call_within(method, segments, query, body, Duration::ZERO)
            .await
    }

    /// [`Self::call`] for a request the server may hold for up to `longer` beyond the usual
    /// timeout (a wait for sidecars).
    pub(crate) async fn call_within<T: DeserializeOwned, B: Serialize + ?Sized>(
        &self,
        method: Method,
        segments: &[&str],
        query: &[(String, String)],
        body: Option<&B>,
        longer: Duration,
    ) -> Result<T, Error> {
        let mut last = None;
        let mut tried = 0;
        for (idx, base) in self.rotation() {
            tried += 1;
            let send = |url: Url| {
                let mut request = self
                    .http
                    .request(method.clone(), url)
                    .timeout(self.timeout + longer)
                    .header(header::ACCEPT, "application/json");
                if let Some(body) = body {
                    request = request.json(body);
                }
                request.send()
            };
            let url = Self::url(base, segments, query);
            let mut sent = send(url.clone()).await;
            // A cluster member that does not lead answers a membership change with a 307 to
            // the same path on the leader: followed once, with the same method, body and token.
            if let Ok(response) = &sent
                && let Some(location) = redirect(&url, response)
            {
                sent = send(location).await;
            }
            let outcome = match sent {
                Ok(response) => read(base, response).await,
                Err(source) => Err(Error::Transport {
                    endpoint: base.to_string(),
                    source,
                }),
            };
            match outcome {
                Ok(value) => {
                    self.prefer(idx);
                    return Ok(value);
                }
                Err(err) if err.is_retryable() => {
                    tracing::debug!(endpoint = %base, %err, "trying the next endpoint");
                    last = Some(err);
                }
                Err(err) => {
                    // The server answered and refused: it is up, so keep it preferred.
                    self.prefer(idx);
                    return Err(err);
                }
            }
        }
        let last = last.expect("at least one endpoint is configured");
        Err(Error::Unavailable {
            tried,
            last: Box::new(last),
        })
    }
}

/// Where a 307 or 308 answer to a request for `url` points (relative locations resolved), if
/// the token may follow: the same scheme only, so that a token sent over TLS is never sent
/// again in clear text. (A control plane redirects to its cluster's leader, which the members
/// name in their own configuration with the scheme they all use.)
fn redirect(url: &Url, response: &reqwest::Response) -> Option<Url> {
    if !matches!(response.status().as_u16(), 307 | 308) {
        return None;
    }
    let location = response.headers().get(header::LOCATION)?.to_str().ok()?;
    url.join(location)
        .ok()
        .filter(|u| u.scheme() == url.scheme())
}

/// Reads a JSON answer, or turns a refusal into [`Error::Problem`].
pub(crate) async fn read<T: DeserializeOwned>(
    base: &Url,
    response: reqwest::Response,
) -> Result<T, Error> {
    let status = response.status();
    let bytes = response.bytes().await.map_err(|source| Error::Transport {
        endpoint: base.to_string(),
        source,
    })?;
    let snippet = || {
        let text = String::from_utf8_lossy(&bytes);
        text.chars().take(200).collect::<String>()
    };
    if status.is_success() {
        return serde_json::from_slice(&bytes).map_err(|e| Error::Unexpected {
            endpoint: base.to_string(),
            status: status.as_u16(),
            body: format!("{e}: {}", snippet()),
        });
    }
    match serde_json::from_slice::<Problem>(&bytes) {
        Ok(problem) => Err(Error::Problem {
            endpoint: base.to_string(),
            status: status.as_u16(),
            problem,
        }),
        Err(_) => Err(Error::Unexpected {
            endpoint: base.to_string(),
            status: status.as_u16(),
            body: snippet(),
        }),
    }
}

/// A delay of `base * 2^(attempt-1)`, at most `cap`, with jitter: a random point in its upper
/// half, so that many clients that failed together do not retry together.
pub(crate) fn backoff(attempt: u32, base: Duration, cap: Duration) -> Duration {
    let exp = base.saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let full = exp.min(cap);
    full.mul_f64(rand::random_range(0.5..=1.0))
}

/// `interval` shortened by up to 15%, so instances started together spread their heartbeats
/// and a heartbeat never arrives later than the interval the control plane asked for.
pub(crate) fn jitter(interval: Duration) -> Duration {
    interval.mul_f64(rand::random_range(0.85..=1.0))
}
