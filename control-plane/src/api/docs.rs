//! The OpenAPI document (`GET /openapi.json`) and the offline docs UI (`GET /docs`).
//!
//! Swagger UI's files are vendored into the binary by `utoipa-swagger-ui`'s `vendored` feature
//! (from a crate, not downloaded at build time), so `/docs` works with no internet.

use axum::{
    Router,
    extract::State,
    http::header,
    response::{Html, IntoResponse},
};
use utoipa_swagger_ui::SwaggerUi;

use super::AppState;

/// The OpenAPI 3.1 document of this API.
///
/// The same document is committed as `openapi/openapi.json`; generate clients from either.
#[utoipa::path(get, path = "/openapi.json", tag = "operations",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object,
        content_type = "application/json")))]
pub(crate) async fn openapi_json(State(app): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        app.openapi_json.as_bytes().to_vec(),
    )
}

/// The API docs UI (Swagger UI, served from the binary).
#[utoipa::path(get, path = "/docs", tag = "operations",
    responses((status = 200, description = "An HTML page", body = String, content_type = "text/html")))]
#[allow(dead_code)]
pub(crate) async fn docs_page() -> Html<&'static str> {
    // Routed by SwaggerUi below; declared here so the document lists the page.
    Html("")
}

/// Swagger UI at `/docs`, reading `/openapi.json`.
pub(crate) fn swagger_ui<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::from(SwaggerUi::new("/docs").config(utoipa_swagger_ui::Config::new(["/openapi.json"])))
}
