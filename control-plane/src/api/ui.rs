//! The dashboard at `/ui/`: three static files compiled into the binary (`control-plane/ui/`),
//! plain HTML, CSS and JavaScript over the same JSON API as everyone else, so that it needs no
//! build step, no CDN and no server-side state. The page follows `/watch` to stay live.
//!
//! The files are public, like `/docs`: they hold nothing secret, and with authorization on the
//! page asks for a token and sends it on every API call it makes, as any client would.

use axum::{
    Router,
    extract::Path,
    http::{HeaderName, HeaderValue, header},
    response::{Html, IntoResponse, Redirect, Response},
    routing::get,
};
use waypost_model::ErrorCode;

use super::error::ApiError;

const INDEX: &str = include_str!("../../ui/index.html");
const SCRIPT: &str = include_str!("../../ui/app.js");
const STYLE: &str = include_str!("../../ui/app.css");

/// The page may load only its own files and talk only to this server; no inline script, no
/// framing (so that a drain button cannot be clicked through someone else's page).
const POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The dashboard (HTML, served from the binary).
#[utoipa::path(get, path = "/ui/", tag = "operations",
    responses((status = 200, description = "The dashboard's page; its script and style sheet are \
        `/ui/app.js` and `/ui/app.css`", body = String, content_type = "text/html")))]
#[allow(dead_code)]
pub(crate) async fn ui_page() -> Html<&'static str> {
    // Routed by `routes` below; declared here so that the document lists the page.
    Html("")
}

/// `/ui`, `/ui/` and the page's two other files.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route(
            "/ui/",
            get(|| async { file("text/html; charset=utf-8", INDEX) }),
        )
        .route("/ui/{file}", get(asset))
}

async fn asset(Path(name): Path<String>) -> Result<Response, ApiError> {
    match name.as_str() {
        "app.js" => Ok(file("text/javascript; charset=utf-8", SCRIPT)),
        "app.css" => Ok(file("text/css; charset=utf-8", STYLE)),
        "index.html" => Ok(Redirect::permanent("/ui/").into_response()),
        _ => Err(ApiError::new(
            ErrorCode::RouteNotFound,
            format!("the dashboard has no file {name:?}; open /ui/"),
        )),
    }
}

fn file(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            // Revalidate every time: a new binary brings new files under the same names.
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(POLICY),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (
                header::REFERRER_POLICY,
                HeaderValue::from_static("no-referrer"),
            ),
            (
                HeaderName::from_static("x-frame-options"),
                HeaderValue::from_static("DENY"),
            ),
        ],
        body,
    )
        .into_response()
}
