//! Extractors whose rejections become [`ApiError`]s (problem+json), not axum's plain text.

use axum::{
    extract::{FromRequest, FromRequestParts, Query},
    http::request::Parts,
};

use super::error::ApiError;

/// `axum::Json`, rejecting with [`ApiError`].
#[derive(Debug, FromRequest)]
#[from_request(via(axum::Json), rejection(ApiError))]
pub(super) struct Json<T>(pub(super) T);

/// `axum::extract::Path`, rejecting with [`ApiError`] (for example on invalid UTF-8).
#[derive(Debug, axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub(super) struct Path<T>(pub(super) T);

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
