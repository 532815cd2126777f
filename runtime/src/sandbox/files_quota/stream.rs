//! Directory listings and write streams through the quota.

use super::view::*;
use super::*;
use std::sync::Arc;

use bytes::Bytes;
use wasmtime::component::Resource;
use wasmtime_wasi::p2::bindings::filesystem::types::{self, HostDirectoryEntryStream};
use wasmtime_wasi::p2::{DynOutputStream, FsResult, OutputStream, Pollable, StreamResult};

impl HostDirectoryEntryStream for QuotaFsView<'_> {
    async fn read_directory_entry(
        &mut self,
        stream: Resource<types::DirectoryEntryStream>,
    ) -> FsResult<Option<types::DirectoryEntry>> {
        HostDirectoryEntryStream::read_directory_entry(&mut self.fs, stream).await
    }

    fn drop(&mut self, stream: Resource<types::DirectoryEntryStream>) -> wasmtime::Result<()> {
        HostDirectoryEntryStream::drop(&mut self.fs, stream)
    }
}

/// An output stream on a file that reserves its growth in the quota before each write.
///
/// A positional stream (`write-via-stream`, what a guest's `write` on a file uses) writes on
/// the calling thread with one `pwrite`, as the runtime's other file calls do
/// (`allow_blocking_current_thread`): wasmtime-wasi's stream would hand each write to tokio's
/// blocking pool and back, two thread hand-offs for a few bytes. Appends go through
/// wasmtime-wasi's stream (it appends atomically).
pub(super) struct QuotaStream {
    /// wasmtime-wasi's stream: does the appending; answers `check-write` for both.
    pub(super) inner: DynOutputStream,
    /// Whether this stream writes at `pos` (not appending).
    pub(super) positional: bool,
    /// The file, to notice when it loses its last name.
    pub(super) file: Arc<std::fs::File>,
    /// Where the next write lands.
    pub(super) pos: u64,
    /// The end of the file as far as this stream knows: bytes before it are already counted.
    pub(super) end: u64,
    /// The broker's quota.
    pub(super) quota: Arc<FilesQuota>,
}

impl QuotaStream {
    /// Reserves what writing `len` bytes at `pos` adds to the file; returns the reservation.
    fn reserve(&self, len: u64) -> StreamResult<u64> {
        let growth = self.pos.saturating_add(len).saturating_sub(self.end);
        if growth > 0 && is_unlinked(&self.file) {
            return Err(FilesQuota::unlinked());
        }
        self.quota
            .reserve_bytes(growth)
            .map_err(|_| self.quota.full())?;
        Ok(growth)
    }

    /// Writes `bytes` at `pos` on this thread. On an error part of them may be written: they
    /// stay counted either way (the re-measure corrects the count).
    fn write_here(&mut self, bytes: &[u8]) -> StreamResult<()> {
        use std::os::unix::fs::FileExt;
        let written = self.file.write_all_at(bytes, self.pos);
        self.advance(bytes.len() as u64);
        written.map_err(|e| wasmtime_wasi::p2::StreamError::LastOperationFailed(e.into()))
    }

    fn advance(&mut self, len: u64) {
        self.pos = self.pos.saturating_add(len);
        self.end = self.end.max(self.pos);
    }
}

#[async_trait::async_trait]
impl OutputStream for QuotaStream {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        let len = bytes.len() as u64;
        let growth = self.reserve(len)?;
        if self.positional {
            return self.write_here(&bytes);
        }
        match self.inner.write(bytes) {
            Ok(()) => {
                // The write itself finishes in the background; if it fails the bytes stay
                // counted (too many, which the re-measure corrects).
                self.advance(len);
                Ok(())
            }
            Err(err) => {
                // Refused before anything was written.
                self.quota.release_bytes(growth);
                Err(err)
            }
        }
    }

    async fn blocking_write_and_flush(&mut self, bytes: Bytes) -> StreamResult<()> {
        let len = bytes.len() as u64;
        self.reserve(len)?;
        if self.positional {
            return self.write_here(&bytes);
        }
        // On an error part of the bytes may be written: keep them counted either way.
        let result = self.inner.blocking_write_and_flush(bytes).await;
        self.advance(len);
        result
    }

    fn flush(&mut self) -> StreamResult<()> {
        if self.positional {
            // Nothing is buffered: every write is made when it is asked for.
            return Ok(());
        }
        self.inner.flush()
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        self.inner.check_write()
    }

    async fn cancel(&mut self) {
        self.inner.cancel().await;
    }
}

#[async_trait::async_trait]
impl Pollable for QuotaStream {
    async fn ready(&mut self) {
        if !self.positional {
            self.inner.ready().await;
        }
    }
}
