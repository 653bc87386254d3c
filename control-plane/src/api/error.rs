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

/// An error answer: status, stable code and a detail sentence.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: ErrorCode,
    detail: String,
}

impl ApiError {
    /// An error with an explicit status and code.
    pub fn new(status: StatusCode, code: ErrorCode, detail: impl Into<String>) -> Self {
        Self {
            status,
            code,
            detail: detail.into(),
        }
    }

    /// A bad query parameter.
    pub fn query(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorCode::InvalidQuery, detail)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let detail = if self.status.is_server_error() && self.code == ErrorCode::Internal {
            // Internal details stay in the log.
            tracing::error!(detail = %self.detail, "internal error");
            "internal error; see the control plane's log".to_owned()
        } else {
            self.detail
        };
        let problem = Problem::new(self.code, self.status.as_u16(), detail);
        (
            self.status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            Json(problem),
        )
            .into_response()
    }
}

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> Self {
        Self::new(StatusCode::BAD_REQUEST, e.code, e.to_string())
    }
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::Field(f) => f.into(),
            RegistryError::NotFound { .. } => Self::new(
                StatusCode::NOT_FOUND,
                ErrorCode::InstanceNotFound,
                e.to_string(),
            ),
            RegistryError::Full(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::RegistryFull,
                e.to_string(),
            ),
            RegistryError::ServiceFull { .. } => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::ServiceFull,
                e.to_string(),
            ),
            RegistryError::StoreUnavailable => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::StoreUnavailable,
                e.to_string(),
            ),
        }
    }
}

impl From<ClusterError> for ApiError {
    fn from(e: ClusterError) -> Self {
        match e {
            ClusterError::Registry(r) => r.into(),
            ClusterError::NoLeader(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::NoLeader,
                e.to_string(),
            ),
        }
    }
}

impl ApiError {
    /// A reply that is not the kind the handler asked for: a bug (or a log written by a
    /// different version), never the client's fault.
    pub(crate) fn unexpected(reply: &Reply) -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            ErrorCode::Internal,
            format!("unexpected reply from the state machine: {reply:?}"),
        )
    }
}

impl From<Denied> for ApiError {
    fn from(d: Denied) -> Self {
        Self::new(StatusCode::FORBIDDEN, ErrorCode::Forbidden, d.to_string())
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
        let status = if code == ErrorCode::InvalidBody {
            StatusCode::UNPROCESSABLE_ENTITY
        } else {
            status
        };
        Self::new(status, code, detail)
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
        Self::new(
            StatusCode::BAD_REQUEST,
            ErrorCode::InvalidQuery,
            r.body_text(),
        )
    }
}
