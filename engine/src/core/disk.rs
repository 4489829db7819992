//! The free-space guard: writes stop before the disk is full, so neither the WAL nor
//! RocksDB ever meets `ENOSPC`.
//!
//! A full disk under the WAL would poison it (a failed write cannot be trusted), and under
//! RocksDB it stops the database with a hard error that only a reopen clears: either way
//! writes could not resume without a restart. So the core checks the free space of the
//! WAL's and the store's filesystems (every [`CHECK_INTERVAL`]) and, below
//! `disk_free_min_bytes`, refuses writes (`unavailable`, nothing applied) while reads go
//! on. Checkpoints, which free WAL segments, go on as long as each leaves a quarter of
//! that reserve free. Once there is room again, writes are accepted again, without a restart.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often the core looks: a syscall per filesystem, far apart next to batches.
pub(crate) const CHECK_INTERVAL: Duration = Duration::from_millis(50);

/// What the core, the checkpointer and `/readyz` share.
pub(crate) struct DiskGuard {
    dirs: Vec<PathBuf>,
    free_min_bytes: u64,
    /// Below `free_min_bytes` somewhere: writes refused.
    writes_held: AtomicBool,
    reason: Mutex<String>,
    checked_at: Mutex<Option<Instant>>,
}

impl DiskGuard {
    pub fn new(dirs: Vec<PathBuf>, free_min_bytes: u64) -> DiskGuard {
        DiskGuard {
            dirs,
            free_min_bytes,
            writes_held: AtomicBool::new(false),
            reason: Mutex::new(String::new()),
            checked_at: Mutex::new(None),
        }
    }

    /// Look again if the last look is older than [`CHECK_INTERVAL`].
    pub fn check_due(&self) {
        {
            let mut checked_at = lock(&self.checked_at);
            if checked_at.is_some_and(|at| at.elapsed() < CHECK_INTERVAL) {
                return;
            }
            *checked_at = Some(Instant::now());
        }
        self.check();
    }

    /// Measure every filesystem now and update what is held.
    pub fn check(&self) {
        if self.free_min_bytes == 0 {
            return;
        }
        self.hold_writes_below(self.lowest_free());
    }

    /// The least free space among the filesystems, and where. A filesystem that cannot
    /// be measured is not held against: the write itself will report what is wrong.
    fn lowest_free(&self) -> Option<(u64, &PathBuf)> {
        self.dirs
            .iter()
            .filter_map(|dir| Some((free_bytes(dir)?, dir)))
            .min_by_key(|(free, _)| *free)
    }

    /// Hold or release writes by `lowest` (see [`DiskGuard::lowest_free`]).
    fn hold_writes_below(&self, lowest: Option<(u64, &PathBuf)>) {
        let Some((free, dir)) = lowest else {
            return;
        };
        let writes_held = free < self.free_min_bytes;
        let was_held = self.writes_held.swap(writes_held, Ordering::AcqRel);
        if writes_held {
            *lock(&self.reason) = format!(
                "disk nearly full: {free} bytes free under {}, below disk_free_min_bytes {}",
                dir.display(),
                self.free_min_bytes
            );
        }
        match (was_held, writes_held) {
            (false, true) => tracing::error!(
                free_bytes = free,
                dir = %dir.display(),
                disk_free_min_bytes = self.free_min_bytes,
                "disk nearly full: writes are refused until there is room; reads are served"
            ),
            (true, false) => tracing::info!(
                free_bytes = free,
                dir = %dir.display(),
                "room on disk again: writes are accepted"
            ),
            _ => {}
        }
    }

    /// Why writes are refused, if they are.
    pub fn writes_held(&self) -> Option<String> {
        self.writes_held
            .load(Ordering::Acquire)
            .then(|| lock(&self.reason).clone())
    }

    /// Why a checkpoint of about `bytes` must wait, if it must: measured now, it has to
    /// leave a quarter of the reserve free after it is written. Writes stop at the whole
    /// reserve, so a checkpoint up to three quarters of it always fits once they stop:
    /// keep `disk_free_min_bytes` above 4/3 of the largest checkpoint
    /// (`transfers_uncheckpointed_max` × 256 bytes), or checkpoints wait for room too.
    pub fn checkpoint_refused(&self, bytes: u64) -> Option<String> {
        if self.free_min_bytes == 0 {
            return None;
        }
        let lowest = self.lowest_free();
        self.hold_writes_below(lowest);
        let (free, dir) = lowest?;
        let needed = self.free_min_bytes / 4 + bytes;
        (free < needed).then(|| {
            format!(
                "disk nearly full: {free} bytes free under {}, a checkpoint of about {bytes} \
                 bytes needs {needed} (a quarter of disk_free_min_bytes {} kept)",
                dir.display(),
                self.free_min_bytes
            )
        })
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Bytes an unprivileged process may still write on the filesystem of `dir`.
fn free_bytes(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: an all-zero statvfs is a valid value to be overwritten.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a struct we own.
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return None;
    }
    Some(stats.f_bavail.saturating_mul(stats.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reserve_larger_than_any_disk_holds_writes_and_checkpoints_and_zero_holds_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let guard = DiskGuard::new(vec![dir.path().to_path_buf()], u64::MAX);
        assert!(guard.writes_held().is_none(), "nothing held before a look");
        guard.check();
        let reason = guard.writes_held().expect("held");
        assert!(reason.contains("disk_free_min_bytes"), "{reason}");
        assert!(guard.checkpoint_refused(0).is_some());

        let guard = DiskGuard::new(vec![dir.path().to_path_buf()], 0);
        guard.check();
        assert!(guard.writes_held().is_none() && guard.checkpoint_refused(u64::MAX).is_none());

        let guard = DiskGuard::new(vec![dir.path().to_path_buf()], 2);
        guard.check();
        assert!(guard.writes_held().is_none(), "two bytes are free");
        assert!(guard.checkpoint_refused(1).is_none());
        assert!(
            guard.checkpoint_refused(u64::MAX / 2).is_some(),
            "no disk is that large"
        );
    }
}
