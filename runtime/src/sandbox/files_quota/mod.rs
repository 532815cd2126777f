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

mod descriptor;
mod stream;
mod view;

pub use view::{add_to_linker, QuotaFs, QuotaFsView};

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};

use wasmtime_wasi::p2::bindings::filesystem::types::ErrorCode;
use wasmtime_wasi::p2::StreamError;

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

/// The quota on one broker's files directory, shared (in an `Arc`) by all its calls.
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
