//! The cases of the checker, in the order a platform would meet them: catalog and headers,
//! refused provisions, then a whole life cycle (provision, fetch, bind, unbind, update,
//! deprovision) with its repeats and conflicts.

use super::client::{Answer, Client};
use super::Report;
use anyhow::Context;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

/// How long a long operation may take before the checker gives up on it.
const OPERATION_TIMEOUT: Duration = Duration::from_secs(120);

/// The service and plans a run uses, from the catalog.
struct Target {
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

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// Records `name` as passed when `answer` has `status` and an OSB error body.
fn expect_error(r: &mut Report, name: &str, answer: &Answer, status: StatusCode) {
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
fn expect_success(r: &mut Report, name: &str, answer: &Answer, statuses: &[StatusCode]) -> bool {
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

/// Runs every case against the broker behind `c`.
pub async fn run_all(c: &Client, r: &mut Report) -> anyhow::Result<()> {
    let catalog = catalog(c, r).await?;
    headers(c, r).await?;
    let target = pick(&catalog).context("the catalog has no service with a plan")?;
    refused_provisions(c, r, &target).await?;
    life_cycle(c, r, &target).await
}

async fn catalog(c: &Client, r: &mut Report) -> anyhow::Result<Value> {
    let url = format!("{}/v2/catalog", c.base());
    let answer = c
        .call(Method::GET, "/v2/catalog", None)
        .await
        .with_context(|| format!("cannot reach the broker at {url}"))?;
    let said = answer
        .field("description")
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    match answer.status {
        StatusCode::OK => {}
        StatusCode::UNAUTHORIZED => anyhow::bail!(
            "GET {url} answered 401 Unauthorized{said}: the user name or password is wrong, or no broker is served at this URL"
        ),
        StatusCode::NOT_FOUND => {
            let hint = if c.base().ends_with("/v2") {
                "; leave /v2 out of the URL: give the URL a platform registers"
            } else {
                "; give the URL a platform registers, before /v2 (for brokerbox: http://HOST:PORT/brokers/NAME)"
            };
            anyhow::bail!("GET {url} answered 404 Not Found{said}: no OSB catalog at this URL{hint}")
        }
        other => anyhow::bail!("GET {url} answered {other}{said}; a broker answers 200 with its catalog"),
    }
    let services = answer
        .body
        .as_ref()
        .and_then(|b| b["services"].as_array())
        .cloned();
    r.record(
        "catalog: 200 with a list of services",
        answer.status == StatusCode::OK && services.as_ref().is_some_and(|s| !s.is_empty()),
        answer.summary(),
    );
    let services = services.unwrap_or_default();
    let mut ids = std::collections::HashSet::new();
    let mut problems = Vec::new();
    for service in &services {
        for item in
            std::iter::once(service).chain(service["plans"].as_array().into_iter().flatten())
        {
            for field in ["id", "name", "description"] {
                if item[field].as_str().is_none_or(|v| v.trim().is_empty()) {
                    problems.push(format!("an entry lacks a non-empty {field}"));
                }
            }
            if let Some(id) = item["id"].as_str() {
                if !ids.insert(id.to_string()) {
                    problems.push(format!("id {id} is used twice"));
                }
            }
        }
        if service["plans"].as_array().is_none_or(Vec::is_empty) {
            problems.push(format!("service {} has no plans", service["name"]));
        }
        if service["bindable"].as_bool().is_none() {
            problems.push(format!(
                "service {} lacks the boolean `bindable`",
                service["name"]
            ));
        }
    }
    r.record(
        "catalog: unique ids; names, descriptions and plans present",
        problems.is_empty(),
        problems.join("; "),
    );
    Ok(answer.body.unwrap_or_default())
}

async fn headers(c: &Client, r: &mut Report) -> anyhow::Result<()> {
    let catalog = || c.bare(Method::GET, "/v2/catalog");
    let wrong = c
        .send(
            c.wrong_password(catalog())
                .header("X-Broker-API-Version", &c.version),
        )
        .await?;
    expect_error(
        r,
        "auth: wrong credentials → 401",
        &wrong,
        StatusCode::UNAUTHORIZED,
    );
    let missing = c.send(c.authorize(catalog())).await?;
    expect_error(
        r,
        "version: missing X-Broker-API-Version → 412",
        &missing,
        StatusCode::PRECONDITION_FAILED,
    );
    for version in ["1.13", "3.0", "two"] {
        let answer = c
            .send(
                c.authorize(catalog())
                    .header("X-Broker-API-Version", version),
            )
            .await?;
        expect_error(
            r,
            &format!("version: {version:?} → 412"),
            &answer,
            StatusCode::PRECONDITION_FAILED,
        );
    }
    let identity = c
        .send(
            c.request(Method::GET, "/v2/catalog")
                .header("X-Broker-API-Request-Identity", "brokerbox-check-1"),
        )
        .await?;
    let echoed = identity
        .headers
        .get("x-broker-api-request-identity")
        .and_then(|v| v.to_str().ok());
    r.record(
        "headers: X-Broker-API-Request-Identity is echoed",
        echoed == Some("brokerbox-check-1"),
        format!("got {echoed:?}"),
    );
    let malformed = c
        .send(
            c.request(Method::GET, "/v2/catalog")
                .header("X-Broker-API-Originating-Identity", "cloudfoundry %%%"),
        )
        .await?;
    expect_error(
        r,
        "headers: malformed X-Broker-API-Originating-Identity → 400",
        &malformed,
        StatusCode::BAD_REQUEST,
    );
    Ok(())
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

async fn refused_provisions(c: &Client, r: &mut Report, t: &Target) -> anyhow::Result<()> {
    let path = format!("/v2/service_instances/{}?accepts_incomplete=true", new_id());
    let mut cases = vec![
        (
            "provision: missing service_id → 400",
            json!({ "plan_id": t.plan_id() }),
        ),
        (
            "provision: missing plan_id → 400",
            json!({ "service_id": t.service_id() }),
        ),
        (
            "provision: unknown plan_id → 400",
            json!({ "service_id": t.service_id(), "plan_id": new_id() }),
        ),
        (
            "provision: unknown service_id → 400",
            json!({ "service_id": new_id(), "plan_id": t.plan_id() }),
        ),
        (
            "provision: parameters that are not an object → 400",
            json!({ "service_id": t.service_id(), "plan_id": t.plan_id(), "parameters": [1] }),
        ),
    ];
    if let Some(foreign) = &t.foreign_plan {
        cases.push((
            "provision: plan of another service → 400",
            json!({ "service_id": t.service_id(), "plan_id": foreign }),
        ));
    }
    for (name, body) in cases {
        let answer = c.call(Method::PUT, &path, Some(&body)).await?;
        expect_error(r, name, &answer, StatusCode::BAD_REQUEST);
    }
    let mut stale = t.provision_body();
    stale["maintenance_info"] = json!({ "version": "0.0.1-brokerbox-check" });
    let answer = c.call(Method::PUT, &path, Some(&stale)).await?;
    let ok = answer.status == StatusCode::UNPROCESSABLE_ENTITY
        && answer.field("error") == Some("MaintenanceInfoConflict");
    r.record(
        "provision: foreign maintenance_info.version → 422 MaintenanceInfoConflict",
        ok,
        answer.summary(),
    );
    let malformed = c
        .send(
            c.request(Method::PUT, &path)
                .header("content-type", "application/json")
                .body("{"),
        )
        .await?;
    expect_error(
        r,
        "provision: malformed JSON → 400",
        &malformed,
        StatusCode::BAD_REQUEST,
    );
    let delete = c
        .call(
            Method::DELETE,
            &format!("/v2/service_instances/{}?plan_id={}", new_id(), t.plan_id()),
            None,
        )
        .await?;
    expect_error(
        r,
        "deprovision: missing service_id → 400",
        &delete,
        StatusCode::BAD_REQUEST,
    );
    let unknown = c
        .call(
            Method::DELETE,
            &format!("/v2/service_instances/{}?{}", new_id(), t.ids_query()),
            None,
        )
        .await?;
    r.record(
        "deprovision: unknown instance → 410",
        unknown.status == StatusCode::GONE && unknown.is_object(),
        unknown.summary(),
    );
    if t.flag("instances_retrievable") {
        let fetched = c
            .call(
                Method::GET,
                &format!("/v2/service_instances/{}", new_id()),
                None,
            )
            .await?;
        expect_error(
            r,
            "fetch: unknown instance → 404",
            &fetched,
            StatusCode::NOT_FOUND,
        );
    }
    Ok(())
}

/// Follows an answer to its end: a 202 is polled at `poll_path` until it is no longer in
/// progress. Returns whether it succeeded.
async fn finish(
    c: &Client,
    r: &mut Report,
    what: &str,
    answer: &Answer,
    poll_path: &str,
) -> anyhow::Result<bool> {
    if answer.status != StatusCode::ACCEPTED {
        return Ok(answer.status.is_success());
    }
    let query = answer
        .field("operation")
        .map(|op| format!("?operation={op}"))
        .unwrap_or_default();
    let deadline = tokio::time::Instant::now() + OPERATION_TIMEOUT;
    let mut retry_after_seen = true;
    loop {
        let polled = c
            .call(
                Method::GET,
                &format!("{poll_path}/last_operation{query}"),
                None,
            )
            .await?;
        let state = polled.field("state").map(str::to_string);
        match state.as_deref() {
            Some("in progress") if tokio::time::Instant::now() < deadline => {
                retry_after_seen &= polled.headers.contains_key("retry-after");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Some("succeeded") => {
                r.record(
                    format!("{what}: last_operation reaches succeeded"),
                    true,
                    "",
                );
                r.record(
                    format!("{what}: last_operation in progress carries Retry-After"),
                    retry_after_seen,
                    "no Retry-After header",
                );
                return Ok(true);
            }
            _ if polled.status == StatusCode::GONE && what.contains("delete") => {
                r.record(
                    format!("{what}: last_operation reaches succeeded (410 Gone)"),
                    true,
                    "",
                );
                return Ok(true);
            }
            _ => {
                r.record(
                    format!("{what}: last_operation reaches succeeded"),
                    false,
                    polled.summary(),
                );
                return Ok(false);
            }
        }
    }
}

/// A provision without `accepts_incomplete` finishes synchronously or is refused with
/// `AsyncRequired`; what it created is deleted again.
async fn synchronous_provision(c: &Client, r: &mut Report, t: &Target) -> anyhow::Result<()> {
    let instance = format!("/v2/service_instances/{}", new_id());
    let answer = c
        .call(Method::PUT, &instance, Some(&t.provision_body()))
        .await?;
    let refused = answer.status == StatusCode::UNPROCESSABLE_ENTITY
        && answer.field("error") == Some("AsyncRequired");
    let ok = refused || (answer.status == StatusCode::CREATED && answer.is_object());
    r.record(
        "provision: without accepts_incomplete → 201 or 422 AsyncRequired",
        ok,
        answer.summary(),
    );
    if answer.status == StatusCode::CREATED {
        c.call(
            Method::DELETE,
            &format!("{instance}?{}", t.ids_query()),
            None,
        )
        .await?;
    }
    Ok(())
}

async fn life_cycle(c: &Client, r: &mut Report, t: &Target) -> anyhow::Result<()> {
    synchronous_provision(c, r, t).await?;
    let id = new_id();
    let instance = format!("/v2/service_instances/{id}");
    let create = format!("{instance}?accepts_incomplete=true");
    let answer = c
        .call(Method::PUT, &create, Some(&t.provision_body()))
        .await?;
    let created = expect_success(
        r,
        "provision: 201 or 202",
        &answer,
        &[StatusCode::CREATED, StatusCode::ACCEPTED],
    );
    if !created || !finish(c, r, "provision", &answer, &instance).await? {
        return Ok(());
    }
    let again = c
        .call(Method::PUT, &create, Some(&t.provision_body()))
        .await?;
    expect_success(
        r,
        "provision: identical repeat → 200",
        &again,
        &[StatusCode::OK],
    );
    if let Some(sibling) = &t.sibling {
        let mut other = t.provision_body();
        other["plan_id"] = sibling["id"].clone();
        let conflict = c.call(Method::PUT, &create, Some(&other)).await?;
        r.record(
            "provision: same id, other plan → 409",
            conflict.status == StatusCode::CONFLICT && conflict.is_object(),
            conflict.summary(),
        );
    }
    if t.flag("instances_retrievable") {
        let fetched = c.call(Method::GET, &instance, None).await?;
        let ok = fetched.status == StatusCode::OK
            && fetched.field("plan_id") == Some(t.plan_id())
            && fetched.field("service_id") == Some(t.service_id());
        r.record(
            "fetch: instance → 200 with service_id and plan_id",
            ok,
            fetched.summary(),
        );
    }
    if t.bindable() {
        bindings(c, r, t, &instance).await?;
    }
    if let (false, Some(sibling)) = (t.plan_updateable(), &t.sibling) {
        let body = json!({ "service_id": t.service_id(), "plan_id": sibling["id"] });
        let refused = c.call(Method::PATCH, &create, Some(&body)).await?;
        expect_error(
            r,
            "update: plan change on a plan that is not plan_updateable → 422",
            &refused,
            StatusCode::UNPROCESSABLE_ENTITY,
        );
    }
    let mut current_plan = t.plan_id().to_string();
    if let (true, Some(sibling)) = (t.plan_updateable(), &t.sibling) {
        let body = json!({ "service_id": t.service_id(), "plan_id": sibling["id"] });
        let updated = c.call(Method::PATCH, &create, Some(&body)).await?;
        if expect_success(
            r,
            "update: plan change → 200 or 202",
            &updated,
            &[StatusCode::OK, StatusCode::ACCEPTED],
        ) && finish(c, r, "update", &updated, &instance).await?
        {
            current_plan = sibling["id"].as_str().unwrap_or_default().to_string();
        }
    }
    let delete = format!(
        "{instance}?service_id={}&plan_id={current_plan}&accepts_incomplete=true",
        t.service_id()
    );
    let deleted = c.call(Method::DELETE, &delete, None).await?;
    if expect_success(
        r,
        "deprovision: 200 or 202",
        &deleted,
        &[StatusCode::OK, StatusCode::ACCEPTED],
    ) {
        finish(c, r, "deprovision (delete)", &deleted, &instance).await?;
    }
    let again = c.call(Method::DELETE, &delete, None).await?;
    r.record(
        "deprovision: repeat after deletion → 410",
        again.status == StatusCode::GONE && again.is_object(),
        again.summary(),
    );
    if t.flag("instances_retrievable") {
        let fetched = c.call(Method::GET, &instance, None).await?;
        expect_error(
            r,
            "fetch: deleted instance → 404",
            &fetched,
            StatusCode::NOT_FOUND,
        );
    }
    Ok(())
}

async fn bindings(c: &Client, r: &mut Report, t: &Target, instance: &str) -> anyhow::Result<()> {
    let binding = format!("{instance}/service_bindings/{}", new_id());
    let create = format!("{binding}?accepts_incomplete=true");
    let missing = c
        .call(
            Method::PUT,
            &create,
            Some(&json!({ "plan_id": t.plan_id() })),
        )
        .await?;
    expect_error(
        r,
        "bind: missing service_id → 400",
        &missing,
        StatusCode::BAD_REQUEST,
    );
    let body = json!({
        "service_id": t.service_id(), "plan_id": t.plan_id(),
        "app_guid": "brokerbox-check-app", "bind_resource": { "app_guid": "brokerbox-check-app" },
    });
    let answer = c.call(Method::PUT, &create, Some(&body)).await?;
    if !expect_success(
        r,
        "bind: 201 or 202",
        &answer,
        &[StatusCode::CREATED, StatusCode::ACCEPTED],
    ) {
        return Ok(());
    }
    let credentials_ok = answer
        .body
        .as_ref()
        .and_then(|b| b.get("credentials"))
        .is_none_or(Value::is_object);
    r.record(
        "bind: credentials, when present, are an object",
        credentials_ok,
        answer.summary(),
    );
    if !finish(c, r, "bind", &answer, &binding).await? {
        return Ok(());
    }
    let again = c.call(Method::PUT, &create, Some(&body)).await?;
    expect_success(r, "bind: identical repeat → 200", &again, &[StatusCode::OK]);
    if t.flag("bindings_retrievable") {
        let fetched = c.call(Method::GET, &binding, None).await?;
        expect_success(r, "fetch: binding → 200", &fetched, &[StatusCode::OK]);
        let unknown = c
            .call(
                Method::GET,
                &format!("{instance}/service_bindings/{}", new_id()),
                None,
            )
            .await?;
        expect_error(
            r,
            "fetch: unknown binding → 404",
            &unknown,
            StatusCode::NOT_FOUND,
        );
    }
    let no_query = c.call(Method::DELETE, &binding, None).await?;
    expect_error(
        r,
        "unbind: missing service_id and plan_id → 400",
        &no_query,
        StatusCode::BAD_REQUEST,
    );
    let delete = format!("{binding}?{}&accepts_incomplete=true", t.ids_query());
    let deleted = c.call(Method::DELETE, &delete, None).await?;
    if expect_success(
        r,
        "unbind: 200 or 202",
        &deleted,
        &[StatusCode::OK, StatusCode::ACCEPTED],
    ) {
        finish(c, r, "unbind (delete)", &deleted, &binding).await?;
    }
    let again = c.call(Method::DELETE, &delete, None).await?;
    r.record(
        "unbind: repeat after deletion → 410",
        again.status == StatusCode::GONE && again.is_object(),
        again.summary(),
    );
    Ok(())
}
