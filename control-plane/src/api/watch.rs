//! `GET /watch`: Server-Sent Events.
//!
//! No per-subscriber queue lives in the registry: each stream remembers the last revision it
//! sent, waits on the committed head, and reads the shared change log from there. A stream that
//! falls behind the log (or resumes from another epoch) gets a fresh snapshot instead of a guess.

use std::convert::Infallible;

use axum::{
    extract::State,
    http::HeaderMap,
    response::sse::{Event, KeepAlive, Sse},
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::{
    IntoParams,
    openapi::path::{Parameter, ParameterIn},
};
use waypost_model::{
    ErrorCode, Revision, ServiceName, WatchEvent, WatchMessage,
    query::{parse_epoch, parse_revision},
    schema,
    watch::{event_id, parse_event_id},
};

use super::{AppState, error::ApiError, extract::QueryPairs, params::param, responses::ReadErrors};
use crate::{cluster::Consistency, registry::Stale};

/// Query parameters and headers of `GET /watch`.
pub(crate) struct WatchParams;

impl IntoParams for WatchParams {
    fn into_params(_: impl Fn() -> Option<ParameterIn>) -> Vec<Parameter> {
        vec![
            param(
                "service",
                ParameterIn::Query,
                "Only events of this service.",
                schema::watch_service(),
            ),
            param(
                "since",
                ParameterIn::Query,
                "Resume after this revision (the `Last-Event-ID` \
                header, when sent, wins).",
                schema::revision(),
            ),
            param(
                "epoch",
                ParameterIn::Query,
                "The epoch `since` belongs to; another epoch gets a \
                snapshot.",
                schema::epoch(),
            ),
            param(
                "Last-Event-ID",
                ParameterIn::Header,
                "Resume after this event id (what a \
                browser's `EventSource` sends when it reconnects).",
                schema::last_event_id(),
            ),
        ]
    }
}

/// Events in flight per stream; a slower client makes the stream wait, then catch up from the
/// log (or get a snapshot if it fell out of it).
const STREAM_BUFFER: usize = 64;

/// Stream registry changes (Server-Sent Events).
///
/// First a `snapshot` event with every instance at revision R (draining ones included), then
/// one `upsert` or `remove` event per change. Each event's id is `<epoch>-<revision>`; reconnect
/// with it as `Last-Event-ID` (or `?since=R&epoch=E`) to get exactly the changes after it, or a
/// fresh snapshot when R is older than the kept history. Idle streams get a keep-alive comment.
#[utoipa::path(
    get,
    path = "/watch",
    security(("bearer" = []), ()),
    tag = "discovery",
    params(WatchParams),
    responses(
        (status = 200, description = "An SSE stream of WatchMessage events: each event's `data` is one WatchEvent as JSON and its `event` name is the event's `type`",
            content_type = "text/event-stream", body = WatchMessage),
        ReadErrors,
        (status = 503, description = "`too_many_watchers`: the limit of open streams is reached; retry later",
            content_type = "application/problem+json", body = waypost_model::Problem),
    )
)]
pub(crate) async fn watch(
    State(app): State<AppState>,
    headers: HeaderMap,
    QueryPairs(pairs): QueryPairs,
) -> Result<Sse<impl futures_util::Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let mut service = None;
    let mut since = None;
    let mut epoch = None;
    for (k, v) in pairs {
        match k.as_str() {
            "service" => {
                service = Some(ServiceName::new(&v).map_err(|e| {
                    ApiError::query(format!("service={v:?} is not a valid service name: it {e}"))
                })?);
            }
            "since" => {
                since =
                    Some(parse_revision(&v).map_err(|e| ApiError::query(format!("since={e}")))?);
            }
            "epoch" => {
                epoch = Some(parse_epoch(&v).ok_or_else(|| {
                    ApiError::query(format!("epoch={v:?} is not 1 to 16 hex digits"))
                })?);
            }
            other => {
                return Err(ApiError::query(format!(
                    "unknown parameter {other:?}; known: service, since, epoch"
                )));
            }
        }
    }
    if let Some(last) = headers.get("last-event-id") {
        let parsed = last.to_str().ok().and_then(parse_event_id).ok_or_else(|| {
            ApiError::query("Last-Event-ID is not an event id like 00000000000000ab-42")
        })?;
        epoch = parsed.0;
        since = Some(parsed.1);
    }
    // A resume point from another history is meaningless here.
    let mut resume = since.filter(|_| epoch.is_none_or(|e| e == app.registry.epoch()));
    if let Some(r) = resume
        && r > app.registry.head()
    {
        // Beyond this node's head: in a cluster, most likely a revision another node had
        // already applied and sent (a watcher that moved here). Catch up with the cluster's
        // commit first; a point still beyond it was never given out (made up, or from an
        // in-memory history that restarted): that gets a snapshot. Without a leader, a point
        // in this history is kept and the stream waits for this node to reach it (a snapshot
        // of this node's older state would take the watcher back in time); without an epoch
        // nothing says it is ours, and it gets a snapshot.
        resume = match app.cluster.linearize(Consistency::Default).await {
            Ok(()) => resume.filter(|r| *r <= app.registry.head()),
            Err(_) => resume.filter(|_| epoch.is_some()),
        };
    }
    // Each stream holds a permit until it ends: the memory and tasks of open streams are
    // bounded by --max-watchers.
    let permit = app.watchers.clone().try_acquire_owned().map_err(|_| {
        ApiError::new(
            ErrorCode::TooManyWatchers,
            format!(
                "{} watch streams are open, the limit (--max-watchers); retry later",
                app.max_watchers
            ),
        )
    })?;
    let (tx, rx) = mpsc::channel(STREAM_BUFFER);
    let keepalive = app.watch_keepalive;
    let tasks = app.tasks.clone();
    tasks.spawn(async move {
        pump(app, service, resume, tx).await;
        drop(permit);
    });
    Ok(Sse::new(ReceiverStream::new(rx)).keep_alive(KeepAlive::new().interval(keepalive)))
}

type Tx = mpsc::Sender<Result<Event, Infallible>>;

/// Sends one event; `false` when the client is gone.
async fn send(app: &AppState, tx: &Tx, ev: &WatchEvent) -> bool {
    let data = match serde_json::to_string(ev) {
        Ok(d) => d,
        Err(err) => {
            tracing::error!(%err, "cannot encode watch event");
            return false;
        }
    };
    let event = Event::default()
        .event(ev.kind())
        .id(event_id(app.registry.epoch(), ev.revision()))
        .data(data);
    tx.send(Ok(event)).await.is_ok()
}

/// Sends a snapshot consistent with one revision; returns that revision.
async fn snapshot(app: &AppState, tx: &Tx, service: Option<&ServiceName>) -> Option<Revision> {
    // Read at the applied head: everything applied is committed by a majority.
    let (instances, revision) = app.registry.snapshot(service.map(ServiceName::as_str));
    let ev = WatchEvent::Snapshot {
        epoch: format!("{:016x}", app.registry.epoch()),
        revision,
        instances,
    };
    send(app, tx, &ev).await.then_some(revision)
}

async fn pump(app: AppState, service: Option<ServiceName>, resume: Option<Revision>, tx: Tx) {
    app.metrics.watch_streams.inc();
    let _open = scopeguard(&app);
    let mut rx = app.registry.subscribe();
    let mut last = match resume {
        Some(r) => r,
        None => match snapshot(&app, &tx, service.as_ref()).await {
            Some(r) => r,
            None => return,
        },
    };
    loop {
        let head = rx.borrow_and_update().revision;
        // `head == last` still reads the log once: a resume point older than the log is
        // found stale here and answered with a snapshot right away.
        if head >= last {
            match app.registry.changes_since(last, head) {
                Ok(changes) => {
                    for change in changes {
                        if service.as_ref().is_none_or(|s| s == change.service())
                            && !send(&app, &tx, &change.to_event()).await
                        {
                            return;
                        }
                        last = change.revision;
                    }
                }
                Err(Stale) => match snapshot(&app, &tx, service.as_ref()).await {
                    Some(r) => last = r,
                    None => return,
                },
            }
        }
        tokio::select! {
            biased;
            () = app.shutdown.cancelled() => return,
            () = tx.closed() => return,
            changed = rx.changed() => if changed.is_err() { return },
        }
        if rx.borrow().failed {
            return;
        }
    }
}

/// Decrements the open-streams gauge when the stream ends, however it ends.
fn scopeguard(app: &AppState) -> impl Drop + '_ {
    struct Guard<'a>(&'a AppState);
    impl Drop for Guard<'_> {
        fn drop(&mut self) {
            self.0.metrics.watch_streams.dec();
        }
    }
    Guard(app)
}
