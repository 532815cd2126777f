//! The `brokerbox` binary: everything happens in [`brokerbox::cli::run`].

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    brokerbox::cli::run().await
}
