//! `waypost watch [SERVICE]`: one line per change until Ctrl-C (GET /watch). JSON: each
//! `WatchEvent` (the events' `data`, a `snapshot` first) on a line of its own.

use std::{io::Write, process::ExitCode};

use clap::Args;
use futures_util::StreamExt;
use waypost_client::{
    Filter, StreamEvent,
    model::{Instance, WatchEvent},
};

use crate::{
    connect::Common,
    output::{self, Format},
};

use super::{Outcome, done};

#[derive(Debug, Args)]
pub(crate) struct Watch {
    /// The service [default: every service].
    service: Option<String>,
    #[command(flatten)]
    common: Common,
}

pub(super) async fn run(w: &Watch) -> Outcome {
    let client = w.common.client()?;
    // One plain request first, so that a refusal (a bad name, a token that may not read) or a
    // control plane that is not there ends the command with its status; once following, the
    // stream reconnects on its own.
    match &w.service {
        Some(service) => drop(client.discover(service, &Filter::default()).await?),
        None => drop(client.services().await?),
    }
    let format = w.common.format();
    let mut events = client.watch_events(w.service.as_deref());
    let stop = waypost_runtime::signal::shutdown();
    tokio::pin!(stop);
    loop {
        let event = tokio::select! {
            () = &mut stop => return done(),
            event = events.next() => event,
        };
        let Some(event) = event else { return done() };
        match event {
            StreamEvent::Connected { endpoint } => eprintln!("waypost: watching {endpoint}"),
            StreamEvent::Disconnected { endpoint, error } => {
                eprintln!("waypost: {endpoint}: {error}; reconnecting");
            }
            StreamEvent::Event { event, .. } => {
                let written = match format {
                    Format::Json => output::json_line(&event),
                    Format::Table => line(&event),
                };
                // stdout closed (`| head -1`): nobody reads any more.
                if written.is_err() {
                    return Ok(ExitCode::SUCCESS);
                }
            }
        }
    }
}

/// One change as one line: revision, what happened, the instance.
fn line(event: &WatchEvent) -> std::io::Result<()> {
    let text = match event {
        WatchEvent::Snapshot {
            revision,
            instances,
            ..
        } => format!(
            "{revision}  snapshot  {} instance{}",
            instances.len(),
            if instances.len() == 1 { "" } else { "s" }
        ),
        WatchEvent::Upsert {
            revision,
            reason,
            instance,
        } => format!(
            "{revision}  {}  {}",
            output::wire(reason),
            describe(instance)
        ),
        WatchEvent::Remove {
            revision,
            reason,
            service,
            id,
        } => format!(
            "{revision}  {}  {}/{}",
            output::wire(reason),
            service.as_str(),
            id.as_str()
        ),
    };
    let mut out = std::io::stdout().lock();
    writeln!(out, "{text}")?;
    out.flush()
}

fn describe(i: &Instance) -> String {
    format!(
        "{}/{}  {}  {}  {}",
        i.service.as_str(),
        i.id.as_str(),
        i.address,
        output::wire(&i.status),
        output::wire(&i.health)
    )
}
