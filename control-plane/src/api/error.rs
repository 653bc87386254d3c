//! `ApiError`: the only way an error becomes an HTTP response. Every rejection (bad JSON, bad
//! query, unknown route, registry refusal) passes through here, so every 4xx and 5xx has the
//! same `application/problem+json` body with a stable `code`.

use axum::{
    Json,
    extract::rejection::{BytesRejection, JsonRejection, PathRejection, QueryRejection},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use waypost_model::{ErrorCode, FieldError, Problem};

use crate::{auth::Denied, cluster::ClusterError, command::Reply, registry::RegistryError};

/// An error answer: a stable code (which names the status, [`ErrorCode::status`]) and a
/// detail sentence.
#[derive(Debug)]
pub struct ApiError {
    code: ErrorCode,
    detail: String,
}

impl ApiError {
    /// An error with `code`, answered with the code's status.
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }

    fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }

    /// A bad query parameter.
    pub fn query(detail: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidQuery, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let detail = if self.code == ErrorCode::Internal {
            // Internal details stay in the log.
            tracing::error!(detail = %self.detail, "internal error");
            "internal error; see the control plane's log".to_owned()
        } else {
            self.detail
        };
        let problem = Problem::new(self.code, status.as_u16(), detail);
        (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            Json(problem),
        )
            .into_response()
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::new(e.code, e.to_string())
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Field(f) => f.into(),
            RegistryError::NotFound { .. } => Self::new(ErrorCode::InstanceNotFound, e.to_string()),
            RegistryError::Full(_) => Self::new(ErrorCode::RegistryFull, e.to_string()),
            RegistryError::ServiceFull { .. } => Self::new(ErrorCode::ServiceFull, e.to_string()),
            RegistryError::StoreUnavailable => {
                Self::new(ErrorCode::StoreUnavailable, e.to_string())
            }
        }
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Registry(r) => r.into(),
            ClusterError::NoLeader(_) => Self::new(ErrorCode::NoLeader, e.to_string()),
        }
    }
}

impl ApiError {
    /// A reply that is not the kind the handler asked for: a bug (or a log written by a
    /// different version), never the client's fault.
    pub(crate) fn unexpected(reply: &Reply) -> Self {
        Self::new(
            ErrorCode::Internal,
            format!("unexpected reply from the state machine: {reply:?}"),
        )
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        Self::new(ErrorCode::Forbidden, d.to_string())
    }
}

impl From<JsonRejection> for ApiError {
    fn from(r: JsonRejection) -> Self {
        // axum already picks the right status per rejection; name it with our code.
        let status = r.status();
        let code = match status {
            StatusCode::BAD_REQUEST => ErrorCode::InvalidJson,
            StatusCode::UNSUPPORTED_MEDIA_TYPE => ErrorCode::UnsupportedMediaType,
            StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::BodyTooLarge,
            _ => ErrorCode::InvalidBody,
        };
        let detail = if status == StatusCode::PAYLOAD_TOO_LARGE {
            format!(
                "the body is over the limit of {} bytes",
                waypost_model::limits::MAX_BODY_BYTES
            )
        } else {
            r.body_text()
        };
        Self::new(code, detail)
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        Self::from(JsonRejection::from(r))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        Self::query(r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        Self::new(ErrorCode::InvalidQuery, r.body_text())
    }
}
