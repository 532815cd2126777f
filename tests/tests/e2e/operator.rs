//! Operators repair it: the audit trail (who uploaded, rolled back, provisioned, purged; a
//! tenant reads only its own), repairs on real stuck and failed operations (refused while one
//! runs unless forced), and the operator page driven in a real headless Chromium.

use crate::process::BINARY;
use base64::Engine as _;
use brokerbox::config::RuntimeConfig;
use brokerbox_tests::{guests, originating_identity, repo_root, TestRuntime};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::time::Duration;

const OPERATOR: &str = "operator-token-0123456789";
const TEAM_A: &str = "team-a-token-0123456789";

const CONFIG: &str = r#"
[admin]
operator_token = "operator-token-0123456789"

[[tenants]]
name = "team-a"
token = "team-a-token-0123456789"
"#;

const SLOW_SERVICE: &str = "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e01";
const SLOW_FLEXIBLE: &str = "8a3b7f6e-0d7e-4a8e-bb5e-5a0b6c1d2e12";
const FILE_SERVICE: &str = "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01";
const FILE_SMALL: &str = "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101";

fn runtime_config() -> RuntimeConfig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("runtime.toml");
    std::fs::write(&path, CONFIG).unwrap();
    RuntimeConfig::load(&path).unwrap()
}

fn example_manifest(name: &str) -> String {
    std::fs::read_to_string(repo_root().join(format!("examples/{name}/{name}.toml"))).unwrap()
}

/// A runtime with the admin API, serving file-broker (the operator's) and slow-broker
/// (team-a's).
async fn runtime() -> TestRuntime {
    let slow = format!("tenant = \"team-a\"\n{}", example_manifest("slow-broker"));
    TestRuntime::start_with(
        &[
            (
                "file-broker",
                guests::FILE_BROKER,
                &example_manifest("file-broker"),
            ),
            ("slow-broker", guests::SLOW_BROKER, &slow),
        ],
        |config| config.runtime_config = runtime_config(),
    )
    .await
    .unwrap()
}

async fn admin(
    rt: &TestRuntime,
    token: &str,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let url = format!("http://{}/admin{path}", rt.server().addr);
    let request = rt.client().request(method, url).bearer_auth(token);
    let request = match body {
        Some(body) => request.json(&body),
        None => request,
    };
    let response = request.send().await.unwrap();
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Runs `brokerbox admin ARGS` against the runtime; returns its printed JSON.
/// (The runtime serves on this test's own threads: the command is awaited, not waited for.)
async fn cli(rt: &TestRuntime, token: &str, args: &[&str]) -> Value {
    let url = format!("http://{}", rt.server().addr);
    let output = tokio::process::Command::new(BINARY)
        .args(["admin", "--url", &url, "--token", token])
        .args(args)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "brokerbox admin {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

fn entries(audit: &Value) -> Vec<Value> {
    audit["entries"].as_array().unwrap().clone()
}

fn find<'a>(entries: &'a [Value], action: &str, broker: &str) -> Option<&'a Value> {
    entries
        .iter()
        .find(|e| e["action"] == action && e["broker"] == broker)
}

#[tokio::test]
async fn the_audit_trail_names_who_did_what_and_a_tenant_reads_only_its_own() {
    let rt = runtime().await;
    // hostile-broker takes its service id from [env], so it can serve beside file-broker.
    let wasm = std::fs::read(guests::HOSTILE_BROKER).unwrap();
    let upload = |manifest: String| json!({ "wasm_base64": base64::engine::general_purpose::STANDARD.encode(&wasm), "manifest": manifest });
    // The operator uploads two versions of a broker and rolls back to the first.
    let manifest = |release: u32| {
        format!(
            "[credentials]\nusername = \"files2\"\npassword = \"files2-secret\"\n[env]\nSERVICE_ID = \"files2-service\"\nRELEASE = \"{release}\"\n"
        )
    };
    let (status, first) = admin(
        &rt,
        OPERATOR,
        Method::PUT,
        "/brokers/files2",
        Some(upload(manifest(1))),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{first}");
    let (status, _) = admin(
        &rt,
        OPERATOR,
        Method::PUT,
        "/brokers/files2",
        Some(upload(manifest(2))),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let body = json!({ "version": first["version"] });
    let (status, back) = admin(
        &rt,
        OPERATOR,
        Method::POST,
        "/brokers/files2/rollback",
        Some(body),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{back}");

    // A platform user provisions on team-a's broker (with a secret parameter); team-a purges it.
    let url = format!(
        "http://{}/brokers/slow-broker/v2/service_instances/audited",
        rt.server().addr
    );
    let identity = originating_identity("cloudfoundry", &json!({ "user_id": "alice" }));
    let answer = rt
        .client()
        .put(&url)
        .basic_auth("slow-broker", Some("slow-broker-secret"))
        .header("X-Broker-API-Version", "2.17")
        .header("X-Broker-API-Originating-Identity", identity)
        .json(&json!({
            "service_id": SLOW_SERVICE, "plan_id": SLOW_FLEXIBLE,
            "organization_guid": "o", "space_guid": "s",
            "parameters": { "sleep_ms": 1, "password": "hunter2-secret" },
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), StatusCode::CREATED);
    let (status, purged) = admin(
        &rt,
        TEAM_A,
        Method::POST,
        "/brokers/slow-broker/instances/audited/purge",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(purged["purged"]["instances"], 1);

    // The operator reads everything, newest first, with actors.
    let (status, all) = admin(&rt, OPERATOR, Method::GET, "/audit", None).await;
    assert_eq!(status, StatusCode::OK);
    let all = entries(&all);
    let seqs: Vec<i64> = all.iter().map(|e| e["seq"].as_i64().unwrap()).collect();
    assert!(
        seqs.windows(2).all(|w| w[0] > w[1]),
        "newest first: {seqs:?}"
    );
    let uploads: Vec<&Value> = all.iter().filter(|e| e["action"] == "upload").collect();
    assert_eq!(uploads.len(), 2, "{all:?}");
    assert!(uploads
        .iter()
        .all(|e| e["actor"] == "operator" && e["outcome"] == "ok"));
    let rollback = find(&all, "rollback", "files2").expect("the rollback");
    assert_eq!(rollback["actor"], "operator");
    assert_eq!(
        rollback["resource"],
        format!("version {}", first["version"].as_str().unwrap())
    );
    let provision = find(&all, "provision", "slow-broker").expect("the provision");
    assert_eq!(provision["actor"], "cloudfoundry:alice");
    assert_eq!(provision["tenant"], "team-a");
    assert_eq!(provision["outcome"], "succeeded");
    assert!(provision["resource"]
        .as_str()
        .unwrap()
        .contains("instance audited"));
    let purge = find(&all, "purge-instance", "slow-broker").expect("the purge");
    assert_eq!(purge["actor"], "tenant:team-a");
    assert_eq!(purge["outcome"], "ok");
    // Secrets never reach the trail: not the parameter, not the uploaded password.
    let text = serde_json::to_string(&all).unwrap();
    assert!(
        !text.contains("hunter2-secret") && !text.contains("files2-secret"),
        "{text}"
    );

    // team-a reads only its own entries: its broker's provision and its purge.
    let (_, own) = admin(&rt, TEAM_A, Method::GET, "/audit", None).await;
    let own = entries(&own);
    assert_eq!(own.len(), 2, "{own:?}");
    assert!(own.iter().all(|e| e["tenant"] == "team-a"));
    // The CLI reads the same trail, and pages back.
    let cli_all = entries(&cli(&rt, OPERATOR, &["audit", "--limit", "2"]).await);
    assert_eq!(cli_all.len(), 2);
    assert_eq!(cli_all[0]["seq"], all[0]["seq"]);
    let before = all[1]["seq"].to_string();
    let older = entries(
        &cli(
            &rt,
            OPERATOR,
            &["audit", "--before", &before, "--limit", "1"],
        )
        .await,
    );
    assert_eq!(older[0]["seq"], all[2]["seq"]);
}

/// Provisions `id` on slow-broker with `parameters`, asynchronously; returns the operation.
async fn provision_slow(rt: &TestRuntime, id: &str, parameters: Value) -> String {
    let path = format!("/v2/service_instances/{id}?accepts_incomplete=true");
    let body =
        json!({ "service_id": SLOW_SERVICE, "plan_id": SLOW_FLEXIBLE, "parameters": parameters });
    let a = rt.osb(Method::PUT, "slow-broker", &path, Some(body)).await;
    assert_eq!(a.status, StatusCode::ACCEPTED, "{}", a.body);
    a.body["operation"].as_str().unwrap().to_string()
}

async fn last_operation(rt: &TestRuntime, id: &str, operation: &str) -> Value {
    let path = format!("/v2/service_instances/{id}/last_operation?operation={operation}");
    rt.osb(Method::GET, "slow-broker", &path, None).await.body
}

#[tokio::test]
async fn repairs_act_on_real_stuck_and_failed_operations_and_refuse_running_ones_unless_forced() {
    let rt = runtime().await;
    // A provision whose guest call runs for 4 s: a runtime holds it (a live lease).
    let running = provision_slow(&rt, "running", json!({ "sleep_ms": 4000 })).await;
    let purge = "/brokers/slow-broker/instances/running/purge";
    let (status, refused) = admin(&rt, OPERATOR, Method::POST, purge, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    assert!(refused["description"]
        .as_str()
        .unwrap()
        .contains("is running"));
    let fail = format!("/brokers/slow-broker/operations/{running}/fail");
    let (status, refused) = admin(&rt, OPERATOR, Method::POST, &fail, None).await;
    assert_eq!(status, StatusCode::CONFLICT, "{refused}");
    // Forced, it fails at once; the platform sees the failure.
    let (status, failed) = admin(
        &rt,
        OPERATOR,
        Method::POST,
        &format!("{fail}?force=true&description=stuck"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{failed}");
    assert_eq!(failed["state"], "failed");
    let seen = last_operation(&rt, "running", &running).await;
    assert_eq!(seen["state"], "failed");
    assert_eq!(seen["description"], "stuck");

    // Retried, it runs again as a new operation and succeeds this time (4 s of sleep).
    let retry = format!("/brokers/slow-broker/operations/{running}/retry");
    let (status, retried) = admin(&rt, OPERATOR, Method::POST, &retry, None).await;
    assert_eq!(status, StatusCode::OK, "{retried}");
    assert_eq!(retried["state"], "in progress");
    let again = retried["id"].as_str().unwrap().to_string();
    assert_ne!(again, running);
    let done = rt
        .poll_until_done("slow-broker", "/v2/service_instances/running", &again)
        .await;
    assert_eq!(done.body["state"], "succeeded", "{}", done.body);
    let fetched = rt
        .osb(
            Method::GET,
            "slow-broker",
            "/v2/service_instances/running",
            None,
        )
        .await;
    assert_eq!(fetched.status, StatusCode::OK, "{}", fetched.body);
    // The old attempt ended meanwhile; it changed nothing (the retry's outcome stands).
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        last_operation(&rt, "running", &again).await["state"],
        "succeeded"
    );
    // Only a failed operation can be retried.
    let (status, _) = admin(
        &rt,
        OPERATOR,
        Method::POST,
        &format!("/brokers/slow-broker/operations/{again}/retry"),
        None,
    )
    .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // A long operation between polls is stuck, not running: it fails without force (a poll in
    // flight at that moment is running, so try again a moment later).
    let stuck = provision_slow(&rt, "stuck", json!({ "polls": 1000000 })).await;
    let fail = format!("/brokers/slow-broker/operations/{stuck}/fail");
    let mut answer = admin(&rt, TEAM_A, Method::POST, &fail, None).await;
    for _ in 0..40 {
        if answer.0 != StatusCode::CONFLICT {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        answer = admin(&rt, TEAM_A, Method::POST, &fail, None).await;
    }
    assert_eq!(answer.0, StatusCode::OK, "{}", answer.1);
    assert_eq!(
        last_operation(&rt, "stuck", &stuck).await["state"],
        "failed"
    );
    // The CLI lists it among the failed operations; the operator purges its instance.
    let listed = cli(&rt, OPERATOR, &["operations"]).await;
    let ops = listed["operations"].as_array().unwrap();
    assert!(
        ops.iter()
            .any(|op| op["id"] == stuck.as_str() && op["state"] == "failed"),
        "{listed}"
    );
    let purged = cli(
        &rt,
        OPERATOR,
        &["purge", "slow-broker", "--instance", "stuck"],
    )
    .await;
    assert_eq!(purged["purged"]["instances"], 1);
    let gone = rt
        .osb(
            Method::GET,
            "slow-broker",
            "/v2/service_instances/stuck",
            None,
        )
        .await;
    assert_eq!(gone.status, StatusCode::NOT_FOUND);

    // A binding purged from the state is gone for the platform too.
    let small = json!({ "service_id": FILE_SERVICE, "plan_id": FILE_SMALL });
    let a = rt
        .osb(
            Method::PUT,
            "file-broker",
            "/v2/service_instances/i1",
            Some(small.clone()),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let binding = "/v2/service_instances/i1/service_bindings/b1";
    let a = rt
        .osb(Method::PUT, "file-broker", binding, Some(small))
        .await;
    assert_eq!(a.status, StatusCode::CREATED);
    let (status, purged) = admin(
        &rt,
        OPERATOR,
        Method::POST,
        "/brokers/file-broker/bindings/b1/purge",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(purged["purged"]["bindings"], 1);
    let a = rt.osb(Method::GET, "file-broker", binding, None).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND);
    // A tenant cannot repair the operator's brokers; unknown ids are 404.
    let (status, _) = admin(
        &rt,
        TEAM_A,
        Method::POST,
        "/brokers/file-broker/instances/i1/purge",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    let (status, _) = admin(
        &rt,
        OPERATOR,
        Method::POST,
        "/brokers/file-broker/operations/nope/fail",
        None,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND);

    // Every repair is in the trail, forced ones marked.
    let (_, audit) = admin(&rt, OPERATOR, Method::GET, "/audit", None).await;
    let audit = entries(&audit);
    let fails: Vec<&Value> = audit
        .iter()
        .filter(|e| e["action"] == "fail-operation")
        .collect();
    assert_eq!(fails.len(), 2, "{audit:?}");
    assert!(fails.iter().any(|e| e["actor"] == "tenant:team-a"));
    assert!(fails
        .iter()
        .any(|e| e["detail"].as_str().unwrap().contains("forced")));
    assert!(find(&audit, "retry-operation", "slow-broker").is_some());
    assert!(find(&audit, "purge-instance", "slow-broker").is_some());
    assert!(find(&audit, "purge-binding", "file-broker").is_some());
}

/// chromedriver serving WebDriver on a free port, stopped when dropped.
struct Driver {
    child: std::process::Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts Debian's chromedriver, or says why the browser test cannot run.
async fn chromedriver() -> Result<Driver, String> {
    let binary = std::path::Path::new("/usr/bin/chromedriver");
    if !binary.exists() || !std::path::Path::new("/usr/bin/chromium").exists() {
        return Err("no /usr/bin/chromium and /usr/bin/chromedriver (Debian packages chromium and chromium-driver; .ci/run installs them)".into());
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = std::process::Command::new(binary)
        .arg(format!("--port={port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .map_err(|e| format!("chromedriver does not start: {e}"))?;
    let driver = Driver {
        child,
        url: format!("http://127.0.0.1:{port}"),
    };
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .is_ok()
        {
            return Ok(driver);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err("chromedriver did not listen".into())
}

async fn browser(driver: &Driver) -> fantoccini::Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".into(),
        json!({
            "binary": "/usr/bin/chromium",
            "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1400,1000"],
        }),
    );
    let connector = hyper_util::client::legacy::connect::HttpConnector::new();
    fantoccini::ClientBuilder::new(connector)
        .capabilities(capabilities)
        .connect(&driver.url)
        .await
        .expect("a Chromium session")
}

async fn sign_in(page: &fantoccini::Client, base: &str, token: &str) {
    use fantoccini::Locator;
    page.goto(&format!("{base}/admin/ui")).await.unwrap();
    // Not signed in: the page sends the browser to the sign-in form.
    assert!(page
        .current_url()
        .await
        .unwrap()
        .path()
        .ends_with("/admin/ui/login"));
    page.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(token)
        .await
        .unwrap();
    page.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
}

/// The text of the element `css`, waiting (up to 10 s) for a page being loaded to show it.
async fn text_of(page: &fantoccini::Client, css: &str) -> String {
    page.wait()
        .at_most(Duration::from_secs(10))
        .for_element(fantoccini::Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css} never showed: {e}"))
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn the_operator_page_signs_in_shows_brokers_and_repairs_in_a_real_browser() {
    use fantoccini::Locator;
    let driver = match chromedriver().await {
        Ok(driver) => driver,
        Err(why) if std::env::var("BROKERBOX_TEST_BROWSER").as_deref() == Ok("required") => {
            panic!("BROKERBOX_TEST_BROWSER=required, but {why}")
        }
        Err(why) => {
            eprintln!("skipped: {why}");
            return;
        }
    };
    let rt = runtime().await;
    let base = format!("http://{}", rt.server().addr);
    let stuck = provision_slow(&rt, "stuck-ui", json!({ "polls": 1000000 })).await;
    let page = browser(&driver).await;

    // A wrong token is refused on the sign-in page.
    sign_in(&page, &base, "not-a-token").await;
    assert!(text_of(&page, "#error")
        .await
        .contains("not an operator or tenant token"));

    // The operator sees both brokers, their limits and grants, and the stuck operation.
    page.find(Locator::Id("token"))
        .await
        .unwrap()
        .send_keys(OPERATOR)
        .await
        .unwrap();
    page.find(Locator::Id("sign-in"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    assert_eq!(text_of(&page, "#who").await, "operator");
    let brokers = text_of(&page, "#brokers").await;
    assert!(
        brokers.contains("file-broker") && brokers.contains("slow-broker"),
        "{brokers}"
    );
    assert!(brokers.contains("team-a"));
    assert!(brokers.contains("files"), "file-broker's grant: {brokers}");
    let row = format!("tr[data-operation=\"{stuck}\"]");
    assert!(text_of(&page, &row).await.contains("in progress"));

    // Mark it failed (forced: a poll may be in flight), through the page's form.
    let form = format!("{row} form");
    page.find(Locator::Css(&format!("{form} input[name=force]")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    page.find(Locator::Css(&format!("{form} button.fail")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let notice = text_of(&page, "#notice").await;
    assert!(
        notice.contains(&stuck) && notice.contains("failed"),
        "{notice}"
    );
    assert!(text_of(&page, &row).await.contains("failed"));
    assert_eq!(
        last_operation(&rt, "stuck-ui", &stuck).await["state"],
        "failed"
    );
    let audit = text_of(&page, "#audit").await;
    assert!(
        audit.contains("fail-operation") && audit.contains("operator"),
        "{audit}"
    );

    // Save what the operator saw.
    let png = page.screenshot().await.unwrap();
    let shot = repo_root().join("target/operator-page.png");
    std::fs::write(&shot, &png).unwrap();
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
    assert!(
        png.len() > 20_000,
        "a page with content, not a blank: {} bytes",
        png.len()
    );

    // Signed out, then in as team-a: only its broker.
    page.find(Locator::Css("header form button"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    sign_in(&page, &base, TEAM_A).await;
    assert_eq!(text_of(&page, "#who").await, "tenant:team-a");
    let brokers = text_of(&page, "#brokers").await;
    assert!(
        brokers.contains("slow-broker") && !brokers.contains("file-broker"),
        "{brokers}"
    );
    page.close().await.unwrap();

    // The session cookie is HttpOnly and SameSite=Strict; a form without the session's CSRF
    // token is refused.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = http
        .post(format!("{base}/admin/ui/login"))
        .form(&[("token", OPERATOR)])
        .send()
        .await
        .unwrap();
    let cookie = login.headers()["set-cookie"].to_str().unwrap().to_string();
    assert!(
        cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"),
        "{cookie}"
    );
    let session = cookie.split(';').next().unwrap().to_string();
    assert_eq!(login.status(), StatusCode::SEE_OTHER);
    let forged = http
        .post(format!("{base}/admin/ui/purge"))
        .header("cookie", session)
        .form(&[
            ("csrf", "guessed"),
            ("broker", "slow-broker"),
            ("instance", "stuck-ui"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), StatusCode::FORBIDDEN);
    // The forged purge did nothing: the instance is still there to purge.
    let purge = "/brokers/slow-broker/instances/stuck-ui/purge";
    let (status, purged) = admin(&rt, OPERATOR, Method::POST, purge, None).await;
    assert_eq!(status, StatusCode::OK, "{purged}");
    assert_eq!(purged["purged"]["instances"], 1);
}
