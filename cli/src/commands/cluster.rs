//! `waypost cluster status|add-member|remove-member` (/cluster). JSON: the `ClusterStatus`
//! body (for the membership changes, the cluster after the change).

use clap::{Args, Subcommand};
use waypost_client::model::{AddMember, ClusterStatus};

use crate::{
    connect::Common,
    output::{self, Format, Table},
};

use super::{Outcome, done};

#[derive(Debug, Subcommand)]
pub(crate) enum Cluster {
    /// The leader, the term, and every member's role and lag, as the answering node sees them.
    Status(Common),
    /// Add a control plane (started with --join): a learner until it caught up, then a
    /// voter. Answered by the leader (followed there from another member).
    AddMember(AddArgs),
    /// Remove a control plane from the cluster.
    RemoveMember(RemoveArgs),
}

#[derive(Debug, Args)]
pub(crate) struct AddArgs {
    /// The new node's id (its --node-id).
    id: u64,
    /// Its base URL, as the other nodes reach it (`http://10.0.0.4:9000`).
    url: String,
    /// Keep it a learner (a non-voting copy).
    #[arg(long)]
    learner: bool,
    #[command(flatten)]
    common: Common,
}

#[derive(Debug, Args)]
pub(crate) struct RemoveArgs {
    /// The node id.
    id: u64,
    #[command(flatten)]
    common: Common,
}

pub(super) async fn run(c: &Cluster) -> Outcome {
    let (answer, common) = match c {
        Cluster::Status(common) => (common.client()?.cluster_status().await?, common),
        Cluster::AddMember(a) => {
            let member = AddMember {
                id: a.id,
                url: a.url.clone(),
                learner: a.learner,
            };
            (a.common.client()?.add_member(&member).await?, &a.common)
        }
        Cluster::RemoveMember(r) => (r.common.client()?.remove_member(r.id).await?, &r.common),
    };
    match common.format() {
        Format::Json => output::json(&answer),
        Format::Table => print(&answer),
    }
    done()
}

fn print(s: &ClusterStatus) {
    output::fields(&[
        ("node", s.node_id.to_string()),
        ("state", s.state.clone()),
        ("leader", output::opt(s.leader)),
        ("term", s.term.to_string()),
        ("last log index", s.last_log_index.to_string()),
        ("applied index", s.applied_index.to_string()),
        (
            "last contact",
            output::opt(s.last_contact_ms.map(|ms| format!("{ms} ms"))),
        ),
    ]);
    crate::output::outln!("");
    let mut table = Table::new(&[
        "id",
        "url",
        "role",
        "matched_index",
        "lag",
        "applied_index",
        "last_contact_ms",
    ]);
    for m in &s.members {
        table.row(vec![
            m.id.to_string(),
            m.url.clone(),
            m.role.clone(),
            output::opt(m.matched_index),
            output::opt(m.lag),
            output::opt(m.applied_index),
            output::opt(m.last_contact_ms),
        ]);
    }
    table.print();
}
