//! `brokerbox check` against the example brokers, over real HTTP: it must find 0 failures.

use brokerbox_tests::{guests, manifest, TestRuntime};

#[tokio::test]
async fn check_reports_no_failure_for_the_examples() {
    let rt = TestRuntime::examples().await.unwrap();
    for name in ["file-broker", "slow-broker"] {
        let report = brokerbox::check::run(&rt.url(name), name, &format!("{name}-secret"))
            .await
            .unwrap();
        let rendered = report.render();
        assert_eq!(report.failed(), 0, "{name}:\n{rendered}");
        assert!(
            report.passed() >= 25,
            "{name} ran too few cases:\n{rendered}"
        );
        assert!(rendered.ends_with(&format!("{} passed, 0 failed\n", report.passed())));
    }
}

#[tokio::test]
async fn check_passes_on_a_broker_with_schemas_maintenance_info_and_required_apps() {
    let rt = TestRuntime::start(&[("rules", guests::RULES_BROKER, &manifest("rules", ""))])
        .await
        .unwrap();
    let report = brokerbox::check::run(&rt.url("rules"), "rules", "rules-secret")
        .await
        .unwrap();
    assert_eq!(report.failed(), 0, "{}", report.render());
    let names: Vec<_> = report.cases.iter().map(|c| c.name.as_str()).collect();
    assert!(names.contains(&"update: plan change on a plan that is not plan_updateable → 422"));
    assert!(names
        .contains(&"provision: foreign maintenance_info.version → 422 MaintenanceInfoConflict"));
}

#[tokio::test]
async fn check_finds_a_broken_broker() {
    // A "broker" that answers 200 with an empty object to everything.
    let app = axum_like_server().await;
    let report = brokerbox::check::run(&app, "u", "p").await;
    assert!(report.is_err() || report.unwrap().failed() > 0);
}

/// Serves `{}` with 200 to every request on a loopback port; returns its URL.
async fn axum_like_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        loop {
            let Ok((mut socket, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = socket.read(&mut buf).await {
                    if n == 0 {
                        return;
                    }
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                    if socket.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}
