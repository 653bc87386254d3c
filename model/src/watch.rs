//! `GET /watch`: a Server-Sent Events stream of a snapshot, then one event per change.
//!
//! Each event's SSE `id` is `<epoch>-<revision>` (epoch as 16 hex digits). A client resumes by
//! sending it back as `Last-Event-ID` (or `?since=<revision>&epoch=<epoch>`): it then gets
//! exactly the changes after that revision, or, when the revision is older than the kept
//! history or from another epoch, a fresh `snapshot` event.

use serde::{Deserialize, Serialize};

use crate::{Instance, InstanceId, Revision, ServiceName};

/// Why an instance changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum ChangeReason {
    /// A new instance.
    Registered,
    /// An existing id registered again with different fields.
    Updated,
    /// Status moved between `up` and `draining`.
    StatusChanged,
    /// The health check's result changed (`passing` / `critical` / `flapping`).
    HealthChanged,
    /// Removed by `POST /deregister`.
    Deregistered,
    /// Removed because no heartbeat arrived within its TTL.
    Expired,
}

/// One Server-Sent Event of `GET /watch` as it is framed on the wire, for the OpenAPI document
/// (a `text/event-stream` body is a series of these; SSE-aware tools check each against it):
/// the event name, its id, and `data`, a `WatchEvent` as JSON.
#[cfg(feature = "openapi")]
#[derive(Debug, Clone, utoipa::ToSchema)]
pub struct WatchMessage {
    /// The event's `type`.
    #[schema(pattern = "^(snapshot|upsert|remove)$", example = "upsert")]
    pub event: String,
    /// `<epoch>-<revision>`; send it back as `Last-Event-ID` to resume after this event.
    #[schema(pattern = "^[0-9a-f]{16}-[0-9]+$", example = "c44fa78add87a17f-42")]
    pub id: String,
    /// One `WatchEvent` (see its schema) as JSON.
    #[schema(content_media_type = "application/json")]
    pub data: String,
}

/// One event of the watch stream; the SSE event name equals `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "type", rename_all = "snake_case")]
// An upsert holds its instance inline: it is the common event, and boxing it would cost an
// allocation per event for every reader of the stream.
#[allow(clippy::large_enum_variant)]
pub enum WatchEvent {
    /// Every (matching) instance at `revision`; replaces whatever the client held.
    Snapshot {
        /// The history this revision belongs to, as 16 hex digits.
        epoch: String,
        /// The revision the snapshot is consistent with.
        revision: u64,
        /// All instances (draining ones included), ordered by service then id.
        instances: Vec<Instance>,
    },
    /// An instance was added or changed.
    Upsert {
        /// The revision of this change.
        revision: u64,
        /// Registered, updated or status changed.
        reason: ChangeReason,
        /// The instance after the change.
        instance: Instance,
    },
    /// An instance was removed.
    Remove {
        /// The revision of this change.
        revision: u64,
        /// Deregistered or expired.
        reason: ChangeReason,
        /// Its service.
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        service: ServiceName,
        /// Its id.
        #[cfg_attr(feature = "openapi", schema(value_type = String))]
        id: InstanceId,
    },
}

impl WatchEvent {
    /// The revision the event brings the client to.
    pub fn revision(&self) -> Revision {
        match self {
            Self::Snapshot { revision, .. }
            | Self::Upsert { revision, .. }
            | Self::Remove { revision, .. } => *revision,
        }
    }

    /// The SSE event name.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Snapshot { .. } => "snapshot",
            Self::Upsert { .. } => "upsert",
            Self::Remove { .. } => "remove",
        }
    }
}

/// Formats an SSE event id.
pub fn event_id(epoch: crate::Epoch, revision: Revision) -> String {
    format!("{epoch:016x}-{revision}")
}

/// Parses an SSE event id back into `(epoch, revision)`: `<epoch>-<revision>` with 1 to 16 hex
/// digits and 1 to 19 decimal digits ([`crate::syntax::event_id`]); a bare revision is one of an
/// unknown epoch.
pub fn parse_event_id(id: &str) -> Option<(Option<crate::Epoch>, Revision)> {
    let (epoch, rev) = match id.split_once('-') {
        Some((epoch, rev)) => (Some(crate::query::parse_epoch(epoch)?), rev),
        None => (None, id),
    };
    let digits = 1..=crate::syntax::REVISION_DIGITS;
    if !digits.contains(&rev.len()) || !rev.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((epoch, rev.parse().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_ids_round_trip() {
        let id = event_id(0xabc, 42);
        assert_eq!(id, "0000000000000abc-42");
        assert_eq!(parse_event_id(&id), Some((Some(0xabc), 42)));
        assert_eq!(parse_event_id("7"), Some((None, 7)));
        assert_eq!(parse_event_id("x-7"), None);
        assert_eq!(parse_event_id(""), None);
        assert_eq!(parse_event_id("+7"), None);
        assert_eq!(parse_event_id(" 7"), None);
        assert_eq!(parse_event_id("abc-"), None);
        assert_eq!(
            parse_event_id("9999999999999999999"),
            Some((None, 9_999_999_999_999_999_999))
        );
        assert_eq!(parse_event_id("10000000000000000000"), None);
    }
}
