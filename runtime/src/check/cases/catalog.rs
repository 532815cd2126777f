//! The catalog and the headers every request needs.

use super::*;

pub(super) async fn catalog(c: &Client, r: &mut Report) -> anyhow::Result<Value> {
    // Long on purpose: one case after another, in the order a platform meets them.
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
    let services = answer.body["services"].as_array().cloned();
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
    Ok(answer.body)
}

pub(super) async fn headers(c: &Client, r: &mut Report) -> anyhow::Result<()> {
    // Long on purpose: one case after another, in the order a platform meets them.
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
