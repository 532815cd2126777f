//! OSB gaps a third-party conformance suite and an independent check found, each over real
//! HTTP: required guids, an empty `maintenance_info`, operations on an instance still being
//! provisioned, `last_operation` of an instance that never existed, credentials before the
//! path, id caps, a 413 a whole-body writer can read, and no broker-name probing.

use brokerbox_tests::{guests, manifest, repo_root, TestRuntime};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const FILE_SERVICE: &str = "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01";
const FILE_SMALL: &str = "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101";
const SLOW_SERVICE: &str = "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e01";
const SLOW_FLEXIBLE: &str = "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e12";

async fn runtime() -> TestRuntime {
    let example = |name: &str| {
        std::fs::read_to_string(repo_root().join(format!("examples/{name}/{name}.toml"))).unwrap()
    };
    TestRuntime::start(&[
        ("file-broker", guests::FILE_BROKER, &example("file-broker")),
        ("slow-broker", guests::SLOW_BROKER, &example("slow-broker")),
        ("rules", guests::RULES_BROKER, &manifest("rules", "")),
    ])
    .await
    .unwrap()
}

fn file_body() -> Value {
    json!({ "service_id": FILE_SERVICE, "plan_id": FILE_SMALL })
}

fn description(body: &Value) -> &str {
    body["description"].as_str().unwrap_or_default()
}

#[tokio::test]
async fn conformance_gaps_are_closed() {
    let rt = runtime().await;

    // organization_guid and space_guid are required non-empty strings.
    for (field, value) in [
        ("organization_guid", Value::Null),
        ("organization_guid", json!("")),
        ("space_guid", Value::Null),
        ("space_guid", json!("")),
    ] {
        let mut body = file_body();
        body[field] = value.clone();
        let answer = rt
            .osb(
                Method::PUT,
                "file-broker",
                "/v2/service_instances/g-1",
                Some(body),
            )
            .await;
        assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{field} = {value}");
        assert!(
            description(&answer.body).contains(field),
            "{:?}",
            answer.body
        );
    }

    // "maintenance_info": {} (as generated clients send) counts as absent.
    let mut body =
        json!({ "service_id": "rules-service", "plan_id": "other-plan", "maintenance_info": {} });
    let created = rt
        .osb(
            Method::PUT,
            "rules",
            "/v2/service_instances/mi-empty",
            Some(body.clone()),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{:?}", created.body);
    body["previous_values"] = json!({ "plan_id": "other-plan", "maintenance_info": {} });
    body["parameters"] = json!({});
    let updated = rt
        .osb(
            Method::PATCH,
            "rules",
            "/v2/service_instances/mi-empty",
            Some(body),
        )
        .await;
    assert_eq!(updated.status, StatusCode::OK, "{:?}", updated.body);

    // Update and bind while the instance is still being provisioned: 422 ConcurrencyError.
    let slow = json!({ "service_id": SLOW_SERVICE, "plan_id": SLOW_FLEXIBLE, "parameters": { "polls": 100000 } });
    let accepted = rt
        .osb(
            Method::PUT,
            "slow-broker",
            "/v2/service_instances/busy?accepts_incomplete=true",
            Some(slow),
        )
        .await;
    assert_eq!(accepted.status, StatusCode::ACCEPTED);
    let update = json!({ "service_id": SLOW_SERVICE, "parameters": { "polls": 1 } });
    let bind = json!({ "service_id": SLOW_SERVICE, "plan_id": SLOW_FLEXIBLE });
    for (method, path, body) in [
        (Method::PATCH, "/v2/service_instances/busy", update),
        (
            Method::PUT,
            "/v2/service_instances/busy/service_bindings/b",
            bind,
        ),
    ] {
        let answer = rt
            .osb(method.clone(), "slow-broker", path, Some(body))
            .await;
        assert_eq!(
            answer.status,
            StatusCode::UNPROCESSABLE_ENTITY,
            "{method} {:?}",
            answer.body
        );
        assert_eq!(answer.body["error"], "ConcurrencyError", "{method}");
    }

    // last_operation of an instance whose provision was refused at once: 404, not "failed".
    let refused = rt
        .osb(
            Method::PUT,
            "file-broker",
            "/v2/service_instances/no!such",
            Some(file_body()),
        )
        .await;
    assert_eq!(
        refused.status,
        StatusCode::BAD_REQUEST,
        "{:?}",
        refused.body
    );
    let polled = rt
        .osb(
            Method::GET,
            "file-broker",
            "/v2/service_instances/no!such/last_operation",
            None,
        )
        .await;
    assert_eq!(polled.status, StatusCode::NOT_FOUND, "{:?}", polled.body);

    // Ids: at most 255 bytes at the host; the file broker never answers 5xx for an id.
    let long = "a".repeat(2000);
    let answer = rt
        .osb(
            Method::PUT,
            "file-broker",
            &format!("/v2/service_instances/{long}"),
            Some(file_body()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{:?}", answer.body);
    assert!(
        description(&answer.body).contains("255"),
        "{:?}",
        answer.body
    );
    let longest = "b".repeat(255);
    let answer = rt
        .osb(
            Method::PUT,
            "file-broker",
            &format!("/v2/service_instances/{longest}"),
            Some(file_body()),
        )
        .await;
    assert_eq!(answer.status, StatusCode::CREATED, "{:?}", answer.body);
    for odd in ["%20x", ".hidden", "a%2Fb", "%C3%A9t%C3%A9"] {
        let answer = rt
            .osb(
                Method::PUT,
                "file-broker",
                &format!("/v2/service_instances/{odd}"),
                Some(file_body()),
            )
            .await;
        assert_eq!(
            answer.status,
            StatusCode::BAD_REQUEST,
            "{odd}: {:?}",
            answer.body
        );
    }
}

#[tokio::test]
async fn credentials_come_before_the_path_and_names_cannot_be_probed() {
    let rt = runtime().await;
    let base = format!("http://{}", rt.server().addr);
    let invalid_utf8 = format!("{base}/brokers/file-broker/v2/service_instances/%FF%FE");
    // Without credentials: 401, before the path is decoded.
    let anonymous = rt.client().get(&invalid_utf8).send().await.unwrap();
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    // With them: the path's fault, 400.
    let answer = rt
        .osb(
            Method::GET,
            "file-broker",
            "/v2/service_instances/%FF%FE",
            None,
        )
        .await;
    assert_eq!(answer.status, StatusCode::BAD_REQUEST, "{:?}", answer.body);

    // An unknown broker answers as wrong credentials do.
    let unknown = rt
        .osb(Method::GET, "no-such-broker", "/v2/catalog", None)
        .await;
    let wrong = rt
        .send(
            rt.client()
                .get(format!("{base}/brokers/file-broker/v2/catalog"))
                .basic_auth("file-broker", Some("wrong"))
                .header("X-Broker-API-Version", "2.17"),
            None,
        )
        .await;
    assert_eq!(unknown.status, StatusCode::UNAUTHORIZED);
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED);
    assert_eq!(unknown.body, wrong.body);

    // A method the route does not take: 405 with an OSB body.
    let post = rt
        .osb(Method::POST, "file-broker", "/v2/catalog", Some(json!({})))
        .await;
    assert_eq!(post.status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(!description(&post.body).is_empty());
}

#[tokio::test]
async fn a_client_that_writes_its_whole_oversized_body_first_reads_the_413() {
    let rt = runtime().await;
    let body = vec![b' '; 8 * 1024 * 1024];
    let mut stream = tokio::net::TcpStream::connect(rt.server().addr)
        .await
        .unwrap();
    let head = format!(
        "PUT /brokers/file-broker/v2/service_instances/big HTTP/1.1\r\nHost: x\r\n\
         Authorization: Basic ZmlsZS1icm9rZXI6ZmlsZS1icm9rZXItc2VjcmV0\r\n\
         X-Broker-API-Version: 2.17\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    // As Python's urllib does: the whole request, then the answer.
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
        .write_all(&body)
        .await
        .expect("the runtime reads the whole body");
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("limit"), "{answer}");
}
