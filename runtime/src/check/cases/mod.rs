//! The cases of the checker, in the order a platform would meet them: catalog and headers,
//! refused provisions, then a whole life cycle (provision, fetch, bind, unbind, update,
//! deprovision) with its repeats and conflicts.

mod bindings;
mod catalog;
mod examples;
mod life_cycle;
mod refusals;

use super::Report;
use crate::client::{Answer, Client};
use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// How long a long operation may take before the checker gives up on it.
pub(super) const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);

/// The service and plans a run uses, from the catalog.
pub(super) struct Target {
    service: Value,
    plan: Value,
    /// Another plan of the same service, for conflicts and plan changes.
    sibling: Option<Value>,
    /// A plan of another service, to check it is refused.
    foreign_plan: Option<String>,
}

impl Target {
    fn service_id(&self) -> &str {
        self.service["id"].as_str().unwrap_or_default()
    }
    fn plan_id(&self) -> &str {
        self.plan["id"].as_str().unwrap_or_default()
    }
    fn flag(&self, name: &str) -> bool {
        self.service[name].as_bool().unwrap_or(false)
    }
    fn bindable(&self) -> bool {
        self.plan["bindable"]
            .as_bool()
            .unwrap_or_else(|| self.flag("bindable"))
    }
    fn plan_updateable(&self) -> bool {
        self.plan["plan_updateable"]
            .as_bool()
            .unwrap_or_else(|| self.flag("plan_updateable"))
    }
    fn provision_body(&self) -> Value {
        json!({
            "service_id": self.service_id(), "plan_id": self.plan_id(),
            "organization_guid": "brokerbox-check-org", "space_guid": "brokerbox-check-space",
            "context": { "platform": "brokerbox-check" },
        })
    }
    fn ids_query(&self) -> String {
        format!(
            "service_id={}&plan_id={}",
            self.service_id(),
            self.plan_id()
        )
    }
}

pub(super) fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Records `name` as passed when `answer` has `status` and an OSB error body.
pub(super) fn expect_error(r: &mut Report, name: &str, answer: &Answer, status: StatusCode) {
    let ok = answer.status == status && answer.has_description();
    r.record(
        name,
        ok,
        format!(
            "want {} with a description, {}",
            status.as_u16(),
            answer.summary()
        ),
    );
}

/// Records `name` as passed when `answer` has one of `statuses` and a JSON object body.
pub(super) fn expect_success(
    r: &mut Report,
    name: &str,
    answer: &Answer,
    statuses: &[StatusCode],
) -> bool {
    let ok = statuses.contains(&answer.status) && answer.is_object();
    let want: Vec<_> = statuses.iter().map(|s| s.as_u16().to_string()).collect();
    r.record(
        name,
        ok,
        format!(
            "want {} with a JSON object, {}",
            want.join("/"),
            answer.summary()
        ),
    );
    ok
}

/// Runs every case against the broker behind `c`, then each of `examples`.
pub async fn run_all(
    c: &Client,
    r: &mut Report,
    examples: &[crate::manifest::Example],
) -> anyhow::Result<()> {
    let catalog = catalog::catalog(c, r).await?;
    catalog::headers(c, r).await?;
    let target = pick(&catalog).context("the catalog has no service with a plan")?;
    refusals::refused_provisions(c, r, &target).await?;
    life_cycle::life_cycle(c, r, &target).await?;
    examples::run_examples(c, r, &catalog, examples).await
}

/// Whether `plan` can be provisioned without parameters (its create schema requires none).
fn needs_no_parameters(plan: &Value) -> bool {
    plan["schemas"]["service_instance"]["create"]["parameters"]["required"]
        .as_array()
        .is_none_or(Vec::is_empty)
}

fn pick(catalog: &Value) -> Option<Target> {
    let services = catalog["services"].as_array()?;
    let (service, plan) = services.iter().find_map(|s| {
        let plan = s["plans"]
            .as_array()?
            .iter()
            .find(|p| needs_no_parameters(p))?;
        Some((s, plan))
    })?;
    let sibling = service["plans"]
        .as_array()?
        .iter()
        .find(|p| p["id"] != plan["id"] && needs_no_parameters(p))
        .cloned();
    let foreign_plan = services
        .iter()
        .filter(|s| s["id"] != service["id"])
        .flat_map(|s| s["plans"].as_array().into_iter().flatten())
        .find_map(|p| p["id"].as_str().map(str::to_string));
    Some(Target {
        service: service.clone(),
        plan: plan.clone(),
        sibling,
        foreign_plan,
    })
}
