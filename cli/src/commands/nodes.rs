//! `waypost nodes`: GET /nodes. JSON: the `NodesResponse` body.

use crate::{
    connect::Common,
    output::{self, Format, Table},
};

use super::{Outcome, done};

pub(super) async fn run(common: &Common) -> Outcome {
    let answer = common.client()?.nodes().await?;
    match common.format() {
        Format::Json => output::json(&answer),
        Format::Table => {
            let mut table = Table::new(&[
                "node",
                "state",
                "revision",
                "lag_revisions",
                "lag_ms",
                "last_contact_ms",
                "stale",
                "version",
                "dns",
                "http",
            ]);
            for n in &answer.nodes {
                table.row(vec![
                    n.node.clone(),
                    output::wire(&n.state),
                    n.report.revision.to_string(),
                    n.lag_revisions.to_string(),
                    n.lag_ms.to_string(),
                    n.last_contact_ms.to_string(),
                    n.report.stale.to_string(),
                    n.report.version.clone(),
                    output::list(&n.report.dns),
                    output::list(&n.report.http),
                ]);
            }
            if table.is_empty() {
                crate::output::outln!(
                    "no sidecar reports to this control plane (head revision {})",
                    answer.head
                );
            } else {
                table.print();
            }
        }
    }
    done()
}
