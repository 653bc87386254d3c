//! The HTTP API: one module per endpoint, assembled here with the OpenAPI document, the body
//! limit, request metrics and the problem+json fallbacks.

mod auth;
mod blocking;
mod check;
mod cluster;
mod deregister;
mod discover;
mod docs;
mod drain;
pub mod error;
mod extract;
mod heartbeat;
pub mod limits;
mod nodes;
mod ops;
mod params;
mod policy;
mod register;
mod responses;
mod sd;
mod services;
mod ui;
mod watch;

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request, State},
    http::{HeaderValue, StatusCode, header::AUTHORIZATION},
    middleware::{self, Next},
    response::Response,
};
use tokio_util::sync::CancellationToken;
use tower_http::sensitive_headers::SetSensitiveRequestHeadersLayer;
use utoipa::OpenApi;
use utoipa_axum::{router::OpenApiRouter, routes};
use waypost_model::{ErrorCode, limits::MAX_BODY_BYTES};

use self::error::ApiError;
use crate::{
    cluster::Cluster,
    command::{Command, Reply},
    metrics::{HttpLabels, Metrics},
    registry::{Registry, RegistryError},
};

/// What every handler can reach: one `Arc`, so that axum's per-request clone of the state is a
/// single reference-count increment.
#[derive(Clone, Debug)]
pub struct AppState(pub Arc<App>);

impl std::ops::Deref for AppState {
    type Target = App;

    fn deref(&self) -> &App {
        &self.0
    }
}

/// The shared parts of [`AppState`].
#[derive(Debug)]
pub struct App {
    /// The state machine (reads, heartbeats).
    pub registry: Arc<Registry>,
    /// The replicated log (writes, linearizable reads).
    pub cluster: Arc<Cluster>,
    /// Metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled at shutdown: ends watch streams and blocking queries.
    pub shutdown: CancellationToken,
    /// The control plane's tasks (a watch stream's pump is one), drained at shutdown.
    pub tasks: waypost_runtime::TaskTracker,
    /// Keep-alive interval on `/watch`.
    pub watch_keepalive: Duration,
    /// The longest a blocking query is held.
    pub max_query_time: Duration,
    /// Hands each change to the `/watch` streams, encoded once.
    pub(crate) fanout: Arc<crate::fanout::Fanout>,
    /// One permit per open `/watch` stream.
    pub watchers: Arc<tokio::sync::Semaphore>,
    /// The number of permits.
    pub max_watchers: usize,
    /// Writes per client address (`None`: no limit).
    pub write_limiter: Option<limits::WriteLimiter>,
    /// Time to receive a write and answer it.
    pub request_timeout: Duration,
    /// The table that times writes out.
    pub deadlines: Arc<waypost_runtime::deadline::Deadlines>,
    /// The configured tokens (none: authorization is off).
    pub tokens: crate::auth::Tokens,
    /// The sidecars and what they applied.
    pub nodes: Arc<crate::nodes::Nodes>,
    /// Whether a durable store backs the registry.
    pub durable: bool,
    /// The OpenAPI document, rendered once.
    pub openapi_json: Arc<str>,
}

impl App {
    /// Replicates `command` and returns what applying it did. On the leader, a write that
    /// changes nothing visible (the same registration again, a drain of a draining instance)
    /// is answered at once, without a log entry; a refusal becomes its error.
    pub(crate) async fn replicate(&self, command: Command) -> Result<Reply, ApiError> {
        if self.cluster.may_answer_unchanged()
            && let Some(reply) = self.registry.unchanged(&command)
        {
            return Ok(reply);
        }
        match self.cluster.write(command).await? {
            Reply::Rejected(r) => Err(RegistryError::from(r).into()),
            reply => Ok(reply),
        }
    }
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Waypost control plane",
        description = "Service registration and discovery. Services register, heartbeat and \
deregister; anyone discovers, lists and watches. Errors are RFC 9457 problem+json with a stable \
`code`. Request bodies are limited to 65536 bytes.\n\n\
**A bearer token is needed only when the control plane is configured with tokens** \
(`[[auth.tokens]]` in its config file; authorization is off by default). That is why each \
operation that may need one lists the `bearer` scheme beside the empty requirement: with \
authorization off, send no `Authorization` header (the docs UI shows lock icons all the same); \
with tokens configured, send `Authorization: Bearer <token>`, or get 401 `unauthorized`. \
`/health`, `/ready`, `/openapi.json`, `/docs` and the dashboard's files under `/ui/` never \
need one.",
        license(name = "MIT OR Apache-2.0", identifier = "MIT OR Apache-2.0"),
    ),
    paths(docs::docs_page, ui::ui_page),
    modifiers(&BearerScheme),
    // Named by the watch stream's events (`WatchMessage.data`) rather than by a body.
    components(schemas(waypost_model::WatchEvent)),
    tags(
        (name = "registry", description = "Register, heartbeat, drain, report checks and deregister instances"),
        (name = "discovery", description = "Find instances, list services, watch changes"),
        (name = "integrations", description = "The registry in other systems' discovery formats (Prometheus)"),
        (name = "nodes", description = "Sidecars: their reports, and which have applied a revision"),
        (name = "operations", description = "Health, readiness, metrics and this document"),
    )
)]
struct ApiDoc;

/// The `bearer` security scheme that operations needing a token refer to.
struct BearerScheme;

impl utoipa::Modify for BearerScheme {
    fn modify(&self, doc: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        doc.components
            .get_or_insert_with(Default::default)
            .add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A token from the control plane's config file (`[[auth.tokens]]`), needed \
                         only when authorization is on: `operator` may do everything, `read` may \
                         discover, list, watch and read metrics, `service` may also write the \
                         services it names.",
                    ))
                    .build(),
            ),
        );
    }
}

/// The writes (POST): the write limits wrap these routes only, so reads never pass through
/// that middleware.
fn write_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(register::register))
        .routes(routes!(heartbeat::heartbeat))
        .routes(routes!(deregister::deregister))
        .routes(routes!(drain::drain))
        .routes(routes!(check::check))
        .routes(routes!(nodes::report))
        .routes(routes!(policy::set_policy, policy::delete_policy))
}

/// Everything else.
fn read_routes() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(discover::discover))
        .routes(routes!(discover::explain))
        .routes(routes!(services::services))
        .routes(routes!(sd::prometheus_targets))
        .routes(routes!(nodes::list))
        .routes(routes!(policy::get_policy))
        .routes(routes!(nodes::propagation))
        .routes(routes!(watch::watch))
        .routes(routes!(ops::health))
        .routes(routes!(ops::ready))
        .routes(routes!(ops::metrics))
        .routes(routes!(docs::openapi_json))
        .routes(routes!(cluster::status))
        .routes(routes!(cluster::add_member))
        .routes(routes!(cluster::remove_member))
}

fn api_router(writes: OpenApiRouter<AppState>) -> OpenApiRouter<AppState> {
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .merge(writes)
        .merge(read_routes())
}

/// The OpenAPI document, as served at `/openapi.json` and committed in `openapi/openapi.json`.
pub fn openapi() -> utoipa::openapi::OpenApi {
    let mut doc = api_router(write_routes()).split_for_parts().1;
    // After the routes: they bring the request bodies' schemas that this shapes.
    utoipa::Modify::modify(&waypost_model::schema::Shapes, &mut doc);
    doc
}

/// The OpenAPI document as pretty JSON with a final newline: the committed file's exact bytes.
pub fn openapi_pretty() -> String {
    let mut s = openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| unreachable!("the document always serialises: {e}"));
    s.push('\n');
    s
}

/// Builds the router. `openapi_json` in `state` should be [`openapi_pretty`].
pub fn router(state: AppState) -> Router {
    let writes = write_routes().route_layer(middleware::from_fn_with_state(
        state.clone(),
        limits::writes,
    ));
    let (api, _) = api_router(writes).split_for_parts();
    let mut router = api
        .merge(cluster::peer_routes())
        .merge(docs::swagger_ui())
        .merge(ui::routes())
        .fallback(route_not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    // Without tokens there is nothing to check: no layer, no cost per request.
    if state.tokens.enabled() {
        router = router
            .layer(middleware::from_fn_with_state(
                state.clone(),
                auth::authenticate,
            ))
            // Tokens never reach a log, whatever the trace layer is told to record.
            .layer(SetSensitiveRequestHeadersLayer::new([AUTHORIZATION]));
    }
    router
        .layer(middleware::from_fn_with_state(state.clone(), observe))
        .layer(tower_http::trace::TraceLayer::new_for_http())
        .with_state(state)
}

async fn route_not_found(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::RouteNotFound,
        format!("no route {} {}; see /docs", req.method(), req.uri().path()),
    )
}

async fn method_not_allowed(req: Request) -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        format!("{} is not allowed on {}", req.method(), req.uri().path()),
    )
}

/// Every route template, so that metric labels are static strings.
const ROUTES: &[&str] = &[
    "/register",
    "/heartbeat",
    "/deregister",
    "/drain",
    "/check",
    "/nodes/{node}",
    "/nodes",
    "/propagation",
    "/discover/{service}",
    "/discover/{service}/explain",
    "/services",
    "/services/{service}/policy",
    "/sd/prometheus",
    "/watch",
    "/health",
    "/ready",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/docs/",
    "/docs/{*rest}",
    "/cluster",
    "/cluster/members",
    "/cluster/members/{id}",
    "/cluster/raft/append",
    "/cluster/raft/vote",
    "/cluster/raft/snapshot",
    "/cluster/write",
    "/cluster/read-index",
    "/cluster/heartbeats",
    "/cluster/nodes",
];

fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    let Some(path) = matched else {
        return "unmatched";
    };
    ROUTES
        .iter()
        .find(|r| **r == path.as_str())
        .copied()
        .unwrap_or("other")
}

fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::PATCH => "PATCH",
        _ => "other",
    }
}

/// Whether the answering node knows a leader (`true`/`false`), as in Consul.
static KNOWN_LEADER: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-waypost-known-leader");
/// Milliseconds since the answering node last heard from the leader (0 on the leader).
static LAST_CONTACT: axum::http::HeaderName =
    axum::http::HeaderName::from_static("x-waypost-last-contact");

/// Records request latency by route and status, and stamps `X-Waypost-Index` on answers that
/// do not carry one yet.
async fn observe(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let route = route_label(req.extensions().get::<MatchedPath>());
    let method = method_label(req.method());
    // Checked before authentication, so such an answer carries no revision either.
    let (mut res, refused) = match limits::check_head(&req) {
        Ok(()) => (next.run(req).await, false),
        Err(refused) => (axum::response::IntoResponse::into_response(refused), true),
    };
    // A caller without a token learns nothing about the registry, not even its revision.
    if !refused && res.status() != StatusCode::UNAUTHORIZED {
        let headers = res.headers_mut();
        if !headers.contains_key(&blocking::INDEX_HEADER) {
            let head = app.registry.head();
            headers.insert(blocking::INDEX_HEADER.clone(), blocking::index_value(head));
        }
        let (leader, contact) = app.cluster.contact_headers();
        headers.insert(KNOWN_LEADER.clone(), HeaderValue::from_static(leader));
        if let Some(ms) = contact {
            headers.insert(LAST_CONTACT.clone(), HeaderValue::from(ms));
        }
    }
    app.metrics.observe_http(
        &HttpLabels {
            route,
            method,
            status: res.status().as_u16(),
        },
        started.elapsed().as_secs_f64(),
    );
    res
}
