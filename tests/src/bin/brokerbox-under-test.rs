//! The `brokerbox` command, built inside the test crate so process-level tests (SIGKILL,
//! SIGTERM, several replicas) find it through `CARGO_BIN_EXE_brokerbox-under-test`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    brokerbox::cli::run().await
}
