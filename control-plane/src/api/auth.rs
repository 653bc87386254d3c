//! Authorization at the HTTP edge: with tokens configured, every route except health,
//! readiness and the API document needs `Authorization: Bearer <token>` (401 otherwise), a
//! read token may not write (403 before the body is read), and each write handler checks the
//! service it touches with [`Caller::may_write`] before the registry sees the request, so a
//! refused request changes nothing.

use axum::{
    extract::{FromRequestParts, MatchedPath, Request, State},
    http::{HeaderMap, HeaderValue, Method, header, request::Parts},
    middleware::Next,
    response::{IntoResponse, Response},
};
use waypost_model::ErrorCode;

use super::{AppState, error::ApiError};
use crate::auth::Caller;

/// Routes anyone may call: a load balancer's health probe, the API's own description and the
/// dashboard's static files (its API calls carry the token the user gives it).
const PUBLIC: &[&str] = &[
    "/health",
    "/ready",
    "/openapi.json",
    "/docs",
    "/docs/",
    "/docs/{*rest}",
    "/ui",
    "/ui/",
    "/ui/{file}",
];

/// The middleware: authenticates the request and leaves its [`Caller`] for the handlers.
pub(crate) async fn authenticate(
    State(app): State<AppState>,
    mut req: Request,
    next: Next,
) -> Response {
    let public = req
        .extensions()
        .get::<MatchedPath>()
        .is_some_and(|r| PUBLIC.contains(&r.as_str()));
    if public {
        return next.run(req).await;
    }
    let Some(token) = bearer(req.headers()).and_then(|t| app.tokens.find(t)) else {
        app.metrics.unauthorized.inc();
        tracing::debug!(path = req.uri().path(), "refused: no configured token");
        let mut res = unauthorized().into_response();
        res.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"waypost\""),
        );
        return res;
    };
    let caller = Caller::Token(token);
    if req.method() == Method::POST
        && let Err(denied) = caller.may_write_some()
    {
        app.metrics.forbidden.inc();
        tracing::info!(token = %denied.token, action = %denied.action, "refused");
        return ApiError::from(denied).into_response();
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

/// The token of an `Authorization: Bearer ...` header (the scheme in any case).
fn bearer(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, ApiError> {
        if let Some(caller) = parts.extensions.get::<Caller>() {
            return Ok(caller.clone());
        }
        // Fail closed: with tokens configured, a handler that needs a caller never runs
        // without one, whatever the route table says.
        if app.tokens.enabled() {
            return Err(unauthorized());
        }
        Ok(Caller::Anyone)
    }
}

fn unauthorized() -> ApiError {
    ApiError::new(
        ErrorCode::Unauthorized,
        "this control plane requires a token: send `Authorization: Bearer <token>` with a configured token",
    )
}

/// Checks that `caller` may change every service in `services`, counting a refusal.
pub(crate) fn check_write<'a>(
    app: &AppState,
    caller: &Caller,
    services: impl IntoIterator<Item = &'a str>,
) -> Result<(), ApiError> {
    for service in services {
        caller
            .may_write(service)
            .map_err(|denied| forbidden(app, denied))?;
    }
    Ok(())
}

/// A refusal of a valid token: counted, logged by the token's name, answered 403.
pub(crate) fn forbidden(app: &AppState, denied: crate::auth::Denied) -> ApiError {
    app.metrics.forbidden.inc();
    tracing::info!(token = %denied.token, action = %denied.action, "refused");
    denied.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens_are_read_from_the_authorization_header() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
            bearer(&h).map(str::to_owned)
        };
        assert_eq!(with("Bearer abc").as_deref(), Some("abc"));
        assert_eq!(with("bearer  abc ").as_deref(), Some("abc"));
        assert_eq!(with("Basic abc"), None);
        assert_eq!(with("Bearer "), None);
        assert_eq!(bearer(&HeaderMap::new()), None);
    }
}
