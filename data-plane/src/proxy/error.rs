//! The one place where proxy failures become HTTP answers: RFC 9457 problem+json with a stable
//! `code`, and the same code in `x-waypost-proxy-error` so that a caller can tell the proxy's
//! own refusals from an upstream's answers.

use bytes::Bytes;
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use waypost_model::{ErrorCode, Problem};

use super::ProxyBody;

/// Why the proxy answered itself.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The request named no service (no usable Host, no path prefix).
    #[error("the request names no service: give Host: <service> or <service>.service.<domain>")]
    NoRoute,
    /// No service by that name in the registry.
    #[error("no service {0:?} is registered")]
    UnknownService(String),
    /// The service has no instance that takes work.
    #[error("service {0:?} has no healthy instance")]
    NoHealthyInstance(String),
    /// Connecting or talking to the upstream failed (after any retry).
    #[error("service {service:?}: {detail}")]
    Unavailable {
        /// The service.
        service: String,
        /// What failed.
        detail: String,
    },
    /// The upstream did not answer within the request timeout.
    #[error("service {0:?} did not answer in time")]
    Timeout(String),
}

impl ProxyError {
    /// The stable code; its status is [`ErrorCode::status`].
    fn code(&self) -> ErrorCode {
        match self {
            Self::NoRoute | Self::UnknownService(_) => ErrorCode::UnknownService,
            Self::NoHealthyInstance(_) => ErrorCode::NoHealthyInstance,
            Self::Unavailable { .. } => ErrorCode::UpstreamUnavailable,
            Self::Timeout(_) => ErrorCode::UpstreamTimeout,
        }
    }

    /// The answer to send.
    pub fn into_response(self) -> Response<ProxyBody> {
        let code = self.code();
        let status = StatusCode::from_u16(code.status()).unwrap_or(StatusCode::BAD_GATEWAY);
        let problem = Problem::new(code, status.as_u16(), self.to_string());
        let body = serde_json::to_vec(&problem).unwrap_or_default();
        let mut response = Response::new(
            Full::new(Bytes::from(body))
                .map_err(|never| match never {})
                .boxed_unsync(),
        );
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        headers.insert(
            "x-waypost-proxy-error",
            HeaderValue::from_static(code.as_str()),
        );
        response
    }
}
