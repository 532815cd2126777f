//! Provisions and deletes that must be refused before anything is created.

use super::*;

pub(super) async fn refused_provisions(
    c: &Client,
    r: &mut Report,
    t: &Target,
) -> anyhow::Result<()> {
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
    other_refusals(c, r, t, &path).await
}

/// Refusals of a foreign maintenance_info, malformed JSON, deletes without ids or of unknown
/// instances, and fetches of unknown instances.
async fn other_refusals(c: &Client, r: &mut Report, t: &Target, path: &str) -> anyhow::Result<()> {
    // Long on purpose: one case after another, in the order a platform meets them.
    let mut stale = t.provision_body();
    stale["maintenance_info"] = json!({ "version": "0.0.1-brokerbox-check" });
    let answer = c.call(Method::PUT, path, Some(&stale)).await?;
    let ok = answer.status == StatusCode::UNPROCESSABLE_ENTITY
        && answer.field("error") == Some("MaintenanceInfoConflict");
    r.record(
        "provision: foreign maintenance_info.version → 422 MaintenanceInfoConflict",
        ok,
        answer.summary(),
    );
    let malformed = c
        .send(
            c.request(Method::PUT, path)
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
