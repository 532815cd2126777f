//! The quota's view of wasmtime-wasi's filesystem: the linker hook, and the checks that
//! reserve growth before a call and give it back when the call fails.

use super::stream::QuotaStream;
use super::*;
use std::sync::Arc;

use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, DescriptorStat, ErrorCode, HostDescriptor,
};
use wasmtime_wasi::p2::{DynOutputStream, FsError, FsResult};

/// A second handle on a descriptor the caller holds, for the inner `stat` calls.
pub(super) fn borrow(fd: &Resource<Descriptor>) -> Resource<Descriptor> {
    Resource::new_borrow(fd.rep())
}

/// The bytes a stat says a name holds: a regular file's length, nothing for anything else.
pub(super) fn regular_size(stat: &DescriptorStat) -> u64 {
    if matches!(stat.type_, types::DescriptorType::RegularFile) {
        stat.size
    } else {
        0
    }
}

pub(super) fn insufficient_space() -> FsError {
    FsError::from(ErrorCode::InsufficientSpace)
}

/// The `HasData` marker for [`add_to_linker`]: its data is a [`QuotaFsView`].
pub struct QuotaFs;

impl wasmtime::component::HasData for QuotaFs {
    type Data<'a> = QuotaFsView<'a>;
}

/// wasmtime-wasi's filesystem state for one call, with the broker's quota if it has one.
pub struct QuotaFsView<'a> {
    /// wasmtime-wasi's own view, which does the actual work.
    pub fs: WasiFilesystemCtxView<'a>,
    /// The quota to enforce; `None` passes every call straight through.
    pub quota: Option<Arc<FilesQuota>>,
}

/// Adds `wasi:filesystem/types` with the quota checks to `linker`.
///
/// Call it after `wasmtime_wasi::p2::add_to_linker_async`, with `linker.allow_shadowing(true)`,
/// so that these functions replace wasmtime-wasi's.
///
/// # Errors
/// When the linker refuses a definition.
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut wasmtime::component::Linker<T>,
    get: fn(&mut T) -> QuotaFsView<'_>,
) -> wasmtime::Result<()> {
    types::add_to_linker::<T, QuotaFs>(linker, get)
}

impl QuotaFsView<'_> {
    /// The inner `stat` of a descriptor the caller still holds.
    pub(super) async fn stat_fd(&mut self, fd: &Resource<Descriptor>) -> FsResult<DescriptorStat> {
        HostDescriptor::stat(&mut self.fs, borrow(fd)).await
    }

    /// The inner `stat-at`, `None` when it fails (the name does not exist, most likely; the
    /// operation that follows reports any other problem itself).
    pub(super) async fn probe(
        &mut self,
        fd: &Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: &str,
    ) -> Option<DescriptorStat> {
        HostDescriptor::stat_at(&mut self.fs, borrow(fd), path_flags, path.to_owned())
            .await
            .ok()
    }

    /// Replaces the output stream the inner call just pushed with a [`QuotaStream`] around it.
    /// `offset` is where it writes, `None` for appending.
    ///
    /// The inner implementation pushes file streams as plain table entries, not as children of
    /// the descriptor, so the fresh entry can be taken out and the wrapper pushed the same way.
    pub(super) fn wrap_stream(
        &mut self,
        fd: &Resource<Descriptor>,
        stream: Resource<DynOutputStream>,
        offset: Option<u64>,
        quota: Arc<FilesQuota>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let file = match self.fs.table.get(fd)? {
            Descriptor::File(f) => Arc::clone(&f.file),
            // The inner call refuses directories, so this is not reached.
            Descriptor::Dir(_) => return Ok(stream),
        };
        let inner = self.fs.table.delete(stream)?;
        // A stream constructor is not async: read the size with one `fstat` on this thread.
        let size = file.metadata()?.len();
        let wrapper = QuotaStream {
            inner,
            positional: offset.is_some(),
            file,
            pos: offset.unwrap_or(size),
            end: size,
            quota,
        };
        Ok(self.fs.table.push(Box::new(wrapper) as DynOutputStream)?)
    }
}

/// Runs `create`, which adds one entry, with the entry reserved before it runs and given back
/// when it fails.
pub(super) async fn adding_entry<R>(
    quota: Option<Arc<FilesQuota>>,
    create: impl std::future::Future<Output = FsResult<R>>,
) -> FsResult<R> {
    if let Some(quota) = &quota {
        quota.reserve_file()?;
    }
    let result = create.await;
    if let (Err(_), Some(quota)) = (&result, &quota) {
        quota.release_file();
    }
    result
}
