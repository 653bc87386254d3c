//! `GET /watch`: Server-Sent Events.
//!
//! A stream starts with a snapshot, or resumes from a revision by reading the shared change log
//! from there; once it has reached the head it takes its events from the live fan-out
//! ([`crate::fanout`]), which encodes each change once for every stream. A stream that falls
//! behind the log (or resumes from another epoch) gets a fresh snapshot instead of a guess.

use std::{collections::VecDeque, convert::Infallible};

use axum::{
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, header},
    response::{IntoResponse, Response},
};
use tokio::sync::OwnedSemaphorePermit;
use utoipa::{
    IntoParams,
    openapi::path::{Parameter, ParameterIn},
};
use waypost_model::{
    Epoch, ErrorCode, Revision, ServiceName, WatchMessage,
    query::{parse_epoch, parse_revision},
    schema,
    watch::parse_event_id,
};

use super::{AppState, error::ApiError, extract::QueryPairs, params::param, responses::ReadErrors};
use crate::{
    cluster::Consistency,
    fanout::{Live, Refused, encode_change},
    registry::Stale,
};

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
) -> Result<Response, ApiError> {
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
    app.metrics.watch_streams.inc();
    let stream = Stream {
        epoch: app.registry.epoch(),
        last: resume,
        open: Open {
            app,
            _permit: permit,
        },
        service,
        pending: VecDeque::new(),
        live: None,
    };
    let frames = futures_util::stream::unfold(stream, |mut s| async move {
        let frame = s.next().await?;
        Some((Ok::<_, Infallible>(frame), s))
    });
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(frames),
    )
        .into_response())
}

/// Changes read from the log at once by a stream that is catching up.
const PAGE: u64 = 256;

/// The SSE comment sent on an idle stream.
const KEEPALIVE: &[u8] = b":\n\n";

/// One `/watch` stream: a snapshot or a resume point, then changes, from the live fan-out when
/// it keeps up, else from the change log at its reader's pace ([`crate::fanout`]).
struct Stream {
    open: Open,
    service: Option<ServiceName>,
    /// The epoch of `last`.
    epoch: Epoch,
    /// The revision the stream has reached (`None`: a snapshot comes first).
    last: Option<Revision>,
    /// Events read from the log, to send before reading more.
    pending: VecDeque<Bytes>,
    live: Option<Live>,
}

/// What an open stream holds until it ends, however it ends: its permit, and its place in the
/// open-streams gauge.
struct Open {
    app: AppState,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.app.metrics.watch_streams.dec();
    }
}

impl Stream {
    /// The next bytes to send; `None` ends the stream.
    async fn next(&mut self) -> Option<Bytes> {
        let app = self.open.app.clone();
        loop {
            if let Some(frame) = self.pending.pop_front() {
                return Some(frame);
            }
            if app.shutdown.is_cancelled() {
                return None;
            }
            let Some(last) = self.last else {
                let (frame, epoch, revision) = app.fanout.snapshot(self.service.as_ref());
                self.epoch = epoch;
                self.last = Some(revision);
                return Some(frame);
            };
            if let Some(live) = self.live.as_mut() {
                tokio::select! {
                    biased;
                    () = app.shutdown.cancelled() => return None,
                    frame = live.rx.recv() => match frame {
                        Some((revision, bytes)) => {
                            self.last = Some(revision);
                            return Some(bytes);
                        }
                        // Taken off the live fan-out (its queue was full, or the history
                        // changed): read the log from where the stream is.
                        None => self.live = None,
                    },
                    () = tokio::time::sleep(app.watch_keepalive) => {
                        return Some(Bytes::from_static(KEEPALIVE));
                    }
                }
                continue;
            }
            if app.fanout.closed() {
                return None;
            }
            let head = app.registry.head();
            let epoch = app.registry.epoch();
            if self.epoch == 0 && last == 0 {
                // Not another history: the one not named yet (see `Fanout::advance`). A point
                // beyond 0 in it was never given out (nothing is committed before the epoch is
                // named) and gets a snapshot below.
                self.epoch = epoch;
            } else if self.epoch != epoch {
                self.last = None;
                continue;
            }
            if last < head {
                // A stream of a quiet service may read many pages without finding an event:
                // let other tasks run between pages.
                tokio::task::consume_budget().await;
                let up_to = head.min(last + PAGE);
                match app.registry.changes_since(last, up_to) {
                    Ok(changes) => {
                        for change in changes
                            .iter()
                            .filter(|c| self.service.as_ref().is_none_or(|s| s == c.service()))
                        {
                            self.pending.push_back(encode_change(self.epoch, change));
                        }
                        self.last = Some(up_to);
                    }
                    Err(Stale) => self.last = None,
                }
                continue;
            }
            match app.fanout.join(self.service.as_ref(), self.epoch, last) {
                Ok(live) => self.live = Some(live),
                // The head moved on meanwhile: read it from the log first.
                Err(Refused::Behind) => {}
                Err(Refused::Stale) => self.last = None,
                Err(Refused::Closed) => return None,
            }
        }
    }
}
