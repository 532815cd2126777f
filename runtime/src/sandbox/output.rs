//! A guest's stdout and stderr: the first bytes are kept for the logs, the rest only counted,
//! and writing past the cap ends the call (a trap, not a silently failing write), so the host
//! holds at most the logged bytes per call whatever the guest writes.

use bytes::Bytes;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError, StreamResult};

/// One call's stdout and stderr together.
#[derive(Clone)]
pub struct GuestOutput {
    state: Arc<Mutex<State>>,
}

struct State {
    kept: Vec<u8>,
    keep: usize,
    written: usize,
    cap: usize,
}

impl GuestOutput {
    /// Output that keeps the first `keep` bytes and ends the call past `cap` bytes.
    pub fn new(keep: usize, cap: usize) -> Self {
        GuestOutput {
            state: Arc::new(Mutex::new(State {
                kept: Vec::new(),
                keep,
                written: 0,
                cap,
            })),
        }
    }

    /// Forgets what was written, for the next call of a reused instance.
    pub fn reset(&self) {
        let mut state = self.lock();
        state.kept.clear();
        state.written = 0;
    }

    /// The bytes kept so far.
    pub fn kept(&self) -> Vec<u8> {
        self.lock().kept.clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes `bytes`, or refuses them all when they would pass the cap.
    fn take(&self, bytes: &[u8]) -> Result<(), String> {
        let mut state = self.lock();
        if state.written.saturating_add(bytes.len()) > state.cap {
            state.written = state.cap;
            return Err(format!(
                "the guest wrote more than {} bytes to stdout/stderr",
                state.cap
            ));
        }
        state.written += bytes.len();
        let room = state.keep.saturating_sub(state.kept.len());
        let kept = bytes.len().min(room);
        state.kept.extend_from_slice(&bytes[..kept]);
        Ok(())
    }
}

impl OutputStream for GuestOutput {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.take(&bytes).map_err(|e| StreamError::trap(&e))
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        let state = self.lock();
        if state.written >= state.cap {
            return Err(StreamError::trap(&format!(
                "the guest wrote more than {} bytes to stdout/stderr",
                state.cap
            )));
        }
        // Small chunks: a guest's one write never makes the host copy much at once.
        Ok((state.cap - state.written).min(64 * 1024))
    }
}

#[async_trait::async_trait]
impl Pollable for GuestOutput {
    async fn ready(&mut self) {}
}

impl tokio::io::AsyncWrite for GuestOutput {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Poll::Ready(
            self.take(buf)
                .map(|()| buf.len())
                .map_err(std::io::Error::other),
        )
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl IsTerminal for GuestOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for GuestOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_refuses_past_the_cap() {
        let mut out = GuestOutput::new(4, 10);
        out.write(Bytes::from_static(b"hello")).unwrap();
        assert_eq!(out.kept(), b"hell");
        assert_eq!(out.check_write().unwrap(), 5);
        assert!(matches!(
            out.write(Bytes::from_static(b"world!")),
            Err(StreamError::Trap(_))
        ));
        assert!(matches!(out.check_write(), Err(StreamError::Trap(_))));
    }
}
