//! The error responses each operation declares in the OpenAPI document, grouped so that every
//! route lists its problems the same way.

use utoipa::IntoResponses;
use waypost_model::Problem;

/// Errors of the JSON write endpoints.
#[derive(IntoResponses)]
#[allow(dead_code, unreachable_pub)]
pub enum WriteErrors {
    /// `invalid_json` (the body is not JSON), `invalid_field` or `invalid_service_name`.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// `body_too_large`: over 65536 bytes.
    #[response(status = 413, content_type = "application/problem+json")]
    TooLarge(Problem),
    /// `unsupported_media_type`: send `Content-Type: application/json`.
    #[response(status = 415, content_type = "application/problem+json")]
    MediaType(Problem),
    /// `invalid_body`: missing field, wrong type, or `null` for an optional field.
    #[response(status = 422, content_type = "application/problem+json")]
    Unprocessable(Problem),
    /// `unauthorized`: authorization is on and no configured token was sent.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// `forbidden`: the token may not change this service (a read token, or a service token
    /// outside its services).
    #[response(status = 403, content_type = "application/problem+json")]
    Forbidden(Problem),
    /// `request_timeout`: the write was not received and answered within `--request-timeout`.
    #[response(status = 408, content_type = "application/problem+json")]
    Timeout(Problem),
    /// `rate_limited`: more writes from this client address than `--write-rate`; retry after
    /// the `Retry-After` seconds.
    #[response(status = 429, content_type = "application/problem+json")]
    RateLimited(Problem),
    /// `store_unavailable` (a durable commit failed), `registry_full`, `service_full`, or
    /// `no_leader` (cluster mode: no leader within the election timeout).
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// `instance_not_found`: re-register.
#[derive(IntoResponses)]
#[allow(dead_code, unreachable_pub)]
pub enum NotFound {
    /// No such instance: never registered, deregistered or expired.
    #[response(status = 404, content_type = "application/problem+json")]
    NotFound(Problem),
}

/// Errors of the read endpoints.
#[derive(IntoResponses)]
#[allow(dead_code, unreachable_pub)]
pub enum ReadErrors {
    /// `invalid_query` or `invalid_service_name`.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// `unauthorized`: authorization is on and no configured token was sent.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// `no_leader`: cluster mode, a linearizable read without a leader within the election
    /// timeout; `?stale` still answers.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Errors of the reads that take no `?stale` (the Prometheus discovery).
#[derive(IntoResponses)]
#[allow(dead_code, unreachable_pub)]
pub enum PlainReadErrors {
    /// `invalid_query` or `invalid_service_name`.
    #[response(status = 400, content_type = "application/problem+json")]
    BadRequest(Problem),
    /// `unauthorized`: authorization is on and no configured token was sent.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
    /// `no_leader`: cluster mode, no leader within the election timeout.
    #[response(status = 503, content_type = "application/problem+json")]
    Unavailable(Problem),
}

/// Errors of routes that need a token when authorization is on and have no others.
#[derive(IntoResponses)]
#[allow(dead_code, unreachable_pub)]
pub enum AuthErrors {
    /// `unauthorized`: authorization is on and no configured token was sent.
    #[response(status = 401, content_type = "application/problem+json")]
    Unauthorized(Problem),
}
