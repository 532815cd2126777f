//! Brokers written in Python and JavaScript (built by `scripts/build-guests` with the pinned
//! componentize-py and componentize-js): `brokerbox check`, full lifecycles, the Python SDK's
//! exceptions as OSB errors, and the same limits as Rust guests. The runtimes share one artifact
//! directory, so each large component compiles once per test run.

use brokerbox_tests::{guests, manifest, repo_root, TestRuntime};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

/// A runtime serving `brokers`, with compiled components kept in the shared artifact dir.
async fn runtime(brokers: &[(&str, &str, &str)]) -> TestRuntime {
    TestRuntime::start_with(brokers, |config| {
        config.artifacts_dir = Some(repo_root().join("target/test-artifacts"));
    })
    .await
    .unwrap()
}

fn example_manifest(name: &str) -> String {
    std::fs::read_to_string(repo_root().join(format!("examples/{name}/{name}.toml"))).unwrap()
}

async fn examples() -> TestRuntime {
    runtime(&[
        (
            "python-file-broker",
            guests::PYTHON_FILE_BROKER,
            &example_manifest("python-file-broker"),
        ),
        (
            "js-kv-broker",
            guests::JS_KV_BROKER,
            &example_manifest("js-kv-broker"),
        ),
    ])
    .await
}

/// The service id and the plan named `plan` of broker `name`'s catalog.
async fn plan_of(rt: &TestRuntime, name: &str, plan: &str) -> (String, String) {
    let catalog = rt.osb(Method::GET, name, "/v2/catalog", None).await;
    assert_eq!(catalog.status, StatusCode::OK, "{:?}", catalog.body);
    let service = &catalog.body["services"][0];
    let plan = service["plans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == plan)
        .unwrap_or_else(|| panic!("{name} has no plan {plan}: {service}"));
    (
        service["id"].as_str().unwrap().to_string(),
        plan["id"].as_str().unwrap().to_string(),
    )
}

#[tokio::test]
async fn check_reports_no_failure_for_the_python_and_javascript_examples() {
    let rt = examples().await;
    for name in ["python-file-broker", "js-kv-broker"] {
        crate::check::assert_check_passes(&rt, name, 30).await;
    }
}

#[tokio::test]
async fn the_python_file_broker_keeps_a_file_per_instance_and_provisions_long_plans_later() {
    let rt = examples().await;
    let name = "python-file-broker";
    let files = rt.files_dir(name);
    let (service, small) = plan_of(&rt, name, "small").await;
    let (_, large) = plan_of(&rt, name, "large").await;

    let body = json!({"service_id": service, "plan_id": small});
    let provisioned = rt
        .osb(Method::PUT, name, "/v2/service_instances/py-1", Some(body))
        .await;
    assert_eq!(
        provisioned.status,
        StatusCode::CREATED,
        "{:?}",
        provisioned.body
    );
    let written: Value =
        serde_json::from_str(&std::fs::read_to_string(files.join("py-1")).unwrap()).unwrap();
    assert_eq!(
        written,
        json!({"id": small, "name": "small", "description": "A small file"})
    );

    let bind = json!({"service_id": service, "plan_id": small});
    let bound = rt
        .osb(
            Method::PUT,
            name,
            "/v2/service_instances/py-1/service_bindings/b-1",
            Some(bind),
        )
        .await;
    assert_eq!(bound.status, StatusCode::CREATED, "{:?}", bound.body);
    let path = bound.body["credentials"]["file"].as_str().unwrap();
    assert_eq!(
        std::path::Path::new(path).canonicalize().unwrap(),
        files.join("py-1")
    );

    let update = json!({"service_id": service, "plan_id": large});
    let updated = rt
        .osb(
            Method::PATCH,
            name,
            "/v2/service_instances/py-1",
            Some(update),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    assert!(std::fs::read_to_string(files.join("py-1"))
        .unwrap()
        .contains("\"large\""));

    let query = format!("service_id={service}&plan_id={large}");
    let unbound = rt
        .osb(
            Method::DELETE,
            name,
            &format!("/v2/service_instances/py-1/service_bindings/b-1?{query}"),
            None,
        )
        .await;
    assert_eq!(unbound.status, StatusCode::OK, "{:?}", unbound.body);
    let gone = rt
        .osb(
            Method::DELETE,
            name,
            &format!("/v2/service_instances/py-1?{query}"),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::OK, "{:?}", gone.body);
    assert!(!files.join("py-1").exists(), "deprovision removed the file");

    // The slow plan: 202 at once, the file written when the platform polls.
    let (_, slow) = plan_of(&rt, name, "slow").await;
    let body = json!({"service_id": service, "plan_id": slow});
    let accepted = rt
        .osb(
            Method::PUT,
            name,
            "/v2/service_instances/py-slow?accepts_incomplete=true",
            Some(body),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
    let operation = accepted.body["operation"].as_str().unwrap().to_string();
    let done = rt
        .poll_until_done(name, "/v2/service_instances/py-slow", &operation)
        .await;
    assert_eq!(done.body["state"], "succeeded", "{:?}", done.body);
    assert!(std::fs::read_to_string(files.join("py-slow"))
        .unwrap()
        .contains("\"slow\""));
}

#[tokio::test]
async fn the_javascript_broker_keeps_its_records_in_kv_and_reads_its_config() {
    let rt = examples().await;
    let name = "js-kv-broker";
    let (service, plan) = plan_of(&rt, name, "shared").await;
    let catalog = rt.osb(Method::GET, name, "/v2/catalog", None).await;
    assert_eq!(
        catalog.body["services"][0]["description"], "Credentials for a database in eu-west",
        "[env] REGION reaches the guest at call time"
    );

    let body = json!({"service_id": service, "plan_id": plan, "parameters": {"size": 3}});
    let provisioned = rt
        .osb(Method::PUT, name, "/v2/service_instances/js-1", Some(body))
        .await;
    assert_eq!(
        provisioned.status,
        StatusCode::CREATED,
        "{:?}",
        provisioned.body
    );
    assert_eq!(
        provisioned.body["dashboard_url"],
        "https://db.eu-west.example.com/js-1"
    );

    let mut passwords = Vec::new();
    for binding in ["b-1", "b-2"] {
        let bind = json!({"service_id": service, "plan_id": plan});
        let path = format!("/v2/service_instances/js-1/service_bindings/{binding}");
        let bound = rt.osb(Method::PUT, name, &path, Some(bind)).await;
        assert_eq!(bound.status, StatusCode::CREATED, "{:?}", bound.body);
        let credentials = &bound.body["credentials"];
        assert_eq!(credentials["uri"], "postgres://db.eu-west.example.com/js-1");
        assert_eq!(credentials["username"], format!("u-{binding}"));
        passwords.push(credentials["password"].as_str().unwrap().to_string());
    }
    assert_ne!(
        passwords[0], passwords[1],
        "each binding gets its own password"
    );
    assert!(passwords.iter().all(|p| p.len() >= 20));

    // A binding of an instance the broker never recorded: its own 422 from kv.
    let query = format!("service_id={service}&plan_id={plan}");
    let unbind =
        |binding: &str| format!("/v2/service_instances/js-1/service_bindings/{binding}?{query}");
    let unbound = rt.osb(Method::DELETE, name, &unbind("b-1"), None).await;
    assert_eq!(unbound.status, StatusCode::OK, "{:?}", unbound.body);
    let deprovisioned = rt
        .osb(
            Method::DELETE,
            name,
            &format!("/v2/service_instances/js-1?{query}"),
            None,
        )
        .await;
    assert_eq!(
        deprovisioned.status,
        StatusCode::OK,
        "{:?}",
        deprovisioned.body
    );

    // Deprovision removed the instance and its remaining binding from kv: a new instance
    // with the same id starts clean.
    let body = json!({"service_id": service, "plan_id": plan});
    let again = rt
        .osb(Method::PUT, name, "/v2/service_instances/js-1", Some(body))
        .await;
    assert_eq!(again.status, StatusCode::CREATED, "{:?}", again.body);
}

async fn rules() -> TestRuntime {
    let extra = "[limits]\ncall_timeout_ms = 3000\n[grants]\nkv = true\n[env]\nGREETING = \"hi\"\n";
    runtime(&[(
        "python-rules",
        guests::PYTHON_RULES,
        &manifest("python-rules", extra),
    )])
    .await
}

/// Provisions instance `id` of the rules guest `broker` (service `BROKER-service`, plan
/// `BROKER-plan`) with `parameters`, which say what the guest does.
async fn provision(
    rt: &TestRuntime,
    broker: &str,
    id: &str,
    parameters: Value,
) -> brokerbox::client::Answer {
    let body = json!({
        "service_id": format!("{broker}-service"),
        "plan_id": format!("{broker}-plan"),
        "parameters": parameters,
    });
    let path = format!("/v2/service_instances/{id}");
    rt.osb(Method::PUT, broker, &path, Some(body)).await
}

/// Asserts that the rules guest `broker`, told `{KEY: CLASS}`, answers each case's status and
/// OSB `error` code, with a description saying "VERB CLASS".
async fn assert_error_classes(
    rt: &TestRuntime,
    broker: &str,
    (key, verb): (&str, &str),
    cases: &[(&str, u16, Option<&str>)],
) {
    for (i, (class, status, error)) in cases.iter().enumerate() {
        let answer = provision(rt, broker, &format!("e-{i}"), json!({ key: class })).await;
        assert_eq!(
            answer.status.as_u16(),
            *status,
            "{class}: {:?}",
            answer.body
        );
        assert_eq!(
            answer.body["error"].as_str(),
            *error,
            "{class}: {:?}",
            answer.body
        );
        let description = answer.body["description"].as_str().unwrap();
        assert!(
            description.contains(&format!("{verb} {class}")),
            "{class}: {description}"
        );
    }
}

#[tokio::test]
async fn each_python_exception_class_gives_its_osb_error() {
    let rt = rules().await;
    let cases = [
        ("BadRequest", 400, None),
        ("Conflict", 409, None),
        ("Gone", 410, None),
        ("AsyncRequired", 422, Some("AsyncRequired")),
        ("ConcurrencyError", 422, Some("ConcurrencyError")),
        ("RequiresApp", 422, Some("RequiresApp")),
        (
            "MaintenanceInfoConflict",
            422,
            Some("MaintenanceInfoConflict"),
        ),
        ("Unprocessable", 422, None),
        ("Internal", 500, None),
        ("ValueError", 500, None),
    ];
    assert_error_classes(&rt, "python-rules", ("raise", "raised"), &cases).await;
    // Any other exception names its type.
    let answer = provision(&rt, "python-rules", "e-type", json!({"raise": "KeyError"})).await;
    assert!(answer.body["description"]
        .as_str()
        .unwrap()
        .starts_with("KeyError"));

    // What a Python broker does at call time: its config, kv, and a long operation.
    let answer = provision(&rt, "python-rules", "cfg", json!({"config": "GREETING"})).await;
    assert_eq!(answer.body["dashboard_url"], "hi", "{:?}", answer.body);
    let answer = provision(&rt, "python-rules", "kv", json!({"kv": {"nested": [1, 2]}})).await;
    assert_eq!(answer.status, StatusCode::CREATED);
    let bind = json!({"service_id": "python-rules-service", "plan_id": "python-rules-plan"});
    let bound = rt
        .osb(
            Method::PUT,
            "python-rules",
            "/v2/service_instances/kv/service_bindings/b",
            Some(bind),
        )
        .await;
    assert_eq!(
        bound.body["credentials"],
        json!({"stored": {"nested": [1, 2]}})
    );
}

#[tokio::test]
async fn a_python_infinite_loop_and_memory_bomb_are_cut_by_the_limits() {
    let rt = rules().await;
    let started = std::time::Instant::now();
    let looped = provision(&rt, "python-rules", "loop", json!({"loop": true})).await;
    assert_eq!(looped.status, StatusCode::INTERNAL_SERVER_ERROR);
    let description = looped.body["description"].as_str().unwrap();
    assert!(
        description.contains("CPU budget") || description.contains("time limit"),
        "{description}"
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));

    let bomb = provision(&rt, "python-rules", "bomb", json!({"bomb": true})).await;
    assert_eq!(bomb.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        bomb.body["description"]
            .as_str()
            .unwrap()
            .contains("memory limit of 64 MiB"),
        "{:?}",
        bomb.body
    );

    // Neither left the broker unable to serve.
    let fine = provision(&rt, "python-rules", "after", json!({})).await;
    assert_eq!(fine.status, StatusCode::CREATED, "{:?}", fine.body);
}

/// The number a `{"count": true}` provision of the rules guest answers: how many such calls its
/// instance has served.
async fn counted(rt: &TestRuntime, id: &str) -> u64 {
    let answer = provision(rt, "python-rules", id, json!({"count": true})).await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    answer.body["dashboard_url"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn calls_reuse_a_warm_python_instance_only_where_the_manifest_opts_in() {
    // By default every call gets a fresh instance: module state never carries over.
    let rt = rules().await;
    for i in 0..3 {
        assert_eq!(counted(&rt, &format!("fresh-{i}")).await, 1);
    }
    drop(rt);

    let warm = |calls: u32| {
        let extra = format!(
            "[limits]\ncall_timeout_ms = 3000\ncalls_per_instance = {calls}\n\
             [grants]\nfiles = true\n"
        );
        async move {
            runtime(&[(
                "python-rules",
                guests::PYTHON_RULES,
                &manifest("python-rules", &extra),
            )])
            .await
        }
    };
    let rt = warm(1000).await;
    // Sequential calls share one instance.
    for (i, expected) in (1..=3).enumerate() {
        assert_eq!(counted(&rt, &format!("warm-{i}")).await, expected);
    }
    // A refusal is an answer: the instance is kept.
    let refused = provision(&rt, "python-rules", "refused", json!({"raise": "Conflict"})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT);
    assert_eq!(counted(&rt, "after-refusal").await, 4);
    // A call stopped by a limit never leaves its instance to the next call.
    let looped = provision(&rt, "python-rules", "loop", json!({"loop": true})).await;
    assert_eq!(looped.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(counted(&rt, "after-loop").await, 1);
    let bomb = provision(&rt, "python-rules", "bomb", json!({"bomb": true})).await;
    assert_eq!(bomb.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(counted(&rt, "after-bomb").await, 1);
    assert_eq!(counted(&rt, "after-bomb-2").await, 2);
    // An instance holding many host resources (here open files) is not kept: they would stay
    // open while it idles. A few are fine.
    let held = provision(&rt, "python-rules", "hold-few", json!({"hold": 2})).await;
    assert_eq!(held.status, StatusCode::CREATED, "{:?}", held.body);
    assert_eq!(counted(&rt, "after-few").await, 3);
    let held = provision(&rt, "python-rules", "hold-many", json!({"hold": 40})).await;
    assert_eq!(held.status, StatusCode::CREATED, "{:?}", held.body);
    assert_eq!(counted(&rt, "after-many").await, 1);
    // Operators see how many calls warm instances served: at least the five counted or refused
    // calls above that found one.
    let metrics = rt
        .client()
        .get(format!("http://{}/metrics", rt.server().addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let labels = [("broker", "python-rules"), ("tenant", "")];
    let served = brokerbox_tests::sample(&metrics, "brokerbox_guest_warm_calls_total", &labels);
    assert!(served >= 5.0, "{served}");
    // The instance that answered last waits, idle, with its memory counted.
    let idle = brokerbox_tests::sample(&metrics, "brokerbox_guest_idle_instances", &[]);
    assert!(idle >= 1.0, "{idle}");
    let bytes = brokerbox_tests::sample(&metrics, "brokerbox_guest_idle_memory_bytes", &[]);
    assert!(bytes >= 8.0 * 1024.0 * 1024.0, "CPython's memory: {bytes}");
    drop(rt);

    // An instance serves at most `calls_per_instance` calls, then a fresh one takes over.
    let rt = warm(2).await;
    let mut seen = Vec::new();
    for i in 0..6 {
        seen.push(counted(&rt, &format!("capped-{i}")).await);
    }
    assert!(seen.iter().all(|&n| n <= 2), "{seen:?}");
    assert!(seen.contains(&2), "{seen:?}");
}

#[tokio::test]
async fn python_http_reaches_only_the_granted_host() {
    let port = brokerbox_tests::ping_api().await;
    let extra = format!(
        "[grants]\noutbound_http = [\"127.0.0.1:{port}\"]\noutbound_http_private = [\"127.0.0.1:{port}\"]\n"
    );
    let rt = runtime(&[(
        "python-rules",
        guests::PYTHON_RULES,
        &manifest("python-rules", &extra),
    )])
    .await;
    let url = format!("http://127.0.0.1:{port}/ping");
    let fetched = provision(&rt, "python-rules", "h-1", json!({"fetch": url})).await;
    assert_eq!(fetched.status, StatusCode::CREATED, "{:?}", fetched.body);
    assert_eq!(fetched.body["dashboard_url"], "200 pong");
    let denied = format!("http://127.0.0.1:{}/ping", port + 1);
    let refused = provision(&rt, "python-rules", "h-2", json!({"fetch": denied})).await;
    assert_eq!(
        refused.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{:?}",
        refused.body
    );
    let description = refused.body["description"].as_str().unwrap();
    assert!(
        description.starts_with("HttpError") && description.contains("HttpRequestDenied"),
        "{description}"
    );
    // A redirect is followed, as a new request that the runtime checks again.
    let hop = format!("http://127.0.0.1:{port}/redirect?to=/ping");
    let followed = provision(&rt, "python-rules", "h-3", json!({"fetch": hop})).await;
    assert_eq!(followed.status, StatusCode::CREATED, "{:?}", followed.body);
    assert_eq!(followed.body["dashboard_url"], "200 pong");
    let away = format!("http://127.0.0.1:{port}/redirect?to={denied}");
    let refused = provision(&rt, "python-rules", "h-4", json!({"fetch": away})).await;
    assert_eq!(refused.status, StatusCode::INTERNAL_SERVER_ERROR);
    let description = refused.body["description"].as_str().unwrap();
    assert!(description.contains("HttpRequestDenied"), "{description}");
}

#[tokio::test]
async fn a_python_long_operation_gets_its_operation_data_back_as_a_dict() {
    let rt = rules().await;
    let body = json!({
        "service_id": "python-rules-service",
        "plan_id": "python-rules-plan",
        "parameters": {"async": true},
    });
    let accepted = rt
        .osb(
            Method::PUT,
            "python-rules",
            "/v2/service_instances/long?accepts_incomplete=true",
            Some(body),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
    let operation = accepted.body["operation"].as_str().unwrap().to_string();
    let done = rt
        .poll_until_done("python-rules", "/v2/service_instances/long", &operation)
        .await;
    assert_eq!(done.body["state"], "succeeded", "{:?}", done.body);
    assert_eq!(done.body["description"], "done after 2 polls");
}

#[tokio::test]
async fn javascript_errors_limits_and_outbound_fetch() {
    // A local "cloud API" on 127.0.0.1, allowlisted by host and port.
    let port = brokerbox_tests::ping_api().await;
    let extra = format!(
        "[limits]\ncall_timeout_ms = 3000\n[grants]\noutbound_http = [\"127.0.0.1:{port}\"]\noutbound_http_private = [\"127.0.0.1:{port}\"]\n"
    );
    let rt = runtime(&[("js-rules", guests::JS_RULES, &manifest("js-rules", &extra))]).await;

    let cases = [
        ("BadRequest", 400, None),
        ("Gone", 410, None),
        ("RequiresApp", 422, Some("RequiresApp")),
        ("Unprocessable", 422, None),
        ("TypeError", 500, None),
    ];
    assert_error_classes(&rt, "js-rules", ("throw", "threw"), &cases).await;

    // A plain object from `bind` is the credentials, whatever its keys.
    let created = provision(&rt, "js-rules", "b-1", json!({})).await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let bind = json!({"service_id": "js-rules-service", "plan_id": "js-rules-plan"});
    let path = "/v2/service_instances/b-1/service_bindings/b";
    let bound = rt.osb(Method::PUT, "js-rules", path, Some(bind)).await;
    assert_eq!(bound.status, StatusCode::CREATED, "{:?}", bound.body);
    assert_eq!(
        bound.body["credentials"],
        json!({"endpoints": "a credential named endpoints", "instance": "b-1"})
    );

    // An async operation with `fetch`: the granted host answers, another port is refused.
    let url = format!("http://127.0.0.1:{port}/ping");
    let fetched = provision(&rt, "js-rules", "f-1", json!({"fetch": url})).await;
    assert_eq!(fetched.status, StatusCode::CREATED, "{:?}", fetched.body);
    assert_eq!(
        fetched.body["metadata"],
        json!({"labels": {"status": "200"}, "attributes": {"body": "pong"}})
    );
    let denied = format!("http://127.0.0.1:{}/ping", port + 1);
    let refused = provision(&rt, "js-rules", "f-2", json!({"fetch": denied})).await;
    assert_eq!(
        refused.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{:?}",
        refused.body
    );
    // A redirect is followed, as a new request that the runtime checks again.
    let hop = format!("http://127.0.0.1:{port}/redirect?to=/ping");
    let followed = provision(&rt, "js-rules", "f-3", json!({"fetch": hop})).await;
    assert_eq!(followed.status, StatusCode::CREATED, "{:?}", followed.body);
    assert_eq!(
        followed.body["metadata"],
        json!({"labels": {"status": "200"}, "attributes": {"body": "pong"}})
    );
    let away = format!("http://127.0.0.1:{port}/redirect?to={denied}");
    let refused = provision(&rt, "js-rules", "f-4", json!({"fetch": away})).await;
    assert_eq!(
        refused.status,
        StatusCode::INTERNAL_SERVER_ERROR,
        "{:?}",
        refused.body
    );

    // An infinite loop ends at the CPU budget.
    let looped = provision(&rt, "js-rules", "loop", json!({"loop": true})).await;
    assert_eq!(looped.status, StatusCode::INTERNAL_SERVER_ERROR);
    let description = looped.body["description"].as_str().unwrap();
    assert!(
        description.contains("CPU budget") || description.contains("time limit"),
        "{description}"
    );
}
