//! The manifest's `[[examples]]` as acceptance tests: each one's whole life cycle (provision,
//! bind, credentials checked against its schema, unbind, deprovision), reported per example.

use super::life_cycle::finish;
use super::*;
use crate::manifest::Example;

/// Sends one step of an example (`accepts_incomplete=true`), follows a 202 at `poll`, and
/// records `WHAT: step`. Returns the answer when the step succeeded.
async fn step(
    c: &Client,
    r: &mut Report,
    name: String,
    request: (Method, String),
    body: Option<&Value>,
    poll: &str,
) -> anyhow::Result<Option<Answer>> {
    let (method, path) = request;
    let answer = c.call(method, &path, body).await?;
    let ok = finish(c, r, &name, &answer, poll).await?;
    r.record(name, ok, answer.summary());
    Ok(ok.then_some(answer))
}

/// Runs every example against the broker whose catalog is `catalog`.
pub(in crate::check) async fn run_examples(
    c: &Client,
    r: &mut Report,
    catalog: &Value,
    examples: &[Example],
) -> anyhow::Result<()> {
    for example in examples {
        let what = format!("example {}", example.name);
        match example.find_plan(catalog) {
            Ok((service, plan)) => run_one(c, r, &what, example, &service, &plan).await?,
            Err(problem) => r.record(
                format!("{what}: its plan is in the catalog"),
                false,
                problem,
            ),
        }
    }
    Ok(())
}

async fn run_one(
    c: &Client,
    r: &mut Report,
    what: &str,
    example: &Example,
    service: &str,
    plan: &str,
) -> anyhow::Result<()> {
    let instance = format!("/v2/service_instances/{}", new_id());
    let mut body = json!({
        "service_id": service, "plan_id": plan,
        "organization_guid": "brokerbox-check-org", "space_guid": "brokerbox-check-space",
        "context": { "platform": "brokerbox-check" },
    });
    if let Some(parameters) = &example.provision_parameters {
        body["parameters"] = parameters.clone();
    }
    let put = (Method::PUT, format!("{instance}?accepts_incomplete=true"));
    let provision = format!("{what}: provision");
    if step(c, r, provision, put, Some(&body), &instance)
        .await?
        .is_none()
    {
        return Ok(());
    }
    bind_unbind(c, r, what, example, service, plan, &instance).await?;
    let query = format!("accepts_incomplete=true&service_id={service}&plan_id={plan}");
    let delete = (Method::DELETE, format!("{instance}?{query}"));
    step(
        c,
        r,
        format!("{what}: deprovision"),
        delete,
        None,
        &instance,
    )
    .await?;
    Ok(())
}

/// Binds, checks the credentials against the example's schema, and unbinds.
async fn bind_unbind(
    c: &Client,
    r: &mut Report,
    what: &str,
    example: &Example,
    service: &str,
    plan: &str,
    instance: &str,
) -> anyhow::Result<()> {
    let binding = format!("{instance}/service_bindings/{}", new_id());
    let mut body = json!({ "service_id": service, "plan_id": plan });
    if let Some(parameters) = &example.bind_parameters {
        body["parameters"] = parameters.clone();
    }
    let put = (Method::PUT, format!("{binding}?accepts_incomplete=true"));
    let Some(bound) = step(c, r, format!("{what}: bind"), put, Some(&body), &binding).await? else {
        return Ok(());
    };
    // A binding made asynchronously hands its credentials out on GET.
    let result = if bound.status == StatusCode::ACCEPTED {
        c.call(Method::GET, &binding, None).await?
    } else {
        bound
    };
    let credentials = result
        .body
        .get("credentials")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(schema) = &example.credentials_schema {
        let problems = crate::manifest::schema_problems(schema, &credentials);
        r.record(
            format!("{what}: credentials match the schema"),
            problems.is_empty(),
            format!("{} in {credentials}", problems.join("; ")),
        );
    }
    let query = format!("accepts_incomplete=true&service_id={service}&plan_id={plan}");
    let delete = (Method::DELETE, format!("{binding}?{query}"));
    step(c, r, format!("{what}: unbind"), delete, None, &binding).await?;
    Ok(())
}
