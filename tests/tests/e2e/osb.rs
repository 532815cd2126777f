//! The foundation: catalog, headers, the file-broker life cycle, long operations, restarts,
//! traps.

use brokerbox_tests::{guests, manifest, originating_identity, TestRuntime};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const FILE_SERVICE: &str = "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01";
const FILE_SMALL: &str = "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101";
const FILE_LARGE: &str = "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b102";
const SLOW_SERVICE: &str = "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e01";
const SLOW_ASYNC_ONLY: &str = "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e11";
const SLOW_FLEXIBLE: &str = "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e12";

fn file_provision(plan: &str) -> Value {
    json!({ "service_id": FILE_SERVICE, "plan_id": plan, "organization_guid": "org", "space_guid": "space" })
}

#[tokio::test]
async fn catalog_lists_services_with_osb_fields() {
    let rt = TestRuntime::examples().await.unwrap();
    let answer = rt
        .osb(Method::GET, "file-broker", "/v2/catalog", None)
        .await;
    assert_eq!(answer.status, StatusCode::OK);
    let service = &answer.body["services"][0];
    assert_eq!(service["id"], FILE_SERVICE);
    assert_eq!(service["name"], "file-service");
    assert_eq!(service["bindable"], true);
    assert_eq!(service["plan_updateable"], true);
    assert_eq!(service["instances_retrievable"], true);
    assert_eq!(service["bindings_retrievable"], true);
    let plans: Vec<_> = service["plans"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].clone())
        .collect();
    assert_eq!(plans, vec![json!("small"), json!("large")]);
    // The body is sent as it was serialized at load: JSON, labelled as JSON, the same each time.
    let raw = rt
        .client()
        .get(format!("{}/v2/catalog", rt.url("file-broker")))
        .header("X-Broker-API-Version", "2.17")
        .basic_auth("file-broker", Some("file-broker-secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(raw.status(), StatusCode::OK);
    assert_eq!(raw.headers()["content-type"], "application/json");
    let again: Value = serde_json::from_slice(&raw.bytes().await.unwrap()).unwrap();
    assert_eq!(again, answer.body);
    let slow = rt
        .osb(Method::GET, "slow-broker", "/v2/catalog", None)
        .await;
    assert_eq!(slow.body["services"][0]["id"], SLOW_SERVICE);
}

#[tokio::test]
async fn auth_version_and_unknown_routes_get_osb_errors() {
    let rt = TestRuntime::examples().await.unwrap();
    let url = format!("{}/v2/catalog", rt.url("file-broker"));
    let no_auth = rt
        .send(
            rt.client().get(&url).header("X-Broker-API-Version", "2.17"),
            None,
        )
        .await;
    assert_eq!(no_auth.status, StatusCode::UNAUTHORIZED);
    assert!(no_auth.body["description"]
        .as_str()
        .unwrap()
        .contains("credentials"));
    // One broker's credentials do not open another broker.
    let other = rt
        .send(
            rt.client()
                .get(&url)
                .basic_auth("slow-broker", Some("slow-broker-secret"))
                .header("X-Broker-API-Version", "2.17"),
            None,
        )
        .await;
    assert_eq!(other.status, StatusCode::UNAUTHORIZED);
    let authed = || {
        rt.client()
            .get(&url)
            .basic_auth("file-broker", Some("file-broker-secret"))
    };
    let missing = rt.send(authed(), None).await;
    assert_eq!(missing.status, StatusCode::PRECONDITION_FAILED);
    assert!(missing.body["description"]
        .as_str()
        .unwrap()
        .contains("X-Broker-API-Version"));
    for bad in ["1.14", "2.1", "3.0", "2.x", "2.17.1"] {
        let answer = rt
            .send(authed().header("X-Broker-API-Version", bad), None)
            .await;
        assert_eq!(
            answer.status,
            StatusCode::PRECONDITION_FAILED,
            "version {bad}"
        );
    }
    // MAJOR.MINOR is not a float: 2.100 is newer than 2.17, not older.
    let newer = rt
        .send(authed().header("X-Broker-API-Version", "2.100"), None)
        .await;
    assert_eq!(newer.status, StatusCode::OK);
    let unknown = rt
        .osb(Method::GET, "no-such-broker", "/v2/catalog", None)
        .await;
    assert_eq!(
        unknown.status,
        StatusCode::UNAUTHORIZED,
        "an unknown broker answers as wrong credentials do"
    );
    assert!(unknown.body["description"].is_string());
}

#[tokio::test]
async fn file_broker_lifecycle_creates_and_removes_the_instance_file() {
    let rt = TestRuntime::examples().await.unwrap();
    let instance = "/v2/service_instances/inst-1";
    let file = rt.files_dir("file-broker").join("inst-1");

    let created = rt
        .osb(
            Method::PUT,
            "file-broker",
            instance,
            Some(file_provision(FILE_SMALL)),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    let content: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(content["id"], FILE_SMALL);
    assert_eq!(content["name"], "small");

    // Identical repeat → 200; same id with other attributes → 409.
    let again = rt
        .osb(
            Method::PUT,
            "file-broker",
            instance,
            Some(file_provision(FILE_SMALL)),
        )
        .await;
    assert_eq!(again.status, StatusCode::OK);
    let conflict = rt
        .osb(
            Method::PUT,
            "file-broker",
            instance,
            Some(file_provision(FILE_LARGE)),
        )
        .await;
    assert_eq!(conflict.status, StatusCode::CONFLICT);

    let fetched = rt.osb(Method::GET, "file-broker", instance, None).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["plan_id"], FILE_SMALL);

    // Update to the other plan rewrites the file.
    let updated = rt
        .osb(
            Method::PATCH,
            "file-broker",
            instance,
            Some(json!({ "service_id": FILE_SERVICE, "plan_id": FILE_LARGE })),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);
    let content: Value = serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    assert_eq!(content["name"], "large");

    let binding = format!("{instance}/service_bindings/bind-1");
    let bind_body = json!({ "service_id": FILE_SERVICE, "plan_id": FILE_LARGE, "bind_resource": { "app_guid": "app-1" } });
    let bound = rt
        .osb(
            Method::PUT,
            "file-broker",
            &binding,
            Some(bind_body.clone()),
        )
        .await;
    assert_eq!(bound.status, StatusCode::CREATED, "{:?}", bound.body);
    assert_eq!(
        bound.body["credentials"]["file"],
        file.display().to_string()
    );
    let fetched = rt.osb(Method::GET, "file-broker", &binding, None).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["credentials"], bound.body["credentials"]);
    let again = rt
        .osb(Method::PUT, "file-broker", &binding, Some(bind_body))
        .await;
    assert_eq!(again.status, StatusCode::OK);

    let query = format!("?service_id={FILE_SERVICE}&plan_id={FILE_LARGE}");
    // The binding is not one of another instance's: its unbind there is 410 and changes nothing.
    let elsewhere = rt
        .osb(
            Method::DELETE,
            "file-broker",
            &format!("/v2/service_instances/other/service_bindings/bind-1{query}"),
            None,
        )
        .await;
    assert_eq!(elsewhere.status, StatusCode::GONE, "{:?}", elsewhere.body);
    let still = rt.osb(Method::GET, "file-broker", &binding, None).await;
    assert_eq!(still.status, StatusCode::OK, "{:?}", still.body);
    let unbound = rt
        .osb(
            Method::DELETE,
            "file-broker",
            &format!("{binding}{query}"),
            None,
        )
        .await;
    assert_eq!(unbound.status, StatusCode::OK);
    assert_eq!(unbound.body, json!({}));
    let gone = rt
        .osb(
            Method::DELETE,
            "file-broker",
            &format!("{binding}{query}"),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::GONE);

    let deleted = rt
        .osb(
            Method::DELETE,
            "file-broker",
            &format!("{instance}{query}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{:?}", deleted.body);
    assert!(!file.exists(), "the instance file is removed");
    let gone = rt
        .osb(
            Method::DELETE,
            "file-broker",
            &format!("{instance}{query}"),
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::GONE);
    let missing = rt.osb(Method::GET, "file-broker", instance, None).await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn bad_requests_are_refused_before_the_guest_runs() {
    let rt = TestRuntime::examples().await.unwrap();
    let instance = "/v2/service_instances/inst-bad";
    let cases = [
        json!({ "plan_id": FILE_SMALL }),
        json!({ "service_id": FILE_SERVICE }),
        json!({ "service_id": FILE_SERVICE, "plan_id": SLOW_FLEXIBLE }),
        json!({ "service_id": FILE_SERVICE, "plan_id": FILE_SMALL, "parameters": [1, 2] }),
    ];
    for body in cases {
        let answer = rt
            .osb(Method::PUT, "file-broker", instance, Some(body.clone()))
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{body}");
        assert!(!answer.body["description"].as_str().unwrap().is_empty());
    }
    let not_json = rt
        .send(
            rt.client()
                .put(format!("{}{instance}", rt.url("file-broker")))
                .basic_auth("file-broker", Some("file-broker-secret"))
                .header("X-Broker-API-Version", "2.17")
                .body("{not json"),
            None,
        )
        .await;
    assert_eq!(not_json.status, StatusCode::BAD_REQUEST);
    let no_query = rt.osb(Method::DELETE, "file-broker", instance, None).await;
    assert_eq!(no_query.status, StatusCode::BAD_REQUEST);
    assert!(!rt.files_dir("file-broker").join("inst-bad").exists());
    let identity = originating_identity("cloudfoundry", &json!({ "user_id": "u1" }));
    let ok = rt
        .send(
            rt.client()
                .put(format!("{}{instance}", rt.url("file-broker")))
                .basic_auth("file-broker", Some("file-broker-secret"))
                .header("X-Broker-API-Version", "2.17")
                .header("X-Broker-API-Originating-Identity", identity)
                .header("X-Broker-API-Request-Identity", "req-42"),
            Some(file_provision(FILE_SMALL)),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    assert_eq!(ok.headers["x-broker-api-request-identity"], "req-42");
    let bad_identity = rt
        .send(
            rt.client()
                .get(format!("{}/v2/catalog", rt.url("file-broker")))
                .basic_auth("file-broker", Some("file-broker-secret"))
                .header("X-Broker-API-Version", "2.17")
                .header(
                    "X-Broker-API-Originating-Identity",
                    "cloudfoundry not-base64!",
                ),
            None,
        )
        .await;
    assert_eq!(bad_identity.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn slow_broker_long_operations_are_polled_to_success() {
    let rt = TestRuntime::examples().await.unwrap();
    let instance = "/v2/service_instances/slow-1";
    let body = json!({ "service_id": SLOW_SERVICE, "plan_id": SLOW_ASYNC_ONLY, "parameters": { "polls": 2 } });
    let accepted = rt
        .osb(
            Method::PUT,
            "slow-broker",
            &format!("{instance}?accepts_incomplete=true"),
            Some(body.clone()),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED, "{:?}", accepted.body);
    let operation = accepted.body["operation"].as_str().unwrap().to_string();
    assert_eq!(
        accepted.body["dashboard_url"],
        "https://slow.example/slow-1"
    );

    // While it runs: a repeat is 202 with the same operation; a fetch is 404.
    let repeat = rt
        .osb(
            Method::PUT,
            "slow-broker",
            &format!("{instance}?accepts_incomplete=true"),
            Some(body),
        )
        .await;
    assert_eq!(repeat.status, StatusCode::ACCEPTED);
    assert_eq!(repeat.body["operation"], operation.as_str());
    assert_eq!(
        rt.osb(Method::GET, "slow-broker", instance, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );

    // The runtime polls the guest in the background; the platform's polls read stored state.
    let first = rt
        .osb(
            Method::GET,
            "slow-broker",
            &format!("{instance}/last_operation?operation={operation}"),
            None,
        )
        .await;
    assert_eq!(first.status, StatusCode::OK);
    assert!(["in progress", "succeeded"].contains(&first.body["state"].as_str().unwrap()));
    let done = rt
        .poll_until_done("slow-broker", instance, &operation)
        .await;
    assert_eq!(done.body["state"], "succeeded", "{:?}", done.body);
    assert_eq!(
        rt.osb(Method::GET, "slow-broker", instance, None)
            .await
            .status,
        StatusCode::OK
    );

    // An asynchronous bind: 202 without credentials, polled, then fetched.
    let binding = format!("{instance}/service_bindings/slow-b");
    let bind_body = json!({ "service_id": SLOW_SERVICE, "plan_id": SLOW_ASYNC_ONLY });
    let accepted = rt
        .osb(
            Method::PUT,
            "slow-broker",
            &format!("{binding}?accepts_incomplete=true"),
            Some(bind_body),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    assert!(accepted.body.get("credentials").is_none());
    let operation = accepted.body["operation"].as_str().unwrap();
    assert_eq!(
        rt.osb(Method::GET, "slow-broker", &binding, None)
            .await
            .status,
        StatusCode::NOT_FOUND
    );
    let done = rt.poll_until_done("slow-broker", &binding, operation).await;
    assert_eq!(done.body["state"], "succeeded");
    let fetched = rt.osb(Method::GET, "slow-broker", &binding, None).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["credentials"]["binding"], "slow-b");

    let query =
        format!("?service_id={SLOW_SERVICE}&plan_id={SLOW_ASYNC_ONLY}&accepts_incomplete=true");
    let deleting = rt
        .osb(
            Method::DELETE,
            "slow-broker",
            &format!("{instance}{query}"),
            None,
        )
        .await;
    assert_eq!(deleting.status, StatusCode::ACCEPTED);
    let operation = deleting.body["operation"].as_str().unwrap();
    let done = rt.poll_until_done("slow-broker", instance, operation).await;
    assert_eq!(done.body["state"], "succeeded");
    // After the delete, the operation stays known: asking without an operation id reports it.
    let after = rt
        .osb(
            Method::GET,
            "slow-broker",
            &format!("{instance}/last_operation"),
            None,
        )
        .await;
    assert_eq!(after.status, StatusCode::OK);
    assert_eq!(after.body["state"], "succeeded");
}

#[tokio::test]
async fn async_only_plan_without_accepts_incomplete_is_422_async_required() {
    let rt = TestRuntime::examples().await.unwrap();
    let instance = "/v2/service_instances/slow-sync";
    let body = json!({ "service_id": SLOW_SERVICE, "plan_id": SLOW_ASYNC_ONLY });
    let refused = rt
        .osb(Method::PUT, "slow-broker", instance, Some(body.clone()))
        .await;
    assert_eq!(refused.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(refused.body["error"], "AsyncRequired");
    assert!(!refused.body["description"].as_str().unwrap().is_empty());
    // Nothing was left behind: the same id can be provisioned asynchronously.
    let accepted = rt
        .osb(
            Method::PUT,
            "slow-broker",
            &format!("{instance}?accepts_incomplete=true"),
            Some(body),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    // The flexible plan, without accepts_incomplete, finishes synchronously.
    let flexible = json!({ "service_id": SLOW_SERVICE, "plan_id": SLOW_FLEXIBLE });
    let created = rt
        .osb(
            Method::PUT,
            "slow-broker",
            "/v2/service_instances/slow-flex",
            Some(flexible),
        )
        .await;
    // The guest answered `accepted`; without accepts_incomplete the runtime polled it to the end.
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    assert_eq!(
        created.body["dashboard_url"],
        "https://slow.example/slow-flex"
    );
    let fetched = rt
        .osb(
            Method::GET,
            "slow-broker",
            "/v2/service_instances/slow-flex",
            None,
        )
        .await;
    assert_eq!(fetched.status, StatusCode::OK);
}

#[tokio::test]
async fn state_survives_a_restart() {
    let mut rt = TestRuntime::examples().await.unwrap();
    let instance = "/v2/service_instances/keep-1";
    let binding = format!("{instance}/service_bindings/keep-b");
    assert_eq!(
        rt.osb(
            Method::PUT,
            "file-broker",
            instance,
            Some(file_provision(FILE_SMALL))
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let bound = rt
        .osb(
            Method::PUT,
            "file-broker",
            &binding,
            Some(json!({ "service_id": FILE_SERVICE, "plan_id": FILE_SMALL })),
        )
        .await;
    assert_eq!(bound.status, StatusCode::CREATED);
    let slow = rt
        .osb(Method::PUT, "slow-broker", "/v2/service_instances/keep-slow?accepts_incomplete=true",
             Some(json!({ "service_id": SLOW_SERVICE, "plan_id": SLOW_ASYNC_ONLY, "parameters": { "polls": 1 } })))
        .await;
    assert_eq!(slow.status, StatusCode::ACCEPTED);
    let operation = slow.body["operation"].as_str().unwrap().to_string();

    rt.restart().await.unwrap();

    let fetched = rt.osb(Method::GET, "file-broker", instance, None).await;
    assert_eq!(fetched.status, StatusCode::OK);
    assert_eq!(fetched.body["plan_id"], FILE_SMALL);
    let fetched = rt.osb(Method::GET, "file-broker", &binding, None).await;
    assert_eq!(fetched.body["credentials"], bound.body["credentials"]);
    let again = rt
        .osb(
            Method::PUT,
            "file-broker",
            instance,
            Some(file_provision(FILE_SMALL)),
        )
        .await;
    assert_eq!(
        again.status,
        StatusCode::OK,
        "idempotency still known after restart"
    );
    let done = rt
        .poll_until_done("slow-broker", "/v2/service_instances/keep-slow", &operation)
        .await;
    assert_eq!(done.body["state"], "succeeded");
}

#[tokio::test]
async fn a_trapping_guest_is_a_500_and_the_runtime_keeps_serving() {
    let rt = TestRuntime::start(&[
        ("trap", guests::TRAP_BROKER, &manifest("trap", "")),
        (
            "file-broker",
            guests::FILE_BROKER,
            &manifest("file-broker", "[grants]\nfiles = true\n"),
        ),
    ])
    .await
    .unwrap();
    let trapped = rt
        .osb(
            Method::PUT,
            "trap",
            "/v2/service_instances/t-1",
            Some(json!({ "service_id": "trap-service", "plan_id": "trap-plan" })),
        )
        .await;
    assert_eq!(trapped.status, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(
        trapped.body["description"]
            .as_str()
            .unwrap()
            .contains("crashed"),
        "{:?}",
        trapped.body
    );
    // The same broker and its neighbour keep answering.
    let ok = rt
        .osb(
            Method::PUT,
            "trap",
            "/v2/service_instances/t-2",
            Some(json!({ "service_id": "trap-service", "plan_id": "ok-plan" })),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED);
    assert_eq!(
        rt.osb(Method::GET, "file-broker", "/v2/catalog", None)
            .await
            .status,
        StatusCode::OK
    );
    // The crashed provision left a failed instance the platform can clean up.
    let cleanup = rt
        .osb(
            Method::DELETE,
            "trap",
            "/v2/service_instances/t-1?service_id=trap-service&plan_id=trap-plan",
            None,
        )
        .await;
    assert_eq!(cleanup.status, StatusCode::OK);
}

#[tokio::test]
async fn start_up_errors_name_the_file_and_quarantine_only_that_broker() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = dir.path().join("brokers");
    std::fs::create_dir_all(&brokers).unwrap();
    std::fs::copy(guests::FILE_BROKER, brokers.join("lonely.wasm")).unwrap();
    let mut config = brokerbox::ServeConfig::new(dir.path().join("data"), &brokers);
    config.strict = true;
    let strict_error = |config: brokerbox::ServeConfig| async move {
        let error = brokerbox::Runtime::load(&config)
            .await
            .err()
            .expect("--strict fails");
        format!("{error:#}")
    };
    let error = strict_error(config.clone()).await;
    assert!(error.contains("lonely.toml"), "a missing manifest: {error}");
    std::fs::write(
        brokers.join("lonely.toml"),
        "[credentials]\nusername = \"u\"\n",
    )
    .unwrap();
    let error = strict_error(config.clone()).await;
    assert!(
        error.contains("lonely.toml"),
        "an invalid manifest: {error}"
    );
    std::fs::write(brokers.join("lonely.toml"), manifest("lonely", "")).unwrap();
    std::fs::write(brokers.join("junk.wasm"), b"not wasm").unwrap();
    std::fs::write(brokers.join("junk.toml"), manifest("junk", "")).unwrap();
    let error = strict_error(config.clone()).await;
    assert!(error.contains("junk.wasm"), "a bad component: {error}");
    assert!(!error.contains("lonely"), "only the bad broker: {error}");
    // Without --strict the good broker serves and the bad one is quarantined.
    config.strict = false;
    let runtime = brokerbox::Runtime::load(&config).await.unwrap();
    let serving: Vec<_> = runtime.generation().all().map(|b| b.name.clone()).collect();
    assert_eq!(serving, ["lonely"]);
    let problems = runtime.reloader().failures();
    assert!(problems["junk"].contains("junk.wasm"), "{problems:?}");
}

#[tokio::test]
async fn hashed_credentials_open_only_their_broker() {
    let hash = brokerbox::auth::hash_password("trap-secret").unwrap();
    let manifest = format!("[credentials]\nusername = \"trap\"\npassword_hash = \"{hash}\"\n");
    let rt = TestRuntime::start(&[("trap", guests::TRAP_BROKER, &manifest)])
        .await
        .unwrap();
    let ok = rt.osb(Method::GET, "trap", "/v2/catalog", None).await;
    assert_eq!(ok.status, StatusCode::OK);
    let url = format!("{}/v2/catalog", rt.url("trap"));
    let wrong = rt
        .send(
            rt.client()
                .get(&url)
                .basic_auth("trap", Some("trap-secreT"))
                .header("X-Broker-API-Version", "2.17"),
            None,
        )
        .await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    let manifest_text = std::fs::read_to_string(rt.dir.path().join("brokers/trap.toml")).unwrap();
    assert!(
        !manifest_text.contains("trap-secret"),
        "only the hash is stored"
    );
}

#[tokio::test]
async fn a_binding_operation_ends_when_its_instance_is_deleted_under_it() {
    let rt = TestRuntime::examples().await.unwrap();
    let instance = "/v2/service_instances/gone-under";
    let flexible = json!({ "service_id": SLOW_SERVICE, "plan_id": SLOW_FLEXIBLE });
    assert_eq!(
        rt.osb(Method::PUT, "slow-broker", instance, Some(flexible))
            .await
            .status,
        StatusCode::CREATED
    );
    let binding = format!("{instance}/service_bindings/b-under");
    let body = json!({ "service_id": SLOW_SERVICE, "plan_id": SLOW_FLEXIBLE });
    let accepted = rt
        .osb(
            Method::PUT,
            "slow-broker",
            &format!("{binding}?accepts_incomplete=true"),
            Some(body),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    let query = format!("?service_id={SLOW_SERVICE}&plan_id={SLOW_FLEXIBLE}");
    let deleted = rt
        .osb(
            Method::DELETE,
            "slow-broker",
            &format!("{instance}{query}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK);
    // The bind's long operation ends (it is not polled forever) and says why.
    let operation = accepted.body["operation"].as_str().unwrap();
    let done = rt.poll_until_done("slow-broker", &binding, operation).await;
    assert_eq!(done.body["state"], "failed", "{:?}", done.body);
    assert!(done.body["description"]
        .as_str()
        .unwrap()
        .contains("deleted"));
}

/// One file-broker component registered as two brokers, each with its own ids from
/// `[env] SERVICE_ID`: both load, each serves and provisions under its own ids, and an id of
/// one is unknown to the other.
#[tokio::test]
async fn one_component_serves_as_two_brokers_with_their_own_ids() {
    let registration = |name: &str, service: &str| {
        manifest(
            name,
            &format!("[grants]\nfiles = true\n[env]\nSERVICE_ID = \"{service}\"\n"),
        )
    };
    let rt = TestRuntime::start(&[
        (
            "team-a",
            guests::FILE_BROKER,
            &registration("team-a", "svc-a"),
        ),
        (
            "team-b",
            guests::FILE_BROKER,
            &registration("team-b", "svc-b"),
        ),
    ])
    .await
    .unwrap();
    for (name, service) in [("team-a", "svc-a"), ("team-b", "svc-b")] {
        let catalog = rt.osb(Method::GET, name, "/v2/catalog", None).await;
        assert_eq!(catalog.body["services"][0]["id"], service);
        assert_eq!(
            catalog.body["services"][0]["plans"][0]["id"],
            format!("{service}-small")
        );
        let body = json!({ "service_id": service, "plan_id": format!("{service}-small") });
        let created = rt
            .osb(Method::PUT, name, "/v2/service_instances/i-1", Some(body))
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
        let content: Value =
            serde_json::from_str(&std::fs::read_to_string(rt.files_dir(name).join("i-1")).unwrap())
                .unwrap();
        assert_eq!(content["id"], format!("{service}-small"));
    }
    let foreign = json!({ "service_id": "svc-a", "plan_id": "svc-a-small" });
    let refused = rt
        .osb(
            Method::PUT,
            "team-b",
            "/v2/service_instances/i-2",
            Some(foreign),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        refused.body
    );
}
