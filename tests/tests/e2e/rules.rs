//! The OSB rules the host enforces before and after the guest runs, each over real HTTP.

use brokerbox_tests::{guests, manifest, TestRuntime};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

async fn rules_runtime() -> TestRuntime {
    TestRuntime::start(&[("rules", guests::RULES_BROKER, &manifest("rules", ""))])
        .await
        .unwrap()
}

fn strict(parameters: Value) -> Value {
    json!({ "service_id": "rules-service", "plan_id": "strict-plan", "parameters": parameters })
}

fn description(body: &Value) -> &str {
    body["description"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn parameters_are_checked_against_the_plan_schemas() {
    let rt = rules_runtime().await;
    let path = "/v2/service_instances/schema-1";
    let missing = rt
        .osb(Method::PUT, "rules", path, Some(strict(json!({}))))
        .await;
    assert_eq!(missing.status, StatusCode::BAD_REQUEST);
    assert!(
        description(&missing.body).contains("size"),
        "{:?}",
        missing.body
    );
    let several = rt
        .osb(
            Method::PUT,
            "rules",
            path,
            Some(strict(json!({ "size": 50 }))),
        )
        .await;
    assert_eq!(several.status, StatusCode::BAD_REQUEST);
    assert!(
        description(&several.body).contains("/size"),
        "{:?}",
        several.body
    );
    let ok = rt
        .osb(
            Method::PUT,
            "rules",
            path,
            Some(strict(json!({ "size": 5 }))),
        )
        .await;
    assert_eq!(ok.status, StatusCode::CREATED, "{:?}", ok.body);
    let bad_update = rt
        .osb(
            Method::PATCH,
            "rules",
            path,
            Some(json!({ "service_id": "rules-service", "parameters": { "size": "big" } })),
        )
        .await;
    assert_eq!(bad_update.status, StatusCode::BAD_REQUEST);
    let binding = format!("{path}/service_bindings/schema-b");
    let bad_bind = rt
        .osb(Method::PUT, "rules", &binding, Some(json!({ "service_id": "rules-service", "plan_id": "strict-plan", "app_guid": "a", "parameters": { "role": "admin" } })))
        .await;
    assert_eq!(bad_bind.status, StatusCode::BAD_REQUEST);
    assert!(
        description(&bad_bind.body).contains("role"),
        "{:?}",
        bad_bind.body
    );
}

#[tokio::test]
async fn maintenance_info_must_match_the_plan() {
    let rt = rules_runtime().await;
    let mut body = strict(json!({ "size": 1 }));
    body["maintenance_info"] = json!({ "version": "1.1.0" });
    let old = rt
        .osb(
            Method::PUT,
            "rules",
            "/v2/service_instances/mi-1",
            Some(body.clone()),
        )
        .await;
    assert_eq!(old.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(old.body["error"], "MaintenanceInfoConflict");
    body["maintenance_info"] = json!({ "version": "1.2.0" });
    let current = rt
        .osb(
            Method::PUT,
            "rules",
            "/v2/service_instances/mi-1",
            Some(body),
        )
        .await;
    assert_eq!(current.status, StatusCode::CREATED);
    let none = json!({ "service_id": "rules-service", "plan_id": "other-plan", "maintenance_info": { "version": "1.0.0" } });
    let answer = rt
        .osb(
            Method::PUT,
            "rules",
            "/v2/service_instances/mi-2",
            Some(none),
        )
        .await;
    assert_eq!(answer.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(answer.body["error"], "MaintenanceInfoConflict");
}

#[tokio::test]
async fn plan_changes_and_context_updates_follow_the_catalog() {
    let rt = rules_runtime().await;
    let other = json!({ "service_id": "rules-service", "plan_id": "other-plan" });
    assert_eq!(
        rt.osb(
            Method::PUT,
            "rules",
            "/v2/service_instances/up-1",
            Some(other)
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let change = rt
        .osb(
            Method::PATCH,
            "rules",
            "/v2/service_instances/up-1",
            Some(json!({ "service_id": "rules-service", "plan_id": "strict-plan" })),
        )
        .await;
    assert_eq!(change.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert!(description(&change.body).contains("plan_updateable"));
    // Context-only update on a service without allow_context_updates: a no-op, guest not called.
    let context = json!({ "service_id": "rules-service", "context": { "platform": "cloudfoundry", "instance_name": "x" } });
    let noop = rt
        .osb(
            Method::PATCH,
            "rules",
            "/v2/service_instances/up-1",
            Some(context),
        )
        .await;
    assert_eq!(noop.status, StatusCode::OK);
    assert_eq!(noop.body, json!({}));
    let fetched = rt
        .osb(Method::GET, "rules", "/v2/service_instances/up-1", None)
        .await;
    assert!(
        fetched.body.get("dashboard_url").is_none(),
        "the guest was not called: {:?}",
        fetched.body
    );
    // With allow_context_updates the guest is called (it answers with a dashboard URL).
    let flexible = json!({ "service_id": "flexible-service", "plan_id": "one-plan" });
    assert_eq!(
        rt.osb(
            Method::PUT,
            "rules",
            "/v2/service_instances/up-2",
            Some(flexible)
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let context = json!({ "service_id": "flexible-service", "context": { "platform": "cloudfoundry", "instance_name": "y" } });
    let applied = rt
        .osb(
            Method::PATCH,
            "rules",
            "/v2/service_instances/up-2",
            Some(context),
        )
        .await;
    assert_eq!(applied.status, StatusCode::OK);
    assert_eq!(applied.body["dashboard_url"], "https://rules.example/up-2");
    let moved = rt
        .osb(
            Method::PATCH,
            "rules",
            "/v2/service_instances/up-2",
            Some(json!({ "service_id": "flexible-service", "plan_id": "two-plan" })),
        )
        .await;
    assert_eq!(moved.status, StatusCode::OK);
    let fetched = rt
        .osb(Method::GET, "rules", "/v2/service_instances/up-2", None)
        .await;
    assert_eq!(fetched.body["plan_id"], "two-plan");
}

#[tokio::test]
async fn binds_need_an_app_and_rotation_needs_a_rotatable_plan() {
    let rt = rules_runtime().await;
    let instance = "/v2/service_instances/bind-1";
    assert_eq!(
        rt.osb(
            Method::PUT,
            "rules",
            instance,
            Some(strict(json!({ "size": 2 })))
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let bind = |extra: Value| {
        let mut body = json!({ "service_id": "rules-service", "plan_id": "strict-plan" });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    let no_app = rt
        .osb(
            Method::PUT,
            "rules",
            &format!("{instance}/service_bindings/b-0"),
            Some(bind(json!({}))),
        )
        .await;
    assert_eq!(no_app.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(no_app.body["error"], "RequiresApp");
    let first = rt
        .osb(
            Method::PUT,
            "rules",
            &format!("{instance}/service_bindings/b-1"),
            Some(bind(json!({ "bind_resource": { "app_guid": "app" } }))),
        )
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let rotated = rt
        .osb(
            Method::PUT,
            "rules",
            &format!("{instance}/service_bindings/b-2"),
            Some(bind(
                json!({ "app_guid": "app", "predecessor_binding_id": "b-1" }),
            )),
        )
        .await;
    assert_eq!(rotated.status, StatusCode::CREATED, "{:?}", rotated.body);
    assert_eq!(rotated.body["credentials"]["rotates"], "b-1");
    let unknown = rt
        .osb(
            Method::PUT,
            "rules",
            &format!("{instance}/service_bindings/b-3"),
            Some(bind(
                json!({ "app_guid": "app", "predecessor_binding_id": "nope" }),
            )),
        )
        .await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST);
    let other = json!({ "service_id": "rules-service", "plan_id": "other-plan" });
    assert_eq!(
        rt.osb(
            Method::PUT,
            "rules",
            "/v2/service_instances/bind-2",
            Some(other)
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let not_rotatable = rt
        .osb(Method::PUT, "rules", "/v2/service_instances/bind-2/service_bindings/b-4",
             Some(json!({ "service_id": "rules-service", "plan_id": "other-plan", "app_guid": "a", "predecessor_binding_id": "b-1" })))
        .await;
    assert_eq!(not_rotatable.status, StatusCode::UNPROCESSABLE_ENTITY);
}

#[tokio::test]
async fn operations_past_maximum_polling_duration_fail() {
    let rt = rules_runtime().await;
    let body = json!({ "service_id": "rules-service", "plan_id": "stuck-plan" });
    let accepted = rt
        .osb(
            Method::PUT,
            "rules",
            "/v2/service_instances/stuck-1?accepts_incomplete=true",
            Some(body),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    let poll = "/v2/service_instances/stuck-1/last_operation";
    let running = rt.osb(Method::GET, "rules", poll, None).await;
    assert_eq!(running.body["state"], "in progress");
    assert!(
        running.headers.contains_key("retry-after"),
        "Retry-After while in progress"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let failed = rt.osb(Method::GET, "rules", poll, None).await;
    assert_eq!(failed.body["state"], "failed");
    assert!(
        description(&failed.body).contains("maximum_polling_duration"),
        "{:?}",
        failed.body
    );
    assert!(
        failed.body.get("instance_usable").is_none(),
        "not allowed for a provision"
    );
    assert!(!failed.headers.contains_key("retry-after"));
}

#[tokio::test]
async fn failed_updates_report_usable_and_repeatable_and_block_fetches_while_running() {
    let rt = rules_runtime().await;
    let path = "/v2/service_instances/fail-1";
    let flexible = json!({ "service_id": "flexible-service", "plan_id": "one-plan" });
    assert_eq!(
        rt.osb(Method::PUT, "rules", path, Some(flexible))
            .await
            .status,
        StatusCode::CREATED
    );
    let update = json!({ "service_id": "flexible-service", "parameters": { "fail": true } });
    let accepted = rt
        .osb(
            Method::PATCH,
            "rules",
            &format!("{path}?accepts_incomplete=true"),
            Some(update),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    let operation = accepted.body["operation"].as_str().unwrap();
    let busy = rt.osb(Method::GET, "rules", path, None).await;
    assert_eq!(busy.status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(busy.body["error"], "ConcurrencyError");
    let second = rt
        .osb(
            Method::PATCH,
            "rules",
            &format!("{path}?accepts_incomplete=true"),
            Some(json!({ "service_id": "flexible-service", "plan_id": "two-plan" })),
        )
        .await;
    assert_eq!(second.body["error"], "ConcurrencyError");
    // A foreign operation id falls back to this instance's own latest operation.
    let polled = rt
        .poll_until_done("rules", path, &format!("not-{operation}"))
        .await;
    assert_eq!(polled.body["state"], "failed");
    assert_eq!(polled.body["instance_usable"], false);
    assert_eq!(polled.body["update_repeatable"], true);
    assert_eq!(
        rt.osb(Method::GET, "rules", path, None).await.status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn oversized_bodies_get_413_and_unknown_fields_are_ignored() {
    let rt = rules_runtime().await;
    let huge = json!({ "service_id": "rules-service", "plan_id": "other-plan", "parameters": { "blob": "x".repeat(2 * 1024 * 1024) } });
    let too_big = rt
        .osb(
            Method::PUT,
            "rules",
            "/v2/service_instances/big-1",
            Some(huge),
        )
        .await;
    assert_eq!(too_big.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(
        description(&too_big.body).contains("limit"),
        "{:?}",
        too_big.body
    );
    let extra = json!({ "service_id": "rules-service", "plan_id": "other-plan", "some_future_field": { "a": 1 } });
    assert_eq!(
        rt.osb(
            Method::PUT,
            "rules",
            "/v2/service_instances/big-2",
            Some(extra)
        )
        .await
        .status,
        StatusCode::CREATED
    );
    let none = rt
        .osb(
            Method::GET,
            "rules",
            "/v2/service_instances/never/last_operation",
            None,
        )
        .await;
    assert_eq!(none.status, StatusCode::NOT_FOUND);
    assert!(!description(&none.body).is_empty());
}
