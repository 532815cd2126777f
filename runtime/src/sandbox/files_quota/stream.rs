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
pub(super) struct QuotaStream {
    /// wasmtime-wasi's stream, which does the writing.
    pub(super) inner: DynOutputStream,
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
        // On an error part of the bytes may be written: keep them counted either way.
        let result = self.inner.blocking_write_and_flush(bytes).await;
        self.advance(len);
        result
    }

    fn flush(&mut self) -> StreamResult<()> {
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
        self.inner.ready().await;
    }
}
