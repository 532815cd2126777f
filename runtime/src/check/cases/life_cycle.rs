//! A whole life cycle: provision, fetch, update, deprovision, with repeats and conflicts.

use super::*;

/// Follows an answer to its end: a 202 is polled at `poll_path` until it is no longer in
/// progress. Returns whether it succeeded.
pub(super) async fn finish(
    c: &Client,
    r: &mut Report,
    what: &str,
    answer: &Answer,
    poll_path: &str,
) -> anyhow::Result<bool> {
    // Long on purpose: one case after another, in the order a platform meets them.
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
pub(super) async fn synchronous_provision(
    c: &Client,
    r: &mut Report,
    t: &Target,
) -> anyhow::Result<()> {
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

pub(super) async fn life_cycle(c: &Client, r: &mut Report, t: &Target) -> anyhow::Result<()> {
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
    repeats(c, r, t, &create, &instance).await?;
    if t.bindable() {
        super::bindings::bindings(c, r, t, &instance).await?;
    }
    let current_plan = updates(c, r, t, &create, &instance).await?;
    deletes(c, r, t, &instance, &current_plan).await
}

/// The repeats of a finished provision: identical (200), conflicting (409), fetched (200).
async fn repeats(
    c: &Client,
    r: &mut Report,
    t: &Target,
    create: &str,
    instance: &str,
) -> anyhow::Result<()> {
    let again = c
        .call(Method::PUT, create, Some(&t.provision_body()))
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
        let conflict = c.call(Method::PUT, create, Some(&other)).await?;
        r.record(
            "provision: same id, other plan → 409",
            conflict.status == StatusCode::CONFLICT && conflict.is_object(),
            conflict.summary(),
        );
    }
    if t.flag("instances_retrievable") {
        let fetched = c.call(Method::GET, instance, None).await?;
        let ok = fetched.status == StatusCode::OK
            && fetched.field("plan_id") == Some(t.plan_id())
            && fetched.field("service_id") == Some(t.service_id());
        r.record(
            "fetch: instance → 200 with service_id and plan_id",
            ok,
            fetched.summary(),
        );
    }
    Ok(())
}

/// Updates of the instance: a refused plan change, or a plan change followed to its end.
/// Returns the plan the instance is on.
async fn updates(
    c: &Client,
    r: &mut Report,
    t: &Target,
    create: &str,
    instance: &str,
) -> anyhow::Result<String> {
    if let (false, Some(sibling)) = (t.plan_updateable(), &t.sibling) {
        let body = json!({ "service_id": t.service_id(), "plan_id": sibling["id"] });
        let refused = c.call(Method::PATCH, create, Some(&body)).await?;
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
        let updated = c.call(Method::PATCH, create, Some(&body)).await?;
        if expect_success(
            r,
            "update: plan change → 200 or 202",
            &updated,
            &[StatusCode::OK, StatusCode::ACCEPTED],
        ) && finish(c, r, "update", &updated, instance).await?
        {
            current_plan = sibling["id"].as_str().unwrap_or_default().to_string();
        }
    }
    Ok(current_plan)
}

/// The deprovision, followed to its end, and what must hold after it.
async fn deletes(
    c: &Client,
    r: &mut Report,
    t: &Target,
    instance: &str,
    current_plan: &str,
) -> anyhow::Result<()> {
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
        finish(c, r, "deprovision (delete)", &deleted, instance).await?;
    }
    let again = c.call(Method::DELETE, &delete, None).await?;
    r.record(
        "deprovision: repeat after deletion → 410",
        again.status == StatusCode::GONE && again.is_object(),
        again.summary(),
    );
    if t.flag("instances_retrievable") {
        let fetched = c.call(Method::GET, instance, None).await?;
        expect_error(
            r,
            "fetch: deleted instance → 404",
            &fetched,
            StatusCode::NOT_FOUND,
        );
    }
    Ok(())
}
