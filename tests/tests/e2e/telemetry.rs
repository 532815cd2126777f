//! What an operator watches: `/healthz`, `/readyz` (through a PostgreSQL outage), the exact
//! counts of `/metrics` after a scripted mix of requests, JSON log lines with reasons and
//! limits, and OpenTelemetry traces received by an OTLP/HTTP receiver the test runs.

use crate::process::RuntimeProcess;
use brokerbox_tests::{
    guests, manifest, postgres, repo_root, sample, send_osb, CutProxy, TestRuntime,
};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

const FILE_SERVICE: &str = "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01";
const SMALL_PLAN: &str = "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101";

fn file_manifest() -> String {
    std::fs::read_to_string(repo_root().join("examples/file-broker/file-broker.toml")).unwrap()
}

fn small() -> Value {
    json!({ "service_id": FILE_SERVICE, "plan_id": SMALL_PLAN })
}

fn hostile(plan: &str) -> Value {
    json!({ "service_id": "hostile-service", "plan_id": format!("{plan}-plan") })
}

/// Limits that make the hostile broker's attacks end quickly: fuel for a fuel burner, a
/// one-second deadline for a sleeper.
const HOSTILE_LIMITS: &str = "[limits]\ncall_timeout_ms = 1000\nfuel = 50000000\n";

async fn get(client: &reqwest::Client, url: String) -> (StatusCode, String) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status();
    (status, response.text().await.unwrap())
}

#[tokio::test]
async fn metrics_count_each_request_and_guest_call_by_broker_and_outcome() {
    let hostile_manifest = manifest("hostile", HOSTILE_LIMITS);
    let rt = TestRuntime::start(&[
        ("file-broker", guests::FILE_BROKER, &file_manifest()),
        ("hostile", guests::HOSTILE_BROKER, &hostile_manifest),
    ])
    .await
    .unwrap();
    let base = format!("http://{}", rt.server().addr);
    let client = rt.client();

    // file-broker: 2 catalogs, 2 provisions, a bind and its unbind, one deprovision.
    for _ in 0..2 {
        let a = rt
            .osb(Method::GET, "file-broker", "/v2/catalog", None)
            .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    for id in ["m1", "m2"] {
        let path = format!("/v2/service_instances/{id}");
        let a = rt
            .osb(Method::PUT, "file-broker", &path, Some(small()))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    }
    let binding = "/v2/service_instances/m1/service_bindings/b1";
    let bind = json!({ "service_id": FILE_SERVICE, "plan_id": SMALL_PLAN });
    let a = rt
        .osb(Method::PUT, "file-broker", binding, Some(bind))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{}", a.body);
    let query = format!("?service_id={FILE_SERVICE}&plan_id={SMALL_PLAN}");
    let a = (rt.osb(
        Method::DELETE,
        "file-broker",
        &format!("{binding}{query}"),
        None,
    ))
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    let path = format!("/v2/service_instances/m1{query}");
    let a = rt.osb(Method::DELETE, "file-broker", &path, None).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    // 4xx: a wrong password, a missing API version, a broker that does not exist.
    let catalog = format!("{base}/brokers/file-broker/v2/catalog");
    let wrong = client
        .get(&catalog)
        .basic_auth("file-broker", Some("wrong"))
        .header("X-Broker-API-Version", "2.17");
    assert_eq!(rt.send(wrong, None).await.status, StatusCode::UNAUTHORIZED);
    let unversioned = (client.get(&catalog)).basic_auth("file-broker", Some("file-broker-secret"));
    let a = rt.send(unversioned, None).await;
    assert_eq!(a.status, StatusCode::PRECONDITION_FAILED);
    let nobody = client
        .get(format!("{base}/brokers/no-such-broker/v2/catalog"))
        .basic_auth("x", Some("y"))
        .header("X-Broker-API-Version", "2.17");
    assert_eq!(rt.send(nobody, None).await.status, StatusCode::UNAUTHORIZED);

    // hostile: one call of each outcome.
    let outcomes = [
        ("ok", StatusCode::CREATED),
        ("passwd", StatusCode::UNPROCESSABLE_ENTITY),
        ("fuel", StatusCode::INTERNAL_SERVER_ERROR),
        ("sleep", StatusCode::INTERNAL_SERVER_ERROR),
        ("panic", StatusCode::INTERNAL_SERVER_ERROR),
    ];
    for (plan, status) in outcomes {
        let path = format!("/v2/service_instances/h-{plan}");
        let a = rt
            .osb(Method::PUT, "hostile", &path, Some(hostile(plan)))
            .await;
        assert_eq!(a.status, status, "{plan}: {}", a.body);
    }

    // Reloads: a new version of hostile is accepted; junk as file-broker's is refused.
    let brokers = rt.dir.path().join("brokers");
    let changed = manifest("hostile", &format!("{HOSTILE_LIMITS}memory_mib = 64\n"));
    std::fs::write(brokers.join("hostile.toml"), changed).unwrap();
    let reloader = &rt.server().reloader;
    reloader.reload("hostile", false).await.unwrap();
    std::fs::write(brokers.join("file-broker.wasm"), b"junk").unwrap();
    assert!(reloader.reload("file-broker", false).await.is_err());

    let (status, text) = get(client, format!("{base}/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    let count = |name: &str, labels: &[(&str, &str)]| sample(&text, name, labels);
    let reloads = |broker, result| {
        count(
            "brokerbox_reloads_total",
            &[("broker", broker), ("tenant", ""), ("result", result)],
        )
    };
    assert_eq!(reloads("hostile", "accepted"), 1.0);
    assert_eq!(reloads("file-broker", "refused"), 1.0);
    assert_eq!(reloads("file-broker", "accepted"), 0.0);
    let requests = "brokerbox_osb_requests_total";
    let fb = |endpoint, status| {
        count(
            requests,
            &[
                ("broker", "file-broker"),
                ("tenant", ""),
                ("endpoint", endpoint),
                ("status", status),
            ],
        )
    };
    assert_eq!(fb("catalog", "200"), 2.0, "{text}");
    assert_eq!(fb("provision", "201"), 2.0);
    assert_eq!(fb("bind", "201"), 1.0);
    assert_eq!(fb("unbind", "200"), 1.0);
    assert_eq!(fb("deprovision", "200"), 1.0);
    assert_eq!(fb("catalog", "401"), 1.0);
    assert_eq!(fb("catalog", "412"), 1.0);
    // A name that serves no broker is no label of its own.
    let unknown = [
        ("broker", ""),
        ("tenant", ""),
        ("endpoint", "catalog"),
        ("status", "401"),
    ];
    assert_eq!(count(requests, &unknown), 1.0);
    assert!(!text.contains("no-such-broker"));
    let seconds = "brokerbox_osb_request_duration_seconds_count";
    let provisions = [
        ("broker", "file-broker"),
        ("tenant", ""),
        ("endpoint", "provision"),
    ];
    assert_eq!(count(seconds, &provisions), 2.0);

    let calls = "brokerbox_guest_calls_total";
    let call = |broker, call, outcome| {
        count(
            calls,
            &[
                ("broker", broker),
                ("tenant", ""),
                ("call", call),
                ("outcome", outcome),
            ],
        )
    };
    // The catalog was called once, when the broker loaded; the edge serves it from then on.
    assert_eq!(call("file-broker", "catalog", "ok"), 1.0);
    assert_eq!(call("file-broker", "provision", "ok"), 2.0);
    assert_eq!(call("file-broker", "bind", "ok"), 1.0);
    assert_eq!(call("file-broker", "unbind", "ok"), 1.0);
    assert_eq!(call("file-broker", "deprovision", "ok"), 1.0);
    assert_eq!(call("hostile", "provision", "ok"), 1.0);
    assert_eq!(call("hostile", "provision", "broker_error"), 1.0);
    assert_eq!(call("hostile", "provision", "fuel"), 1.0);
    assert_eq!(call("hostile", "provision", "deadline"), 1.0);
    assert_eq!(call("hostile", "provision", "trap"), 1.0);
    let hostile_fuel = [("broker", "hostile"), ("tenant", "")];
    // Seven calls ran (two catalogs: one per version loaded, and five provisions), each with
    // its fuel counted; the fuel burner used all of its budget.
    assert_eq!(call("hostile", "catalog", "ok"), 2.0);
    assert_eq!(count("brokerbox_guest_call_fuel_count", &hostile_fuel), 7.0);
    assert!(count("brokerbox_guest_call_fuel_sum", &hostile_fuel) >= 50_000_000.0);

    // The census: file-broker holds one instance and no binding; its operations are counted.
    let file_broker = [("broker", "file-broker"), ("tenant", "")];
    assert_eq!(count("brokerbox_instances", &file_broker), 1.0);
    assert_eq!(count("brokerbox_bindings", &file_broker), 0.0);
    let operations = |kind, state| {
        count(
            "brokerbox_operations",
            &[("broker", "file-broker"), ("kind", kind), ("state", state)],
        )
    };
    assert_eq!(operations("provision", "succeeded"), 2.0);
    assert_eq!(operations("deprovision", "succeeded"), 1.0);
    let ended = [
        ("broker", "file-broker"),
        ("kind", "provision"),
        ("state", "succeeded"),
    ];
    assert_eq!(
        count("brokerbox_operation_duration_seconds_count", &ended),
        2.0
    );
    assert!(count("brokerbox_store_duration_seconds_count", &[("op", "write")]) > 0.0);
    let info = text
        .lines()
        .find(|l| l.starts_with("brokerbox_broker_info{broker=\"hostile\",tenant=\"\",version=\""))
        .expect("hostile's info series");
    assert!(info.ends_with("\"} 1"), "{info}");
    assert_eq!(count("brokerbox_brokers_quarantined", &[]), 0.0);

    // A removed broker's series go with it; the others stay.
    rt.server().reloader.remove("file-broker").await.unwrap();
    let (_, text) = get(client, format!("{base}/metrics")).await;
    assert!(!text.contains("broker=\"file-broker\""), "{text}");
    assert_eq!(
        sample(
            &text,
            calls,
            &[
                ("broker", "hostile"),
                ("tenant", ""),
                ("call", "provision"),
                ("outcome", "fuel")
            ]
        ),
        1.0
    );
}

#[tokio::test]
async fn metrics_can_require_a_token_or_move_to_their_own_listener() {
    let rt = TestRuntime::start_with(
        &[("file-broker", guests::FILE_BROKER, &file_manifest())],
        |config| {
            config.runtime_config.metrics.token = Some("scrape-me".into());
            config.runtime_config.admin = Some(brokerbox::config::AdminConfig {
                operator_token: "the-operator".into(),
            });
        },
    )
    .await
    .unwrap();
    let url = format!("http://{}/metrics", rt.server().addr);
    let client = rt.client();
    let a = rt.send(client.get(&url), None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    assert!(a.body["description"]
        .as_str()
        .unwrap()
        .contains("metrics token"));
    let a = rt.send(client.get(&url).bearer_auth("wrong"), None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    let (status, text) = {
        let response = client
            .get(&url)
            .bearer_auth("scrape-me")
            .send()
            .await
            .unwrap();
        (response.status(), response.text().await.unwrap())
    };
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("brokerbox_guest_calls_total"), "{text}");
    assert!(text.ends_with("# EOF\n"));
    // The operator's token opens it too.
    let a = client
        .get(&url)
        .bearer_auth("the-operator")
        .send()
        .await
        .unwrap();
    assert_eq!(a.status(), StatusCode::OK);

    let rt = TestRuntime::start_with(
        &[("file-broker", guests::FILE_BROKER, &file_manifest())],
        |config| config.metrics_listen = Some("127.0.0.1:0".parse().unwrap()),
    )
    .await
    .unwrap();
    let (main, separate) = (rt.server().addr, rt.server().metrics_addr.unwrap());
    let (status, _) = get(rt.client(), format!("http://{main}/metrics")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, text) = get(rt.client(), format!("http://{separate}/metrics")).await;
    assert_eq!(status, StatusCode::OK);
    assert!(text.contains("brokerbox_broker_info{broker=\"file-broker\""));
    let (status, _) = get(rt.client(), format!("http://{separate}/readyz")).await;
    assert_eq!(status, StatusCode::OK);
}

#[tokio::test]
async fn healthz_and_readyz_answer_without_credentials_and_list_quarantined_brokers() {
    // A broker whose component is junk is quarantined: listed, and the runtime stays ready.
    let junk = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(junk.path(), b"not wasm").unwrap();
    let junk_path = junk.path().to_str().unwrap().to_string();
    let rt = TestRuntime::start(&[
        ("file-broker", guests::FILE_BROKER, &file_manifest()),
        ("broken", &junk_path, &manifest("broken", "")),
    ])
    .await
    .unwrap();
    let base = format!("http://{}", rt.server().addr);
    let a = rt
        .send(rt.client().get(format!("{base}/healthz")), None)
        .await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body["status"], "ok");
    assert!(a.body["uptime_seconds"].is_u64());
    assert!(a.body["version"].is_string());
    let a = rt
        .send(rt.client().get(format!("{base}/readyz")), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.body["ready"], true);
    assert_eq!(a.body["checks"]["store"]["ok"], true);
    assert_eq!(a.body["checks"]["engine"]["ok"], true);
    assert_eq!(a.body["checks"]["brokers"]["serving"], 1);
    assert_eq!(
        a.body["checks"]["brokers"]["quarantined"],
        json!(["broken"])
    );
    let (_, text) = get(rt.client(), format!("{base}/metrics")).await;
    assert_eq!(sample(&text, "brokerbox_brokers_quarantined", &[]), 1.0);
}

#[tokio::test]
async fn readyz_turns_unready_while_postgres_is_away_and_ready_when_it_returns() {
    let Some(server) = postgres::server() else {
        eprintln!(
            "skipped: set {} to run the outage test",
            postgres::SERVER_ENV
        );
        return;
    };
    // The runtime reaches its database through a proxy the test can cut.
    let database = postgres::fresh_database(&server).await;
    let (prefix, rest) = database
        .split_once('@')
        .expect("postgres://USER@HOST:PORT/DB");
    let (upstream, name) = rest.split_once('/').unwrap();
    let proxy = CutProxy::start(upstream.to_string()).await;
    let through_proxy = format!("{prefix}@{}/{name}", proxy.addr);
    let rt = TestRuntime::start_with(
        &[("file-broker", guests::FILE_BROKER, &file_manifest())],
        move |config| config.state_url = Some(through_proxy.clone()),
    )
    .await
    .unwrap();
    let url = format!("http://{}/readyz", rt.server().addr);
    let ready = || async { rt.send(rt.client().get(&url), None).await };
    let a = ready().await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);

    proxy.cut_off();
    // A verdict is kept for a second; the store check is bounded at two.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let started = std::time::Instant::now();
    let a = ready().await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{}", a.body);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(a.body["ready"], false);
    assert_eq!(a.body["checks"]["store"]["ok"], false);
    assert!(a.body["checks"]["store"]["error"].is_string());
    // OSB requests that need the store fail with an OSB error meanwhile.
    let path = "/v2/service_instances/during-outage";
    let a = rt
        .osb(Method::PUT, "file-broker", path, Some(small()))
        .await;
    assert!(a.status.is_server_error(), "{}: {}", a.status, a.body);

    proxy.restore();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let a = ready().await;
        if a.status == StatusCode::OK {
            assert_eq!(a.body["checks"]["store"]["ok"], true);
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never ready again: {}",
            a.body
        );
    }
    // Every request after the outage succeeds: no connection dropped during it is met again.
    for n in 0..5 {
        let path = format!("/v2/service_instances/after-outage-{n}");
        let a = rt
            .osb(Method::PUT, "file-broker", &path, Some(small()))
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "provision {n}: {}", a.body);
    }
}

/// Brokers dir with file-broker and hostile (`HOSTILE_LIMITS`).
fn brokers_dir(root: &std::path::Path) -> std::path::PathBuf {
    let brokers = root.join("brokers");
    std::fs::create_dir_all(&brokers).unwrap();
    std::fs::copy(guests::FILE_BROKER, brokers.join("file-broker.wasm")).unwrap();
    std::fs::write(brokers.join("file-broker.toml"), file_manifest()).unwrap();
    std::fs::copy(guests::HOSTILE_BROKER, brokers.join("hostile.wasm")).unwrap();
    std::fs::write(
        brokers.join("hostile.toml"),
        manifest("hostile", HOSTILE_LIMITS),
    )
    .unwrap();
    brokers
}

#[tokio::test]
async fn json_logs_give_each_request_its_line_with_a_reason_and_name_the_limit_hit() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = brokers_dir(dir.path());
    let log = dir.path().join("stderr.log");
    let state = crate::process::state_url().await;
    let mut process = RuntimeProcess::start_logged(
        &dir.path().join("data"),
        &brokers,
        state,
        &["--log-format", "json"],
        &[("RUST_LOG", "info")],
        Some(&log),
    )
    .await;
    let http = reqwest::Client::new();
    let catalog = format!("{}/v2/catalog", process.url("file-broker"));
    let answer = http
        .get(&catalog)
        .basic_auth("file-broker", Some("wrong"))
        .header("X-Broker-API-Version", "2.17")
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::UNAUTHORIZED);
    // No identity sent: one is made up, echoed, and logged.
    let made_up = answer.headers()["x-broker-api-request-identity"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(made_up.len(), 36, "a UUID: {made_up}");
    let url = format!("{}/v2/service_instances/slow", process.url("hostile"));
    let (status, _) = send_osb(Method::PUT, url, "hostile", Some(hostile("sleep"))).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    process.terminate(Duration::from_secs(30)).await;

    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains('\u{1b}'), "no colour codes in a file");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let summary = lines
        .iter()
        .find(|l| l["listen"].is_string())
        .expect("a start-up summary");
    assert_eq!(summary["listen"], process.addr);
    assert_eq!(summary["brokers"], 2);
    assert_eq!(summary["watch"], false);
    assert!(summary["store"].as_str().unwrap().contains("://"));
    let refused = lines
        .iter()
        .find(|l| l["message"] == "answered" && l["status"] == 401)
        .expect("the 401's line");
    assert_eq!(refused["level"], "INFO");
    assert!(
        refused["reason"]
            .as_str()
            .unwrap()
            .contains("wrong user name or password"),
        "{refused}"
    );
    assert!(refused["duration_ms"].is_f64());
    // The request's fields are on its line: no span is kept at INFO.
    assert_eq!(refused["method"], "GET");
    assert_eq!(refused["route"], "/brokers/{broker}/v2/catalog");
    assert_eq!(refused["broker"], "file-broker");
    assert_eq!(refused["tenant"], "");
    assert_eq!(refused["request"], made_up);
    assert!(refused.get("span").is_none(), "{refused}");
    let stopped = lines
        .iter()
        .find(|l| l["limit"] == "deadline")
        .expect("a line naming the limit");
    assert_eq!(stopped["level"], "WARN");
    // Named on the line itself: spans are kept only at DEBUG.
    assert_eq!(stopped["broker"], "hostile");
    assert_eq!(stopped["call"], "provision");
    let failed_request = stopped["request"].as_str().expect("the request identity");
    assert_eq!(failed_request.len(), 36, "a made-up UUID: {stopped}");
    let failed = lines
        .iter()
        .find(|l| l["message"] == "answered" && l["status"] == 500)
        .expect("the 500's line");
    assert_eq!(failed["level"], "WARN");
    assert!(failed["reason"].as_str().unwrap().contains("deadline"));
    assert_eq!(failed["broker"], "hostile");
    assert_eq!(
        failed["request"], failed_request,
        "one id on every line of a request"
    );
    assert_eq!(
        failed["route"],
        "/brokers/{broker}/v2/service_instances/{instance_id}"
    );
    // Dependencies' debug chatter stays out by default.
    assert!(lines.iter().all(|l| !l["target"]
        .as_str()
        .unwrap_or_default()
        .starts_with("cranelift")));
}

/// An OTLP/HTTP receiver: collects every `ExportTraceServiceRequest` posted to `/v1/traces`.
async fn otlp_receiver() -> (
    u16,
    std::sync::Arc<std::sync::Mutex<Vec<opentelemetry_proto::tonic::trace::v1::Span>>>,
) {
    use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
    use prost::Message as _;
    let spans = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let kept = spans.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let kept = kept.clone();
            async move {
                let request = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut kept = kept.lock().unwrap();
                for resource in request.resource_spans {
                    for scope in resource.scope_spans {
                        kept.extend(scope.spans);
                    }
                }
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (port, spans)
}

fn attribute(span: &opentelemetry_proto::tonic::trace::v1::Span, key: &str) -> Option<String> {
    use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
    let value = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?;
    match value.value.as_ref()? {
        V::StringValue(s) => Some(s.clone()),
        V::IntValue(i) => Some(i.to_string()),
        V::BoolValue(b) => Some(b.to_string()),
        other => Some(format!("{other:?}")),
    }
}

#[tokio::test]
async fn traces_reach_an_otlp_receiver_with_a_span_per_request_operation_and_guest_call() {
    let (port, spans) = otlp_receiver().await;
    let dir = tempfile::tempdir().unwrap();
    let brokers = brokers_dir(dir.path());
    let endpoint = format!("http://127.0.0.1:{port}");
    let state = crate::process::state_url().await;
    let mut process = RuntimeProcess::start_logged(
        &dir.path().join("data"),
        &brokers,
        state,
        &["--otlp-endpoint", &endpoint],
        &[("OTEL_BSP_SCHEDULE_DELAY", "100")],
        None,
    )
    .await;
    let url = format!("{}/v2/service_instances/traced", process.url("file-broker"));
    let answer = reqwest::Client::new()
        .put(&url)
        .basic_auth("file-broker", Some("file-broker-secret"))
        .header("X-Broker-API-Version", "2.17")
        .header("X-Broker-API-Request-Identity", "trace-me-1")
        .json(&json!({
            "service_id": FILE_SERVICE, "plan_id": SMALL_PLAN,
            "organization_guid": "o", "space_guid": "s",
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    // SIGTERM flushes what the exporter still holds.
    process.terminate(Duration::from_secs(30)).await;

    let spans = spans.lock().unwrap().clone();
    let request = spans
        .iter()
        .find(|s| {
            attribute(s, "request").as_deref() == Some("trace-me-1") && s.name == "PUT provision"
        })
        .unwrap_or_else(|| panic!("the request's span among {:?}", names(&spans)));
    assert_eq!(attribute(request, "broker").as_deref(), Some("file-broker"));
    assert_eq!(attribute(request, "status").as_deref(), Some("201"));
    let same_trace =
        |s: &&opentelemetry_proto::tonic::trace::v1::Span| s.trace_id == request.trace_id;
    let operation = spans
        .iter()
        .filter(same_trace)
        .find(|s| s.name == "provision run")
        .unwrap_or_else(|| panic!("the operation's span among {:?}", names(&spans)));
    assert_eq!(attribute(operation, "kind").as_deref(), Some("provision"));
    assert_eq!(
        operation.parent_span_id, request.span_id,
        "the operation is inside the request"
    );
    let call = spans
        .iter()
        .filter(same_trace)
        .find(|s| s.name == "guest_call")
        .unwrap_or_else(|| panic!("the guest call's span among {:?}", names(&spans)));
    assert_eq!(attribute(call, "call").as_deref(), Some("provision"));
    assert_eq!(attribute(call, "outcome").as_deref(), Some("ok"));
    assert_eq!(attribute(call, "broker").as_deref(), Some("file-broker"));
    assert_eq!(attribute(call, "request").as_deref(), Some("trace-me-1"));
    assert_eq!(
        call.parent_span_id, operation.span_id,
        "the call is inside the operation"
    );
}

fn names(spans: &[opentelemetry_proto::tonic::trace::v1::Span]) -> Vec<String> {
    spans.iter().map(|s| s.name.clone()).collect()
}
