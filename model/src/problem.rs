//! RFC 9457 problem details: the one error body of the API, with a stable machine `code`.

use serde::{Deserialize, Serialize};

/// Stable error codes. Clients match on these, never on `title` or `detail`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// 400: the body is not JSON.
    InvalidJson,
    /// 422: JSON of the wrong shape (missing field, wrong type, `null` for an optional field).
    InvalidBody,
    /// 400: a field fails validation (address, port, ttl, weight, tag...).
    InvalidField,
    /// 400: the service name is not an RFC 1123 label.
    InvalidServiceName,
    /// 415: the body is not declared as `application/json`.
    UnsupportedMediaType,
    /// 413: the body is over the limit.
    BodyTooLarge,
    /// 414: the request target (path and query) is over the limit.
    UriTooLong,
    /// 431: too many request headers, or too many bytes in them.
    HeadersTooLarge,
    /// 400: a bad query parameter (`tag`, `index`, `wait`, `since`...).
    InvalidQuery,
    /// 404: no such route.
    RouteNotFound,
    /// 405: the route exists but not with this method.
    MethodNotAllowed,
    /// 404: no such instance (never registered, deregistered or expired); re-register.
    InstanceNotFound,
    /// 503: the durable store failed; writes are refused until it recovers.
    StoreUnavailable,
    /// 503: the registry holds its configured maximum of instances.
    RegistryFull,
    /// 503: the service holds its configured maximum of instances.
    ServiceFull,
    /// 503: the configured maximum of `/watch` streams is open.
    TooManyWatchers,
    /// 503: the control plane knows its configured maximum of sidecars (`--max-nodes`); a new
    /// one is refused until lost ones are forgotten.
    TooManyNodes,
    /// 429: this client sent more writes than its rate allows; see `Retry-After`.
    RateLimited,
    /// 408: the write was not received and answered in time (a body sent too slowly).
    RequestTimeout,
    /// 401: authorization is on and the request has no bearer token, or one that is not
    /// configured; see `WWW-Authenticate`.
    Unauthorized,
    /// 403: the token is valid but does not allow this (a read token writing, a service token
    /// outside its services).
    Forbidden,
    /// 404 (sidecar proxy): no service by that name.
    UnknownService,
    /// 503 (sidecar proxy): the service has no healthy instance.
    NoHealthyInstance,
    /// 502 (sidecar proxy): no instance could be reached.
    UpstreamUnavailable,
    /// 504 (sidecar proxy): the instance did not answer in time.
    UpstreamTimeout,
    /// 503: the control plane is shutting down.
    ShuttingDown,
    /// 503: cluster mode: no leader is known within the election timeout (an election is on,
    /// or this node is on the minority side of a partition); retry, or read with `?stale`.
    NoLeader,
    /// 503: cluster mode: a node added with `POST /cluster/members` is still catching up and
    /// stays a learner for now; send the request again to make it a voter.
    CatchingUp,
    /// 409: cluster mode: the membership change is not allowed now (the last voter, or
    /// another change in progress).
    MembershipConflict,
    /// 500: anything else; the detail is only in the server's log.
    Internal,
    /// A code this version does not know (a newer server).
    #[serde(other)]
    Unknown,
}

impl ErrorCode {
    /// Every code this version sends (not [`Self::Unknown`], which only a client sees). A new
    /// code goes here and in the README's error table; a test holds the two together.
    pub const ALL: [Self; 30] = [
        Self::InvalidJson,
        Self::InvalidBody,
        Self::InvalidField,
        Self::InvalidServiceName,
        Self::UnsupportedMediaType,
        Self::BodyTooLarge,
        Self::UriTooLong,
        Self::HeadersTooLarge,
        Self::InvalidQuery,
        Self::RouteNotFound,
        Self::MethodNotAllowed,
        Self::InstanceNotFound,
        Self::StoreUnavailable,
        Self::RegistryFull,
        Self::ServiceFull,
        Self::TooManyWatchers,
        Self::TooManyNodes,
        Self::RateLimited,
        Self::RequestTimeout,
        Self::Unauthorized,
        Self::Forbidden,
        Self::UnknownService,
        Self::NoHealthyInstance,
        Self::UpstreamUnavailable,
        Self::UpstreamTimeout,
        Self::ShuttingDown,
        Self::NoLeader,
        Self::CatchingUp,
        Self::MembershipConflict,
        Self::Internal,
    ];

    /// The HTTP status every answer with this code has.
    pub fn status(self) -> u16 {
        match self {
            Self::InvalidJson
            | Self::InvalidField
            | Self::InvalidServiceName
            | Self::InvalidQuery => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::RouteNotFound | Self::InstanceNotFound | Self::UnknownService => 404,
            Self::MethodNotAllowed => 405,
            Self::RequestTimeout => 408,
            Self::MembershipConflict => 409,
            Self::BodyTooLarge => 413,
            Self::UriTooLong => 414,
            Self::UnsupportedMediaType => 415,
            Self::InvalidBody => 422,
            Self::RateLimited => 429,
            Self::HeadersTooLarge => 431,
            Self::Internal | Self::Unknown => 500,
            Self::UpstreamUnavailable => 502,
            Self::StoreUnavailable
            | Self::RegistryFull
            | Self::ServiceFull
            | Self::TooManyWatchers
            | Self::TooManyNodes
            | Self::NoHealthyInstance
            | Self::ShuttingDown
            | Self::NoLeader
            | Self::CatchingUp => 503,
            Self::UpstreamTimeout => 504,
        }
    }

    /// The snake_case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidJson => "invalid_json",
            Self::InvalidBody => "invalid_body",
            Self::InvalidField => "invalid_field",
            Self::InvalidServiceName => "invalid_service_name",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::BodyTooLarge => "body_too_large",
            Self::UriTooLong => "uri_too_long",
            Self::HeadersTooLarge => "headers_too_large",
            Self::InvalidQuery => "invalid_query",
            Self::RouteNotFound => "route_not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::InstanceNotFound => "instance_not_found",
            Self::StoreUnavailable => "store_unavailable",
            Self::RegistryFull => "registry_full",
            Self::ServiceFull => "service_full",
            Self::TooManyWatchers => "too_many_watchers",
            Self::TooManyNodes => "too_many_nodes",
            Self::RateLimited => "rate_limited",
            Self::RequestTimeout => "request_timeout",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::UnknownService => "unknown_service",
            Self::NoHealthyInstance => "no_healthy_instance",
            Self::UpstreamUnavailable => "upstream_unavailable",
            Self::UpstreamTimeout => "upstream_timeout",
            Self::ShuttingDown => "shutting_down",
            Self::NoLeader => "no_leader",
            Self::CatchingUp => "catching_up",
            Self::MembershipConflict => "membership_conflict",
            Self::Internal => "internal",
            Self::Unknown => "unknown",
        }
    }

    /// A short, fixed title for the code.
    pub fn title(self) -> &'static str {
        match self {
            Self::InvalidJson => "Body is not valid JSON",
            Self::InvalidBody => "Body has the wrong shape",
            Self::InvalidField => "Invalid field",
            Self::InvalidServiceName => "Invalid service name",
            Self::UnsupportedMediaType => "Expected application/json",
            Self::BodyTooLarge => "Body too large",
            Self::UriTooLong => "Request target too long",
            Self::HeadersTooLarge => "Request headers too large",
            Self::InvalidQuery => "Invalid query parameter",
            Self::RouteNotFound => "No such route",
            Self::MethodNotAllowed => "Method not allowed",
            Self::InstanceNotFound => "Instance not found",
            Self::StoreUnavailable => "Store unavailable",
            Self::RegistryFull => "Registry full",
            Self::ServiceFull => "Service full",
            Self::TooManyWatchers => "Too many watchers",
            Self::TooManyNodes => "Too many nodes",
            Self::RateLimited => "Rate limited",
            Self::RequestTimeout => "Request timeout",
            Self::Unauthorized => "Unauthorized",
            Self::Forbidden => "Forbidden",
            Self::UnknownService => "Unknown service",
            Self::NoHealthyInstance => "No healthy instance",
            Self::UpstreamUnavailable => "Upstream unavailable",
            Self::UpstreamTimeout => "Upstream timeout",
            Self::ShuttingDown => "Shutting down",
            Self::NoLeader => "No leader",
            Self::CatchingUp => "Catching up",
            Self::MembershipConflict => "Membership change refused",
            Self::Internal => "Internal error",
            Self::Unknown => "Unknown error",
        }
    }
}

/// An RFC 9457 `application/problem+json` body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(example = json!({
    "type": "urn:waypost:problem:instance_not_found", "title": "Instance not found", "status": 404,
    "detail": "no instance 10.0.0.7:8001 of service user-service (expired or never registered)",
    "code": "instance_not_found"
})))]
pub struct Problem {
    /// `urn:waypost:problem:<code>`.
    #[serde(rename = "type")]
    pub type_uri: String,
    /// Fixed per code.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What went wrong in this request.
    pub detail: String,
    /// The stable machine-readable code.
    pub code: ErrorCode,
}

impl Problem {
    /// A problem for `code` with HTTP `status` and a `detail` sentence.
    pub fn new(code: ErrorCode, status: u16, detail: impl Into<String>) -> Self {
        Self {
            type_uri: format!("urn:waypost:problem:{}", code.as_str()),
            title: code.title().to_owned(),
            status,
            detail: detail.into(),
            code,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_serialize_as_their_names() {
        for code in [
            ErrorCode::InstanceNotFound,
            ErrorCode::InvalidJson,
            ErrorCode::Internal,
        ] {
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
        }
        let unknown: ErrorCode = serde_json::from_str("\"from_the_future\"").unwrap();
        assert_eq!(unknown, ErrorCode::Unknown);
    }

    /// The README's error table is the documentation of every code: each row's codes and
    /// statuses are `status()`'s, and every code has a row.
    #[test]
    fn every_code_has_its_status_in_the_readme_table() {
        let readme = include_str!("../../README.md");
        let table = readme
            .split_once("| code | status | when |")
            .expect("README.md has the error table")
            .1;
        let mut documented = Vec::new();
        for row in table.lines().skip(2).take_while(|l| l.starts_with('|')) {
            let cells: Vec<&str> = row.split('|').map(str::trim).collect();
            let codes: Vec<&str> = cells[1].split(" / ").collect();
            let statuses: Vec<u16> = cells[2]
                .split(" / ")
                .map(|s| s.parse().expect("a status"))
                .collect();
            for (i, name) in codes.iter().enumerate() {
                let name = name.trim_matches('`');
                let code: ErrorCode = serde_json::from_value(serde_json::json!(name)).unwrap();
                assert!(
                    ErrorCode::ALL.contains(&code),
                    "README row for unknown code {name}"
                );
                let status = statuses.get(i).or(statuses.last()).copied();
                assert_eq!(status, Some(code.status()), "README status of {name}");
                documented.push(code);
            }
        }
        for code in ErrorCode::ALL {
            assert!(
                documented.contains(&code),
                "README lacks a row for {}",
                code.as_str()
            );
            assert!((400..600).contains(&code.status()), "{}", code.as_str());
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, code.as_str());
            assert_eq!(serde_json::from_value::<ErrorCode>(json).unwrap(), code);
        }
    }
}
