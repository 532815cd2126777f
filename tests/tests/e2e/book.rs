//! One book of brokers: bad files are quarantined (never stop the runtime), a refused version
//! is never served after a restart, every version from the brokers dir is in `admin versions`
//! and can be rolled back to, and instances whose plan left the catalog can still be deleted.

use brokerbox::config::RuntimeConfig;
use brokerbox_tests::{guests, manifest, repo_root, TestRuntime};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::path::Path;
use std::time::{Duration, SystemTime};

const OPERATOR: &str = "operator-token-0123456789";
const FILE_SERVICE: &str = "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01";
const FILE_SMALL: &str = "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101";

/// A component that exports nothing: valid, but not a broker.
const EMPTY_COMPONENT: &[u8] = b"\0asm\x0d\x00\x01\x00";

fn with_admin(config: &mut brokerbox::ServeConfig) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runtime.toml");
    std::fs::write(&path, format!("[admin]\noperator_token = \"{OPERATOR}\"\n")).unwrap();
    config.runtime_config = RuntimeConfig::load(&path).unwrap();
}

fn file_manifest() -> String {
    std::fs::read_to_string(repo_root().join("examples/file-broker/file-broker.toml")).unwrap()
}

fn trap_manifest(version: usize, extra: &str) -> String {
    manifest("trap", &format!("[env]\nVERSION = \"{version}\"\n{extra}"))
}

async fn admin(
    rt: &TestRuntime,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = format!("http://{}/admin/brokers{path}", rt.server().addr);
    let request = rt.client().request(method, url).bearer_auth(OPERATOR);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// The kinds of bad files, each with the words its reason must hold.
const BAD: [(&str, &str); 6] = [
    ("Hello", "a broker name uses only"),
    ("junk", "not a valid WebAssembly component"),
    ("lonely", "missing manifest"),
    (
        "hollow",
        "does not implement the brokerbox:broker/broker world",
    ),
    ("files-copy", "already used by broker file-broker"),
    (
        "ghost",
        "tenant \"ghost\", which the runtime's config does not declare",
    ),
];

/// Writes the bad files into `dir`; the duplicate is written last (it arrives later).
fn write_bad_files(dir: &Path) {
    std::fs::copy(guests::RULES_BROKER, dir.join("ghost.wasm")).unwrap();
    std::fs::write(
        dir.join("ghost.toml"),
        format!("tenant = \"ghost\"\n{}", manifest("ghost", "")),
    )
    .unwrap();
    std::fs::copy(guests::TRAP_BROKER, dir.join("Hello.wasm")).unwrap();
    std::fs::write(dir.join("Hello.toml"), manifest("hello", "")).unwrap();
    std::fs::write(dir.join("junk.wasm"), b"not a component").unwrap();
    std::fs::write(dir.join("junk.toml"), manifest("junk", "")).unwrap();
    std::fs::copy(guests::TRAP_BROKER, dir.join("lonely.wasm")).unwrap();
    std::fs::write(dir.join("hollow.wasm"), EMPTY_COMPONENT).unwrap();
    std::fs::write(dir.join("hollow.toml"), manifest("hollow", "")).unwrap();
    std::fs::write(dir.join("files-copy.toml"), file_manifest()).unwrap();
    std::fs::copy(guests::FILE_BROKER, dir.join("files-copy.wasm")).unwrap();
    // Later than file-broker's files, whatever the file system's clock resolution.
    let later = SystemTime::now() + Duration::from_secs(5);
    for ext in ["wasm", "toml"] {
        std::fs::File::options()
            .write(true)
            .open(dir.join(format!("files-copy.{ext}")))
            .unwrap()
            .set_modified(later)
            .unwrap();
    }
}

/// Whether the two good brokers serve and the bad ones are listed with their reasons;
/// the listing's problems otherwise.
async fn book_problems(rt: &TestRuntime) -> Vec<String> {
    let mut problems = Vec::new();
    for good in ["file-broker", "trap"] {
        let catalog = rt.osb(Method::GET, good, "/v2/catalog", None).await;
        if catalog.status != StatusCode::OK {
            problems.push(format!("{good} answers {}", catalog.status));
        }
    }
    let (status, listed) = admin(rt, Method::GET, "", None).await;
    assert_eq!(status, StatusCode::OK, "{listed}");
    let brokers = listed["brokers"].as_array().cloned().unwrap_or_default();
    for (name, reason) in BAD {
        let entry = brokers.iter().find(|b| b["name"] == name);
        match entry {
            Some(b)
                if b["state"] == "quarantined"
                    && b["error"].as_str().is_some_and(|e| e.contains(reason)) => {}
            other => problems.push(format!(
                "{name}: want quarantined for {reason:?}, got {other:?}"
            )),
        }
        let catalog = rt.osb(Method::GET, name, "/v2/catalog", None).await;
        if catalog.status != StatusCode::UNAUTHORIZED {
            problems.push(format!("{name} is served: {}", catalog.status));
        }
    }
    let serving: Vec<_> = brokers
        .iter()
        .filter(|b| b["state"] == "serving")
        .map(|b| b["name"].clone())
        .collect();
    if serving != [json!("file-broker"), json!("trap")] {
        problems.push(format!("serving {serving:?}"));
    }
    problems
}

#[tokio::test]
async fn bad_files_are_quarantined_at_start_up_under_watch_and_after_restarts() {
    let good = [
        ("file-broker", guests::FILE_BROKER, file_manifest()),
        ("trap", guests::TRAP_BROKER, trap_manifest(0, "")),
    ];
    let good: Vec<(&str, &str, &str)> = good.iter().map(|(n, w, m)| (*n, *w, m.as_str())).collect();

    // Present at the first start: the good ones serve, the bad ones are listed.
    let mut rt = TestRuntime::start_with(&good, with_admin).await.unwrap();
    write_bad_files(&rt.dir.path().join("brokers"));
    rt.restart().await.unwrap();
    assert_eq!(book_problems(&rt).await, Vec::<String>::new());
    rt.restart().await.unwrap();
    assert_eq!(
        book_problems(&rt).await,
        Vec::<String>::new(),
        "after a second restart"
    );
    drop(rt);

    // Added under --watch: the same, and the same again after a restart.
    let mut rt = TestRuntime::start_with(&good, |config| {
        with_admin(config);
        config.watch = true;
    })
    .await
    .unwrap();
    write_bad_files(&rt.dir.path().join("brokers"));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let mut problems = book_problems(&rt).await;
    while !problems.is_empty() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
        problems = book_problems(&rt).await;
    }
    assert_eq!(problems, Vec::<String>::new(), "under --watch");
    rt.restart().await.unwrap();
    assert_eq!(
        book_problems(&rt).await,
        Vec::<String>::new(),
        "after the restart"
    );
}

#[tokio::test]
async fn strict_start_up_fails_on_a_bad_file_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let brokers = dir.path().join("brokers");
    std::fs::create_dir_all(&brokers).unwrap();
    std::fs::write(brokers.join("junk.wasm"), b"not a component").unwrap();
    std::fs::write(brokers.join("junk.toml"), manifest("junk", "")).unwrap();
    let mut config = brokerbox::ServeConfig::new(dir.path().join("data"), &brokers);
    config.state_url = crate::process::state_url().await;
    config.strict = true;
    let error = brokerbox::Runtime::load(&config)
        .await
        .err()
        .expect("refused");
    let error = format!("{error:#}");
    assert!(
        error.contains("junk") && error.contains("not a valid WebAssembly component"),
        "{error}"
    );
    // Without --strict the same directory serves (nothing else in it).
    config.strict = false;
    let runtime = brokerbox::Runtime::load(&config).await.unwrap();
    assert!(runtime.generation().all().next().is_none());
}

#[tokio::test]
async fn a_refused_version_is_never_served_after_a_restart_and_stranded_instances_can_be_deleted() {
    let mut rt = TestRuntime::start_with(
        &[(
            "trap",
            guests::TRAP_BROKER,
            &trap_manifest(1, "EXTRA_PLAN = \"yes\"\n"),
        )],
        with_admin,
    )
    .await
    .unwrap();
    let brokers = rt.dir.path().join("brokers");
    let extra = json!({ "service_id": "trap-service", "plan_id": "extra-plan" });
    let provisioned = rt
        .osb(
            Method::PUT,
            "trap",
            "/v2/service_instances/x-1",
            Some(extra),
        )
        .await;
    assert_eq!(provisioned.status, StatusCode::CREATED);

    // Version 2 drops the plan instance x-1 uses: refused, in the book, version 1 serves.
    std::fs::write(brokers.join("trap.toml"), trap_manifest(2, "")).unwrap();
    let refused = rt
        .server()
        .reloader
        .reload("trap", false)
        .await
        .unwrap_err();
    assert!(
        format!("{refused:#}").contains("removes plan extra-plan"),
        "{refused:#}"
    );
    let has_extra_plan = |catalog: &Value| {
        catalog["services"][0]["plans"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["id"] == "extra-plan")
    };
    rt.restart().await.unwrap();
    let catalog = rt.osb(Method::GET, "trap", "/v2/catalog", None).await;
    assert_eq!(catalog.status, StatusCode::OK);
    assert!(
        has_extra_plan(&catalog.body),
        "the accepted version serves after the restart"
    );
    let (_, shown) = admin(&rt, Method::GET, "/trap", None).await;
    assert_eq!(shown["state"], "serving", "{shown}");
    assert!(
        shown["last_error"]
            .as_str()
            .unwrap()
            .contains("removes plan extra-plan"),
        "{shown}"
    );
    let (_, versions) = admin(&rt, Method::GET, "/trap/versions", None).await;
    let states: Vec<_> = versions["versions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| (v["state"].clone(), v["current"].clone()))
        .collect();
    assert_eq!(
        states,
        [
            (json!("accepted"), json!(true)),
            (json!("refused"), json!(false))
        ],
        "{versions}"
    );
    // Still refused on a second restart, and a plain reload does not try it again.
    rt.restart().await.unwrap();
    assert!(has_extra_plan(
        &rt.osb(Method::GET, "trap", "/v2/catalog", None).await.body
    ));
    assert!(rt
        .server()
        .reloader
        .reload("trap", false)
        .await
        .unwrap_err()
        .to_string()
        .contains("was refused"));

    // The operator forces it with a marker file: version 2 serves, the marker is gone.
    std::fs::write(brokers.join("trap.force"), "").unwrap();
    rt.server().reloader.reload("trap", false).await.unwrap();
    assert!(!brokers.join("trap.force").exists());
    let catalog = rt.osb(Method::GET, "trap", "/v2/catalog", None).await;
    assert!(!has_extra_plan(&catalog.body));
    rt.restart().await.unwrap();
    let catalog = rt.osb(Method::GET, "trap", "/v2/catalog", None).await;
    assert!(
        !has_extra_plan(&catalog.body),
        "the forced version stays after a restart"
    );

    // The instance on the dropped plan is still the platform's to delete: bind, unbind and
    // deprovision work with its own ids.
    let query = "?service_id=trap-service&plan_id=extra-plan";
    let unknown_binding = rt
        .osb(
            Method::DELETE,
            "trap",
            &format!("/v2/service_instances/x-1/service_bindings/b{query}"),
            None,
        )
        .await;
    assert_eq!(
        unknown_binding.status,
        StatusCode::GONE,
        "{:?}",
        unknown_binding.body
    );
    let deleted = rt
        .osb(
            Method::DELETE,
            "trap",
            &format!("/v2/service_instances/x-1{query}"),
            None,
        )
        .await;
    assert_eq!(deleted.status, StatusCode::OK, "{:?}", deleted.body);
    // Another instance's ids are still checked against the catalog.
    let bogus = rt
        .osb(
            Method::DELETE,
            "trap",
            &format!("/v2/service_instances/x-2{query}"),
            None,
        )
        .await;
    assert_eq!(bogus.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn versions_from_the_brokers_dir_are_in_the_book_and_can_be_rolled_back_to() {
    let mut rt = TestRuntime::start_with(
        &[("trap", guests::TRAP_BROKER, &trap_manifest(1, ""))],
        with_admin,
    )
    .await
    .unwrap();
    let brokers = rt.dir.path().join("brokers");
    let first = rt.server().reloader.problems();
    assert!(first.is_empty(), "{first:?}");
    std::fs::write(brokers.join("trap.toml"), trap_manifest(2, "")).unwrap();
    rt.server().reloader.reload("trap", false).await.unwrap();
    let (_, versions) = admin(&rt, Method::GET, "/trap/versions", None).await;
    let list = versions["versions"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2, "{versions}");
    assert!(
        list.iter()
            .all(|v| v["source"] == "dir" && v["state"] == "accepted"),
        "{versions}"
    );
    assert_eq!(list[1]["current"], true);
    let version = |body: &Value| -> String {
        body["services"][0]["description"]
            .as_str()
            .unwrap()
            .chars()
            .filter(char::is_ascii_digit)
            .collect()
    };
    assert_eq!(
        version(&rt.osb(Method::GET, "trap", "/v2/catalog", None).await.body),
        "2"
    );

    let first_version = list[0]["version"].clone();
    let (status, rolled) = admin(
        &rt,
        Method::POST,
        "/trap/rollback",
        Some(json!({ "version": first_version })),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{rolled}");
    assert_eq!(rolled["version"], first_version);
    assert_eq!(
        rolled["outcome"], "updated",
        "plain JSON, no debug strings: {rolled}"
    );
    assert_eq!(
        version(&rt.osb(Method::GET, "trap", "/v2/catalog", None).await.body),
        "1"
    );
    // The brokers dir holds what serves, so a restart serves the rolled-back version.
    assert_eq!(
        std::fs::read_to_string(brokers.join("trap.toml")).unwrap(),
        trap_manifest(1, "")
    );
    rt.restart().await.unwrap();
    let (_, shown) = admin(&rt, Method::GET, "/trap", None).await;
    assert_eq!(shown["version"], first_version);
}

#[tokio::test]
async fn a_forced_removal_purges_the_instances_so_a_new_broker_of_that_name_starts_clean() {
    let rt = TestRuntime::start_with(
        &[("file-broker", guests::FILE_BROKER, &file_manifest())],
        with_admin,
    )
    .await
    .unwrap();
    let body = json!({ "service_id": FILE_SERVICE, "plan_id": FILE_SMALL });
    let created = rt
        .osb(
            Method::PUT,
            "file-broker",
            "/v2/service_instances/kept",
            Some(body.clone()),
        )
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
    let bound = rt
        .osb(
            Method::PUT,
            "file-broker",
            "/v2/service_instances/kept/service_bindings/b",
            Some(body.clone()),
        )
        .await;
    assert_eq!(bound.status, StatusCode::CREATED);
    let (status, refused) = admin(&rt, Method::DELETE, "/file-broker", None).await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(
        refused["description"].as_str().unwrap().contains("purge"),
        "{refused}"
    );
    let (status, removed) = admin(&rt, Method::DELETE, "/file-broker?force=true", None).await;
    assert_eq!(status, StatusCode::OK, "{removed}");
    assert_eq!(removed["purged"]["instances"], 1, "{removed}");
    assert_eq!(removed["purged"]["bindings"], 1, "{removed}");
    // Added again: no instance comes back.
    let wasm = std::fs::read(guests::FILE_BROKER).unwrap();
    let upload = json!({
        "wasm_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, wasm),
        "manifest": file_manifest(),
    });
    let (status, added) = admin(&rt, Method::PUT, "/file-broker", Some(upload)).await;
    assert_eq!(status, StatusCode::OK, "{added}");
    assert_eq!(added["outcome"], "added");
    assert_eq!(added["instances"], 0);
    let again = rt
        .osb(
            Method::PUT,
            "file-broker",
            "/v2/service_instances/kept",
            Some(body),
        )
        .await;
    assert_eq!(
        again.status,
        StatusCode::CREATED,
        "a new instance, not the purged one"
    );
}

#[tokio::test]
async fn without_its_kept_files_a_broker_still_refuses_a_version_dropping_plans_in_use() {
    let mut rt = TestRuntime::start_with(
        &[(
            "trap",
            guests::TRAP_BROKER,
            &trap_manifest(1, "EXTRA_PLAN = \"yes\"\n"),
        )],
        with_admin,
    )
    .await
    .unwrap();
    let extra = json!({ "service_id": "trap-service", "plan_id": "extra-plan" });
    let provisioned = rt
        .osb(
            Method::PUT,
            "trap",
            "/v2/service_instances/x-1",
            Some(extra),
        )
        .await;
    assert_eq!(provisioned.status, StatusCode::CREATED);
    // The kept files of the current version are lost, and a version without the plan is in
    // the brokers dir: the plans in use come from the state store, so it is still refused.
    std::fs::remove_dir_all(rt.dir.path().join("data/versions/trap")).unwrap();
    let brokers = rt.dir.path().join("brokers");
    std::fs::write(brokers.join("trap.toml"), trap_manifest(2, "")).unwrap();
    rt.restart().await.unwrap();
    let (_, shown) = admin(&rt, Method::GET, "/trap", None).await;
    assert_eq!(shown["state"], "quarantined", "{shown}");
    assert!(
        shown["error"]
            .as_str()
            .unwrap()
            .contains("removes plan extra-plan"),
        "{shown}"
    );
    // The operator puts the accepted version back: it serves again.
    std::fs::write(
        brokers.join("trap.toml"),
        trap_manifest(1, "EXTRA_PLAN = \"yes\"\n"),
    )
    .unwrap();
    rt.server().reloader.reload("trap", false).await.unwrap();
    let (_, shown) = admin(&rt, Method::GET, "/trap", None).await;
    assert_eq!(shown["state"], "serving", "{shown}");
    assert_eq!(
        rt.osb(Method::GET, "trap", "/v2/catalog", None)
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_refused_upload_of_a_new_name_leaves_no_trace() {
    let rt = TestRuntime::start_with(&[], with_admin).await.unwrap();
    for i in 0..3 {
        let upload = json!({
            "wasm_base64": base64::Engine::encode(&base64::engine::general_purpose::STANDARD, b"junk"),
            "manifest": manifest(&format!("junk-{i}"), ""),
        });
        let (status, refused) = admin(&rt, Method::PUT, &format!("/junk-{i}"), Some(upload)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{refused}");
        let (status, _) = admin(&rt, Method::GET, &format!("/junk-{i}/versions"), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }
    let (_, listed) = admin(&rt, Method::GET, "", None).await;
    assert_eq!(listed["brokers"], json!([]), "{listed}");
    let versions = rt.dir.path().join("data/versions");
    let kept: Vec<_> = std::fs::read_dir(&versions)
        .map(|d| {
            d.filter_map(Result::ok)
                .map(|e| e.file_name())
                .filter(|n| n != ".uploads")
                .collect()
        })
        .unwrap_or_default();
    assert!(kept.is_empty(), "{kept:?}");
}
