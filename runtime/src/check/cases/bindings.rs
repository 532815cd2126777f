//! Bindings of the life cycle's instance: bind, repeat, conflict, fetch, unbind.

use super::life_cycle::finish;
use super::*;

pub(super) async fn bindings(
    c: &Client,
    r: &mut Report,
    t: &Target,
    instance: &str,
) -> anyhow::Result<()> {
    // Long on purpose: one case after another, in the order a platform meets them.
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
    let credentials_ok = answer.body.get("credentials").is_none_or(Value::is_object);
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
    unbinds(c, r, t, &binding).await
}

/// Unbinds: refused without its query, then done and followed to its end, then gone.
async fn unbinds(c: &Client, r: &mut Report, t: &Target, binding: &str) -> anyhow::Result<()> {
    let no_query = c.call(Method::DELETE, binding, None).await?;
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
        finish(c, r, "unbind (delete)", &deleted, binding).await?;
    }
    let again = c.call(Method::DELETE, &delete, None).await?;
    r.record(
        "unbind: repeat after deletion → 410",
        again.status == StatusCode::GONE && again.is_object(),
        again.summary(),
    );
    Ok(())
}
