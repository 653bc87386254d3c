//! `baseline`: the yardstick. A bare axum server on the same routes as the control plane that
//! answers with the control plane's own bytes (captured once at start) and does no registry work:
//! no JSON parsing, no lock, no store, no middleware. The control plane's req/s divided by this
//! server's, under the same load, is the share of a bare handler it reaches.

use std::{net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderValue, StatusCode, header::CONTENT_TYPE},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde_json::json;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    Error,
    client::{Call, Conn, Target},
    scenario::{self, seed_address, seed_service},
};

/// The captured answer bodies, one per scenario route.
#[derive(Debug)]
struct Bodies {
    discover: Bytes,
    services: Bytes,
    heartbeat: Bytes,
    register: Bytes,
}

/// Captures the bodies from `from`, binds `listen` and serves until SIGINT or SIGTERM.
pub(crate) async fn serve(listen: SocketAddr, from: &Target) -> Result<(), Error> {
    if !listen.ip().is_loopback() {
        return Err("the baseline listens on loopback only".into());
    }
    let bodies = Arc::new(capture(from).await?);
    let app = Router::new()
        .route("/discover/{service}", get(discover))
        .route("/services", get(services))
        .route("/heartbeat", post(heartbeat))
        .route("/register", post(register))
        .with_state(bodies);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    eprintln!("listening http={}", listener.local_addr()?);
    let mut term = signal(SignalKind::terminate())?;
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await?;
    Ok(())
}

/// Asks a seeded control plane each scenario's request once and keeps the answers. The capture's
/// registration is deregistered again, so the control plane's data set is left as it was.
async fn capture(from: &Target) -> Result<Bodies, Error> {
    let mut conn = Conn::open(from).await?;
    let discover = ask(
        &mut conn,
        Call::get(format!("/discover/{}", seed_service(0))),
    )
    .await?;
    let services = ask(&mut conn, Call::get("/services".to_owned())).await?;
    let heartbeat = ask(
        &mut conn,
        Call::post(
            "/heartbeat",
            &json!({"service": seed_service(0), "id": seed_address(0, 0)}),
        ),
    )
    .await?;
    let new = scenario::register_new("reg", 100, 0, scenario::run_id());
    let sent: serde_json::Value = serde_json::from_slice(&new.body)?;
    let register = ask(&mut conn, new).await?;
    ask(
        &mut conn,
        Call::post(
            "/deregister",
            &json!({"service": sent["service"], "address": sent["address"]}),
        ),
    )
    .await?;
    eprintln!(
        "captured bodies: discover {} B, services {} B, heartbeat {} B, register {} B",
        discover.len(),
        services.len(),
        heartbeat.len(),
        register.len()
    );
    Ok(Bodies {
        discover,
        services,
        heartbeat,
        register,
    })
}

/// Sends one capture request; anything but 2xx is an error.
async fn ask(conn: &mut Conn, call: Call) -> Result<Bytes, Error> {
    let (status, body) = conn.send(&call).await?;
    if !status.is_success() {
        let text = String::from_utf8_lossy(&body);
        return Err(format!("capture: {} {} -> {status} {text}", call.method, call.path).into());
    }
    Ok(body)
}

fn json_answer(status: StatusCode, body: &Bytes) -> Response {
    let content_type = [(CONTENT_TYPE, HeaderValue::from_static("application/json"))];
    (status, content_type, body.clone()).into_response()
}

async fn discover(State(b): State<Arc<Bodies>>) -> Response {
    json_answer(StatusCode::OK, &b.discover)
}

async fn services(State(b): State<Arc<Bodies>>) -> Response {
    json_answer(StatusCode::OK, &b.services)
}

/// Reads the request body (as any server must) and ignores it.
async fn heartbeat(State(b): State<Arc<Bodies>>, _body: Bytes) -> Response {
    json_answer(StatusCode::OK, &b.heartbeat)
}

async fn register(State(b): State<Arc<Bodies>>, _body: Bytes) -> Response {
    json_answer(StatusCode::CREATED, &b.register)
}
