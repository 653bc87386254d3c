//! Extractors whose rejections become [`ApiError`]s (problem+json), not axum's plain text.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Query, Request, rejection::JsonRejection},
    http::{HeaderMap, header, request::Parts},
};
use serde::de::{DeserializeOwned, IgnoredAny};
use waypost_model::ErrorCode;

use super::error::ApiError;

/// A JSON body. Like `axum::Json`, with one difference: a body that is not JSON at all is
/// 400 `invalid_json` even when the error met first is a wrong type (`{"service": 12` is cut
/// off, so it is not JSON, whatever `12` would have meant); JSON of the wrong shape is 422
/// `invalid_body`.
#[derive(Debug)]
pub(super) struct Json<T>(pub(super) T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !json_content_type(req.headers()) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "expected a body with `Content-Type: application/json`",
            ));
        }
        let bytes = Bytes::from_request(req, state).await?;
        match axum::Json::<T>::from_bytes(&bytes) {
            Ok(axum::Json(value)) => Ok(Self(value)),
            // serde reports the first error it meets; only a second, shape-free reading tells
            // whether the body is JSON at all.
            Err(JsonRejection::JsonDataError(shape)) => {
                match serde_json::from_slice::<IgnoredAny>(&bytes) {
                    Ok(_) => Err(ApiError::new(ErrorCode::InvalidBody, shape.body_text())),
                    Err(syntax) => Err(ApiError::new(
                        ErrorCode::InvalidJson,
                        format!("Failed to parse the request body as JSON: {syntax}"),
                    )),
                }
            }
            Err(other) => Err(other.into()),
        }
    }
}

/// `application/json`, or any `application/*+json`, as axum's `Json` accepts.
fn json_content_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<mime::Mime>().ok())
        .is_some_and(|m| {
            m.type_() == "application"
                && (m.subtype() == "json" || m.suffix().is_some_and(|s| s == "json"))
        })
}

/// `axum::extract::Path`, rejecting with [`ApiError`] (for example on invalid UTF-8). (Not
/// named `Path`: utoipa would then add the path's parameters a second time.)
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(super) struct PathParam<T>(pub(super) T);

/// Raw query pairs in order; handlers validate them (repeated `tag`, `meta.KEY`...).
#[derive(Debug)]
pub(super) struct QueryPairs(pub(super) Vec<(String, String)>);

impl<S: Send + Sync> FromRequestParts<S> for QueryPairs {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let Query(pairs) = Query::<Vec<(String, String)>>::from_request_parts(parts, state).await?;
        Ok(Self(pairs))
    }
}
