//! A host-enforced quota on a guest's granted files directory.
//!
//! [`FilesQuota`] counts two things under the directory: the *apparent* size of its regular files
//! (the sum of their lengths, what `ls -l` shows, not the blocks they occupy; a file with several
//! hard links counts once) and the number of its entries (files, directories and symlinks alike,
//! each name counting once). The first reservation measures the directory from disk; after that
//! the count is kept up to date by the filesystem calls themselves.
//!
//! [`QuotaFsView`] implements `wasi:filesystem/types` on top of wasmtime-wasi's own
//! implementation and adds the checks: every call that may grow a file or add an entry *reserves*
//! the growth before it touches the disk, so concurrent calls of one broker cannot together
//! overshoot the cap, and gives the reservation back when the call fails. Calls that shrink a file
//! or remove an entry release what they freed once they succeed.
//!
//! Some changes are not tracked exactly: a rename over an existing file, writes that overwrite
//! bytes another descriptor already added, partial failures. Every such case errs on the side of
//! counting *too much*, and when a reservation would pass the cap the directory is measured again
//! from disk (holding the lock, with a bounded walk), which corrects the drift before anything is
//! refused (at most once per [`REMEASURE_EVERY`], so a guest writing at its quota in a loop
//! cannot make the host walk the directory on every write). That re-measure also forgets reservations whose bytes are not on disk yet, so calls
//! racing it may overshoot by what they had in flight at that moment. Growth of a file that no
//! longer has a name (unlinked while still open) is refused outright: the re-measure cannot see
//! it, so it could otherwise grow without bound.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::{Descriptor, WasiFilesystemCtxView};
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, DescriptorStat, ErrorCode, Filesize, HostDescriptor, HostDirectoryEntryStream,
};
use wasmtime_wasi::p2::{
    DynInputStream, DynOutputStream, FsError, FsResult, OutputStream, Pollable, StreamError,
    StreamResult,
};

/// Default quota of a broker's files directory: the apparent size of its files, in bytes.
pub const DEFAULT_QUOTA_BYTES: u64 = 64 * 1024 * 1024;
/// Default quota of a broker's files directory: its files, directories and links.
pub const DEFAULT_QUOTA_COUNT: u64 = 10_000;

/// Shortest time between two measures of a directory from disk: a guest writing at its quota
/// in a loop makes the host walk the directory at most this often, however many writes it
/// tries (a walk may visit twice `files_quota_count` entries).
pub const REMEASURE_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

/// What the directory holds, as far as the quota knows.
#[derive(Debug, Clone, Copy, Default)]
struct Usage {
    /// Apparent size of the regular files, in bytes.
    bytes: u64,
    /// Number of entries (files, directories, symlinks).
    files: u64,
    /// When the directory was last measured from disk.
    measured: Option<std::time::Instant>,
}

fn bytes_of(usage: &mut Usage) -> &mut u64 {
    &mut usage.bytes
}

fn files_of(usage: &mut Usage) -> &mut u64 {
    &mut usage.files
}

/// The quota on one broker's files directory, shared (in an [`Arc`]) by all its calls.
#[derive(Debug)]
pub struct FilesQuota {
    dir: PathBuf,
    max_bytes: u64,
    max_files: u64,
    /// `None` until the directory is first measured.
    usage: Mutex<Option<Usage>>,
    /// Shortest time between two measures ([`REMEASURE_EVERY`]).
    remeasure_every: std::time::Duration,
}

impl FilesQuota {
    /// A quota of `max_bytes` bytes and `max_files` entries on `dir`. Nothing is read from disk
    /// until the first reservation.
    pub fn new(dir: PathBuf, max_bytes: u64, max_files: u64) -> Self {
        FilesQuota {
            dir,
            max_bytes,
            max_files,
            usage: Mutex::new(None),
            remeasure_every: REMEASURE_EVERY,
        }
    }

    /// Whether this quota counts `dir` with these caps (a new version of a broker with the same
    /// grant keeps counting on the same quota).
    pub fn is_for(&self, dir: &std::path::Path, max_bytes: u64, max_files: u64) -> bool {
        self.dir == dir && self.max_bytes == max_bytes && self.max_files == max_files
    }

    fn lock(&self) -> MutexGuard<'_, Option<Usage>> {
        // The guarded value is two counters that are always left consistent: a panic elsewhere
        // while holding the lock cannot corrupt them, so a poisoned lock is still usable.
        self.usage.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Walks the directory (not following symlinks) and counts its entries and the lengths of its
    /// regular files. Stops after `max_files * 2 + 100` entries so that a directory already far
    /// over its cap costs a bounded walk; what was not visited is not counted.
    fn measure(&self) -> Usage {
        let limit = self.max_files.saturating_mul(2).saturating_add(100);
        let mut usage = Usage {
            measured: Some(std::time::Instant::now()),
            ..Usage::default()
        };
        // Files with more than one hard link, so that their content is counted once.
        let mut linked = std::collections::HashSet::new();
        let mut pending = vec![self.dir.clone()];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                if usage.files >= limit {
                    return usage;
                }
                usage.files += 1;
                let path = entry.path();
                let Ok(meta) = std::fs::symlink_metadata(&path) else {
                    continue;
                };
                if meta.is_dir() {
                    pending.push(path);
                } else if meta.is_file() {
                    let first_link = match inode_key(&meta) {
                        Some(key) => linked.insert(key),
                        None => true,
                    };
                    if first_link {
                        usage.bytes = usage.bytes.saturating_add(meta.len());
                    }
                }
            }
        }
        usage
    }

    /// Reserves `n` more of the counter picked by `field`, capped at `cap`.
    fn reserve(
        &self,
        n: u64,
        field: fn(&mut Usage) -> &mut u64,
        cap: u64,
    ) -> Result<(), ErrorCode> {
        if n == 0 {
            return Ok(());
        }
        let mut guard = self.lock();
        let usage = guard.get_or_insert_with(|| self.measure());
        if field(usage).saturating_add(n) > cap {
            // The count drifts upwards (renames over files, failed writes): check the disk
            // before refusing, unless it was checked a moment ago.
            let recent = usage
                .measured
                .is_some_and(|at| at.elapsed() < self.remeasure_every);
            if !recent {
                *usage = self.measure();
            }
            if field(usage).saturating_add(n) > cap {
                return Err(ErrorCode::InsufficientSpace);
            }
        }
        let count = field(usage);
        *count = count.saturating_add(n);
        Ok(())
    }

    /// Gives back `n` of the counter picked by `field`.
    fn release(&self, n: u64, field: fn(&mut Usage) -> &mut u64) {
        if n == 0 {
            return;
        }
        // Not measured yet: the first measure will read the disk as it is.
        if let Some(usage) = self.lock().as_mut() {
            let count = field(usage);
            *count = count.saturating_sub(n);
        }
    }

    /// Reserves `n` more bytes before they are written.
    ///
    /// # Errors
    /// [`ErrorCode::InsufficientSpace`] when the directory, measured again from disk, has no room
    /// for them.
    pub fn reserve_bytes(&self, n: u64) -> Result<(), ErrorCode> {
        self.reserve(n, bytes_of, self.max_bytes)
    }

    /// Gives back `n` bytes that were freed, or reserved but not written.
    pub fn release_bytes(&self, n: u64) {
        self.release(n, bytes_of);
    }

    /// Reserves one more entry before it is created.
    ///
    /// # Errors
    /// [`ErrorCode::InsufficientSpace`] when the directory, counted again from disk, already
    /// holds `max_files` entries.
    pub fn reserve_file(&self) -> Result<(), ErrorCode> {
        self.reserve(1, files_of, self.max_files)
    }

    /// Gives back one entry that was removed, or reserved but not created.
    pub fn release_file(&self) {
        self.release(1, files_of);
    }

    /// The bytes and entries the quota counts now, measuring the directory if it never did.
    pub fn usage(&self) -> (u64, u64) {
        let mut guard = self.lock();
        let usage = *guard.get_or_insert_with(|| self.measure());
        (usage.bytes, usage.files)
    }

    /// The stream error for a write the quota refuses.
    fn full(&self) -> StreamError {
        StreamError::LastOperationFailed(wasmtime::format_err!(
            "the broker's files quota of {} bytes is full",
            self.max_bytes
        ))
    }

    /// The stream error for growing a file that no longer has a name.
    fn unlinked() -> StreamError {
        StreamError::LastOperationFailed(wasmtime::format_err!(
            "the broker's files quota does not let a deleted file grow"
        ))
    }
}

/// Identifies a file with several hard links, so that [`FilesQuota::measure`] counts it once.
#[cfg(unix)]
fn inode_key(meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    if meta.nlink() > 1 {
        Some((meta.dev(), meta.ino()))
    } else {
        None
    }
}

#[cfg(not(unix))]
fn inode_key(_meta: &std::fs::Metadata) -> Option<(u64, u64)> {
    None
}

/// Whether an open file no longer has any name (unlinked, or renamed over) and so is invisible
/// to [`FilesQuota::measure`].
#[cfg(unix)]
fn is_unlinked(file: &std::fs::File) -> bool {
    use std::os::unix::fs::MetadataExt;
    file.metadata().is_ok_and(|meta| meta.nlink() == 0)
}

#[cfg(not(unix))]
fn is_unlinked(_file: &std::fs::File) -> bool {
    false
}

/// A second handle on a descriptor the caller holds, for the inner `stat` calls.
fn borrow(fd: &Resource<Descriptor>) -> Resource<Descriptor> {
    Resource::new_borrow(fd.rep())
}

/// The bytes a stat says a name holds: a regular file's length, nothing for anything else.
fn regular_size(stat: &DescriptorStat) -> u64 {
    if matches!(stat.type_, types::DescriptorType::RegularFile) {
        stat.size
    } else {
        0
    }
}

fn insufficient_space() -> FsError {
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
    async fn stat_fd(&mut self, fd: &Resource<Descriptor>) -> FsResult<DescriptorStat> {
        HostDescriptor::stat(&mut self.fs, borrow(fd)).await
    }

    /// The inner `stat-at`, `None` when it fails (the name does not exist, most likely; the
    /// operation that follows reports any other problem itself).
    async fn probe(
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
    fn wrap_stream(
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
async fn adding_entry<R>(
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

impl types::Host for QuotaFsView<'_> {
    fn convert_error_code(&mut self, err: FsError) -> wasmtime::Result<ErrorCode> {
        types::Host::convert_error_code(&mut self.fs, err)
    }

    fn filesystem_error_code(
        &mut self,
        err: Resource<wasmtime::Error>,
    ) -> wasmtime::Result<Option<ErrorCode>> {
        types::Host::filesystem_error_code(&mut self.fs, err)
    }
}

impl HostDescriptor for QuotaFsView<'_> {
    async fn advise(
        &mut self,
        fd: Resource<Descriptor>,
        offset: Filesize,
        len: Filesize,
        advice: types::Advice,
    ) -> FsResult<()> {
        HostDescriptor::advise(&mut self.fs, fd, offset, len, advice).await
    }

    async fn sync_data(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        HostDescriptor::sync_data(&mut self.fs, fd).await
    }

    async fn get_flags(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorFlags> {
        HostDescriptor::get_flags(&mut self.fs, fd).await
    }

    async fn get_type(&mut self, fd: Resource<Descriptor>) -> FsResult<types::DescriptorType> {
        HostDescriptor::get_type(&mut self.fs, fd).await
    }

    async fn set_size(&mut self, fd: Resource<Descriptor>, size: Filesize) -> FsResult<()> {
        let Some(quota) = self.quota.clone() else {
            return HostDescriptor::set_size(&mut self.fs, fd, size).await;
        };
        let stat = self.stat_fd(&fd).await?;
        let unlinked = stat.link_count == 0;
        if size > stat.size {
            if unlinked {
                return Err(insufficient_space());
            }
            let growth = size - stat.size;
            quota.reserve_bytes(growth)?;
            let result = HostDescriptor::set_size(&mut self.fs, fd, size).await;
            if result.is_err() {
                quota.release_bytes(growth);
            }
            result
        } else {
            HostDescriptor::set_size(&mut self.fs, fd, size).await?;
            // An unlinked file's bytes were released when it lost its last name.
            if !unlinked {
                quota.release_bytes(stat.size - size);
            }
            Ok(())
        }
    }

    async fn set_times(
        &mut self,
        fd: Resource<Descriptor>,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        HostDescriptor::set_times(&mut self.fs, fd, atim, mtim).await
    }

    async fn read(
        &mut self,
        fd: Resource<Descriptor>,
        len: Filesize,
        offset: Filesize,
    ) -> FsResult<(Vec<u8>, bool)> {
        HostDescriptor::read(&mut self.fs, fd, len, offset).await
    }

    async fn write(
        &mut self,
        fd: Resource<Descriptor>,
        buffer: Vec<u8>,
        offset: Filesize,
    ) -> FsResult<Filesize> {
        let Some(quota) = self.quota.clone() else {
            return HostDescriptor::write(&mut self.fs, fd, buffer, offset).await;
        };
        let stat = self.stat_fd(&fd).await?;
        let growth_to = |written: u64| offset.saturating_add(written).saturating_sub(stat.size);
        let growth = growth_to(buffer.len() as u64);
        if growth > 0 && stat.link_count == 0 {
            return Err(insufficient_space());
        }
        quota.reserve_bytes(growth)?;
        match HostDescriptor::write(&mut self.fs, fd, buffer, offset).await {
            Ok(written) => {
                // A short write gives back what it did not use.
                quota.release_bytes(growth - growth_to(written).min(growth));
                Ok(written)
            }
            Err(err) => {
                quota.release_bytes(growth);
                Err(err)
            }
        }
    }

    async fn read_directory(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<types::DirectoryEntryStream>> {
        HostDescriptor::read_directory(&mut self.fs, fd).await
    }

    async fn sync(&mut self, fd: Resource<Descriptor>) -> FsResult<()> {
        HostDescriptor::sync(&mut self.fs, fd).await
    }

    async fn create_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        let quota = self.quota.clone();
        adding_entry(
            quota,
            HostDescriptor::create_directory_at(&mut self.fs, fd, path),
        )
        .await
    }

    async fn stat(&mut self, fd: Resource<Descriptor>) -> FsResult<DescriptorStat> {
        HostDescriptor::stat(&mut self.fs, fd).await
    }

    async fn stat_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<DescriptorStat> {
        HostDescriptor::stat_at(&mut self.fs, fd, path_flags, path).await
    }

    async fn set_times_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        atim: types::NewTimestamp,
        mtim: types::NewTimestamp,
    ) -> FsResult<()> {
        HostDescriptor::set_times_at(&mut self.fs, fd, path_flags, path, atim, mtim).await
    }

    async fn link_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path_flags: types::PathFlags,
        old_path: String,
        new_descriptor: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        // A new name for existing content: one more entry, no more bytes (the content is
        // counted once however many names it has).
        let quota = self.quota.clone();
        let link = HostDescriptor::link_at(
            &mut self.fs,
            fd,
            old_path_flags,
            old_path,
            new_descriptor,
            new_path,
        );
        adding_entry(quota, link).await
    }

    async fn open_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
        open_flags: types::OpenFlags,
        flags: types::DescriptorFlags,
    ) -> FsResult<Resource<Descriptor>> {
        let Some(quota) = self.quota.clone() else {
            return HostDescriptor::open_at(&mut self.fs, fd, path_flags, path, open_flags, flags)
                .await;
        };
        let creates = open_flags.contains(types::OpenFlags::CREATE);
        let truncates = open_flags.contains(types::OpenFlags::TRUNCATE);
        if !creates && !truncates {
            return HostDescriptor::open_at(&mut self.fs, fd, path_flags, path, open_flags, flags)
                .await;
        }
        let existing = self.probe(&fd, path_flags, &path).await;
        // When the probe fails for another reason than a missing name, count a new entry
        // anyway: too many is corrected by the re-measure, too few would not be.
        let reserved = creates && existing.is_none();
        if reserved {
            quota.reserve_file()?;
        }
        let result =
            HostDescriptor::open_at(&mut self.fs, fd, path_flags, path, open_flags, flags).await;
        if result.is_ok() {
            if truncates {
                // The old content is gone (counted once, however many names it has).
                quota.release_bytes(existing.as_ref().map_or(0, regular_size));
            }
        } else if reserved {
            quota.release_file();
        }
        result
    }

    fn drop(&mut self, fd: Resource<Descriptor>) -> wasmtime::Result<()> {
        HostDescriptor::drop(&mut self.fs, fd)
    }

    async fn readlink_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<String> {
        HostDescriptor::readlink_at(&mut self.fs, fd, path).await
    }

    async fn remove_directory_at(
        &mut self,
        fd: Resource<Descriptor>,
        path: String,
    ) -> FsResult<()> {
        HostDescriptor::remove_directory_at(&mut self.fs, fd, path).await?;
        if let Some(quota) = &self.quota {
            quota.release_file();
        }
        Ok(())
    }

    async fn rename_at(
        &mut self,
        fd: Resource<Descriptor>,
        old_path: String,
        new_fd: Resource<Descriptor>,
        new_path: String,
    ) -> FsResult<()> {
        // A rename over an existing name leaves the replaced file counted: too many, which the
        // re-measure at the cap corrects.
        HostDescriptor::rename_at(&mut self.fs, fd, old_path, new_fd, new_path).await
    }

    async fn symlink_at(
        &mut self,
        fd: Resource<Descriptor>,
        src_path: String,
        dest_path: String,
    ) -> FsResult<()> {
        let quota = self.quota.clone();
        adding_entry(
            quota,
            HostDescriptor::symlink_at(&mut self.fs, fd, src_path, dest_path),
        )
        .await
    }

    async fn unlink_file_at(&mut self, fd: Resource<Descriptor>, path: String) -> FsResult<()> {
        let Some(quota) = self.quota.clone() else {
            return HostDescriptor::unlink_file_at(&mut self.fs, fd, path).await;
        };
        // `unlink` removes the name itself, a symlink rather than its target.
        let existing = self.probe(&fd, types::PathFlags::empty(), &path).await;
        HostDescriptor::unlink_file_at(&mut self.fs, fd, path).await?;
        // The content stays while another name refers to it.
        if let Some(stat) = existing.filter(|stat| stat.link_count <= 1) {
            quota.release_bytes(regular_size(&stat));
        }
        quota.release_file();
        Ok(())
    }

    fn read_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: Filesize,
    ) -> FsResult<Resource<DynInputStream>> {
        HostDescriptor::read_via_stream(&mut self.fs, fd, offset)
    }

    fn write_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
        offset: Filesize,
    ) -> FsResult<Resource<DynOutputStream>> {
        let Some(quota) = self.quota.clone() else {
            return HostDescriptor::write_via_stream(&mut self.fs, fd, offset);
        };
        let stream = HostDescriptor::write_via_stream(&mut self.fs, borrow(&fd), offset)?;
        self.wrap_stream(&fd, stream, Some(offset), quota)
    }

    fn append_via_stream(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<Resource<DynOutputStream>> {
        let Some(quota) = self.quota.clone() else {
            return HostDescriptor::append_via_stream(&mut self.fs, fd);
        };
        let stream = HostDescriptor::append_via_stream(&mut self.fs, borrow(&fd))?;
        self.wrap_stream(&fd, stream, None, quota)
    }

    async fn is_same_object(
        &mut self,
        a: Resource<Descriptor>,
        b: Resource<Descriptor>,
    ) -> wasmtime::Result<bool> {
        HostDescriptor::is_same_object(&mut self.fs, a, b).await
    }

    async fn metadata_hash(
        &mut self,
        fd: Resource<Descriptor>,
    ) -> FsResult<types::MetadataHashValue> {
        HostDescriptor::metadata_hash(&mut self.fs, fd).await
    }

    async fn metadata_hash_at(
        &mut self,
        fd: Resource<Descriptor>,
        path_flags: types::PathFlags,
        path: String,
    ) -> FsResult<types::MetadataHashValue> {
        HostDescriptor::metadata_hash_at(&mut self.fs, fd, path_flags, path).await
    }
}

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
struct QuotaStream {
    /// wasmtime-wasi's stream, which does the writing.
    inner: DynOutputStream,
    /// The file, to notice when it loses its last name.
    file: Arc<std::fs::File>,
    /// Where the next write lands.
    pos: u64,
    /// The end of the file as far as this stream knows: bytes before it are already counted.
    end: u64,
    quota: Arc<FilesQuota>,
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// A quota that measures the disk again whenever it would refuse.
    fn quota(dir: &Path, max_bytes: u64, max_files: u64) -> FilesQuota {
        FilesQuota {
            remeasure_every: std::time::Duration::ZERO,
            ..FilesQuota::new(dir.to_path_buf(), max_bytes, max_files)
        }
    }

    #[test]
    fn the_disk_is_measured_again_at_most_once_a_second() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), vec![0u8; 100]).unwrap();
        let q = FilesQuota::new(dir.path().to_path_buf(), 100, 10);
        assert!(refused(q.reserve_bytes(1)));
        // Freed behind its back: not seen until a second has passed since the last measure.
        std::fs::remove_file(dir.path().join("a")).unwrap();
        assert!(refused(q.reserve_bytes(1)));
        q.lock().as_mut().unwrap().measured =
            Some(std::time::Instant::now() - REMEASURE_EVERY - std::time::Duration::from_millis(1));
        assert_eq!(q.reserve_bytes(1), Ok(()));
    }

    fn refused(result: Result<(), ErrorCode>) -> bool {
        matches!(result, Err(ErrorCode::InsufficientSpace))
    }

    /// What a guest's write does: reserve, then put the bytes on disk.
    fn write(q: &FilesQuota, path: &Path, len: usize) -> Result<(), ErrorCode> {
        q.reserve_bytes(len as u64)?;
        std::fs::write(path, vec![0u8; len]).unwrap();
        Ok(())
    }

    #[test]
    fn reserves_up_to_the_cap_then_refuses() {
        let dir = tempfile::tempdir().unwrap();
        let q = quota(dir.path(), 100, 10);
        write(&q, &dir.path().join("a"), 60).unwrap();
        write(&q, &dir.path().join("b"), 40).unwrap();
        q.reserve_bytes(0).unwrap();
        // Over the cap: measured again, and the disk agrees.
        assert!(refused(q.reserve_bytes(1)));
        assert_eq!(q.usage(), (100, 2));
    }

    #[test]
    fn released_bytes_can_be_reserved_again() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a");
        let q = quota(dir.path(), 100, 10);
        write(&q, &file, 100).unwrap();
        assert!(refused(q.reserve_bytes(1)));
        std::fs::write(&file, [0u8; 70]).unwrap();
        q.release_bytes(30);
        assert_eq!(q.usage().0, 70);
        q.reserve_bytes(30).unwrap();
        std::fs::write(&file, [0u8; 100]).unwrap();
        assert!(refused(q.reserve_bytes(1)));
        assert_eq!(q.usage(), (100, 1));
    }

    #[test]
    fn counts_what_is_already_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/a"), [0u8; 30]).unwrap();
        std::fs::write(dir.path().join("b"), [0u8; 20]).unwrap();
        let q = quota(dir.path(), 100, 10);
        assert_eq!(q.usage(), (50, 3));
        write(&q, &dir.path().join("c"), 50).unwrap();
        assert!(refused(q.reserve_bytes(1)));
    }

    #[test]
    fn a_file_deleted_behind_its_back_is_noticed_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("big");
        std::fs::write(&file, [0u8; 80]).unwrap();
        let q = quota(dir.path(), 100, 10);
        assert_eq!(q.usage(), (80, 1));
        assert!(refused(q.reserve_bytes(30)));
        std::fs::remove_file(&file).unwrap();
        // The count still says 80; the re-measure finds the room.
        q.reserve_bytes(30).unwrap();
        assert_eq!(q.usage(), (30, 0));
    }

    #[test]
    fn reservations_never_written_are_forgotten_at_the_cap() {
        let dir = tempfile::tempdir().unwrap();
        let q = quota(dir.path(), 100, 10);
        q.reserve_bytes(100).unwrap();
        q.reserve_bytes(50).unwrap();
        assert_eq!(q.usage(), (50, 0));
    }

    #[test]
    fn caps_the_number_of_entries() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("existing")).unwrap();
        let q = quota(dir.path(), 100, 3);
        for name in ["f1", "f2"] {
            q.reserve_file().unwrap();
            std::fs::write(dir.path().join(name), b"").unwrap();
        }
        assert!(refused(q.reserve_file()));
        std::fs::remove_file(dir.path().join("f1")).unwrap();
        q.release_file();
        q.reserve_file().unwrap();
        std::fs::write(dir.path().join("f3"), b"").unwrap();
        assert!(refused(q.reserve_file()));
        assert_eq!(q.usage(), (0, 3));
    }

    #[test]
    fn the_walk_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        for i in 0..150 {
            std::fs::write(dir.path().join(i.to_string()), b"x").unwrap();
        }
        // max_files 0: at most 0 * 2 + 100 entries are visited.
        let q = quota(dir.path(), 1000, 0);
        assert_eq!(q.usage(), (100, 100));
    }

    #[cfg(unix)]
    #[test]
    fn hard_links_count_their_content_once_and_symlinks_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a");
        std::fs::write(&file, [0u8; 40]).unwrap();
        std::fs::hard_link(&file, dir.path().join("b")).unwrap();
        std::os::unix::fs::symlink(&file, dir.path().join("c")).unwrap();
        let q = quota(dir.path(), 100, 10);
        assert_eq!(q.usage(), (40, 3));
    }
}
