//! The rules a catalog must follow before a broker may serve it (OSB "Catalog Management").

use crate::sandbox::bindings::types::{MaintenanceInfo, ServiceCatalog};
use std::collections::HashSet;

/// What OSB allows in `requires`.
const KNOWN_REQUIRES: [&str; 3] = ["syslog_drain", "route_forwarding", "volume_mount"];

/// Every problem of `catalog`; empty when it is valid.
pub fn problems(catalog: &ServiceCatalog) -> Vec<String> {
    let mut out = Vec::new();
    if catalog.services.is_empty() {
        out.push("the catalog has no services".to_string());
    }
    let mut ids = HashSet::new();
    let mut service_names = HashSet::new();
    for service in &catalog.services {
        let what = format!("service {:?}", service.name);
        check_common(
            &what,
            &service.id,
            &service.name,
            &service.description,
            &mut ids,
            &mut out,
        );
        if !service_names.insert(service.name.as_str()) {
            out.push(format!("two services are named {:?}", service.name));
        }
        for required in &service.requires {
            if !KNOWN_REQUIRES.contains(&required.as_str()) {
                out.push(format!("{what}: unknown `requires` value {required:?}"));
            }
        }
        if service.plans.is_empty() {
            out.push(format!("{what} has no plans"));
        }
        let mut plan_names = HashSet::new();
        for plan in &service.plans {
            let what = format!("plan {:?} of service {:?}", plan.name, service.name);
            check_common(
                &what,
                &plan.id,
                &plan.name,
                &plan.description,
                &mut ids,
                &mut out,
            );
            if !plan_names.insert(plan.name.as_str()) {
                out.push(format!(
                    "service {:?} has two plans named {:?}",
                    service.name, plan.name
                ));
            }
            if let Some(info) = &plan.maintenance_info {
                check_maintenance(&what, info, &mut out);
            }
            if plan.maximum_polling_duration == Some(0) {
                out.push(format!("{what}: maximum_polling_duration must be positive"));
            }
        }
    }
    out
}

/// Id, name and description rules shared by services and plans.
fn check_common<'a>(
    what: &str,
    id: &'a str,
    name: &str,
    description: &str,
    ids: &mut HashSet<&'a str>,
    out: &mut Vec<String>,
) {
    if id.trim().is_empty() {
        out.push(format!("{what} has an empty id"));
    } else if !ids.insert(id) {
        out.push(format!("the id {id:?} is used twice"));
    }
    let cli_friendly = !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if !cli_friendly {
        out.push(format!(
            "{what}: the name must be CLI-friendly (letters, digits, '-', '.', '_'; no spaces)"
        ));
    }
    if description.trim().is_empty() {
        out.push(format!("{what} has an empty description"));
    }
}

/// `maintenance_info.version` must be a semantic version (semver 2.0).
fn check_maintenance(what: &str, info: &MaintenanceInfo, out: &mut Vec<String>) {
    if semver::Version::parse(&info.version).is_err() {
        out.push(format!(
            "{what}: maintenance_info.version {:?} is not a semantic version",
            info.version
        ));
    }
}
