//! `wasi:filesystem/types` descriptors through the quota: every call that may grow a file
//! or add an entry reserves it first.

use super::view::*;

use wasmtime::component::Resource;
use wasmtime_wasi::filesystem::Descriptor;
use wasmtime_wasi::p2::bindings::filesystem::types::{
    self, DescriptorStat, ErrorCode, Filesize, HostDescriptor,
};
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, FsError, FsResult};

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
