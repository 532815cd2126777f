//! Serving over TLS: the OSB lifecycle over HTTPS (HTTP/1.1 and HTTP/2), a plain listener
//! beside it for loopback, and a replaced certificate served without a restart.

use brokerbox_tests::{guests, repo_root, TestRuntime};
use reqwest::{Method, StatusCode};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const FILE_SERVICE: &str = "5f1b2ed2-6cf4-4f5c-9f43-8c4f0f9a8a01";
const FILE_SMALL: &str = "1d3e7c0a-6c51-4cfa-9b8f-2c0e51a0b101";

/// A new self-signed certificate for 127.0.0.1 and localhost, written to `dir`; its PEM.
fn new_certificate(dir: &Path) -> (PathBuf, PathBuf, String) {
    let made =
        rcgen::generate_simple_self_signed(vec!["127.0.0.1".into(), "localhost".into()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    // Written beside, then moved in place: the runtime never reads half a file.
    let pem = made.cert.pem();
    for (path, text) in [(&key, made.key_pair.serialize_pem()), (&cert, pem.clone())] {
        let staged = path.with_extension("new");
        std::fs::write(&staged, text).unwrap();
        std::fs::rename(&staged, path).unwrap();
    }
    (cert, key, pem)
}

/// A client that trusts only `pem`.
fn trusting(pem: &str, http1_only: bool) -> reqwest::Client {
    let builder = reqwest::Client::builder()
        .use_rustls_tls()
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(pem.as_bytes()).unwrap())
        .timeout(Duration::from_secs(30));
    let builder = if http1_only {
        builder.http1_only()
    } else {
        builder
    };
    builder.build().unwrap()
}

#[tokio::test]
async fn the_osb_lifecycle_runs_over_https_and_a_replaced_certificate_is_served_without_restart() {
    let certs = tempfile::tempdir().unwrap();
    let (cert, key, first) = new_certificate(certs.path());
    let plain = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let plain_addr = plain.local_addr().unwrap();
    drop(plain);
    let manifest =
        std::fs::read_to_string(repo_root().join("examples/file-broker/file-broker.toml")).unwrap();
    let (c, k) = (cert.clone(), key.clone());
    let rt = TestRuntime::start_with(
        &[("file-broker", guests::FILE_BROKER, &manifest)],
        move |config| {
            config.tls_cert = Some(c.clone());
            config.tls_key = Some(k.clone());
            config.plain_listen = Some(plain_addr);
        },
    )
    .await
    .unwrap();
    let base = format!(
        "https://127.0.0.1:{}/brokers/file-broker",
        rt.server().addr.port()
    );

    // The lifecycle over HTTPS, on HTTP/2 (negotiated by ALPN).
    let client = brokerbox::client::Client::with_http(
        trusting(&first, false),
        &base,
        "file-broker",
        "file-broker-secret",
    );
    let instance = "/v2/service_instances/tls-1";
    let binding = format!("{instance}/service_bindings/tls-b");
    let ids = json!({ "service_id": FILE_SERVICE, "plan_id": FILE_SMALL,
        "organization_guid": "o", "space_guid": "s" });
    let query = format!("?service_id={FILE_SERVICE}&plan_id={FILE_SMALL}");
    for (method, path, body, expected) in [
        (
            Method::PUT,
            instance.to_string(),
            Some(&ids),
            StatusCode::CREATED,
        ),
        (
            Method::PUT,
            binding.clone(),
            Some(&ids),
            StatusCode::CREATED,
        ),
        (
            Method::DELETE,
            format!("{binding}{query}"),
            None,
            StatusCode::OK,
        ),
        (
            Method::DELETE,
            format!("{instance}{query}"),
            None,
            StatusCode::OK,
        ),
    ] {
        let answer = client.call(method.clone(), &path, body).await.unwrap();
        assert_eq!(
            answer.status, expected,
            "{method} {path}: {:?}",
            answer.body
        );
    }
    for (http1_only, version) in [
        (false, reqwest::Version::HTTP_2),
        (true, reqwest::Version::HTTP_11),
    ] {
        let catalog = trusting(&first, http1_only)
            .get(format!("{base}/v2/catalog"))
            .basic_auth("file-broker", Some("file-broker-secret"))
            .header("X-Broker-API-Version", "2.17")
            .send()
            .await
            .unwrap();
        assert_eq!(catalog.status(), StatusCode::OK);
        assert_eq!(catalog.version(), version);
    }
    // Plain HTTP stays available on the loopback listener, and only there.
    let plain = reqwest::Client::new()
        .get(format!("http://{plain_addr}/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::OK);
    let plain_on_tls = reqwest::Client::new()
        .get(format!("http://{}/healthz", rt.server().addr))
        .send()
        .await;
    assert!(
        plain_on_tls.is_err(),
        "the TLS listener does not speak plain HTTP"
    );

    // A new certificate in the files: new connections get it, with no restart.
    let (_, _, second) = new_certificate(certs.path());
    let started = Instant::now();
    loop {
        let fresh = trusting(&second, true)
            .get(format!("{base}/v2/catalog"))
            .basic_auth("file-broker", Some("file-broker-secret"))
            .header("X-Broker-API-Version", "2.17")
            .send()
            .await;
        if let Ok(answer) = fresh {
            assert_eq!(answer.status(), StatusCode::OK);
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "the new certificate was not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let old = trusting(&first, true)
        .get(format!("{base}/v2/catalog"))
        .send()
        .await;
    assert!(old.is_err(), "the old certificate is no longer served");
}
