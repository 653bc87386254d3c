//! `waypost services`: GET /services. JSON: the `ServicesResponse` body.

use crate::{
    connect::Common,
    output::{self, Format, Table},
};

use super::{Outcome, done};

pub(super) async fn run(common: &Common) -> Outcome {
    let answer = common.client()?.services().await?;
    match common.format() {
        Format::Json => output::json(&answer),
        Format::Table => {
            let mut table = Table::new(&["service", "instances", "active", "vip", "policy"]);
            for (name, s) in &answer.services {
                table.row(vec![
                    name.clone(),
                    s.total_instances.to_string(),
                    s.active_instances.to_string(),
                    output::opt(s.vip),
                    s.policy
                        .as_ref()
                        .map_or_else(|| "-".into(), super::policy::summary),
                ]);
            }
            if table.is_empty() {
                crate::output::outln!("no services (revision {})", answer.revision);
            } else {
                table.print();
            }
        }
    }
    done()
}
