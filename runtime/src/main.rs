//! The `brokerbox` binary: everything happens in [`brokerbox::cli::run`].

/// mimalloc instead of the system allocator: a request allocates and frees many small buffers
/// across threads (HTTP, JSON, guest calls), where glibc's malloc took ~9% of the CPU.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    brokerbox::cli::run().await
}
