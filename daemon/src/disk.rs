//! Free space on the node's data directory. A write that finds the disk
//! full fails its Raft group and the node exits for its service manager to
//! restart it (docs/operations.md, "A full disk"); these are the gauges and
//! the warning that come before that.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The file system holding a directory, as `statvfs` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DiskSpace {
    /// Bytes an unprivileged process may still write.
    pub available: u64,
    /// The file system's size.
    pub total: u64,
}

impl DiskSpace {
    /// Below this much available the node warns: 5% of the file system,
    /// at least 1 GiB, at most a quarter of it (a small test disk).
    pub fn reserve(&self) -> u64 {
        (self.total / 20).max(1 << 30).min(self.total / 4)
    }

    pub fn low(&self) -> bool {
        self.available < self.reserve()
    }
}

/// The space of the file system holding `path`; None when it cannot be
/// asked (the directory is gone).
pub fn space(path: &Path) -> Option<DiskSpace> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes into the zeroed struct it is given; `c` is a
    // valid NUL-terminated path for the duration of the call.
    let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut s) } != 0 {
        return None;
    }
    let frsize = s.f_frsize as u64;
    Some(DiskSpace {
        available: (s.f_bavail as u64).saturating_mul(frsize),
        total: (s.f_blocks as u64).saturating_mul(frsize),
    })
}

/// How often [`watch`] looks.
const PERIOD: Duration = Duration::from_secs(15);

/// Logs a warning when the data directory's file system falls below its
/// reserve, and again each time it falls by another half of what was left
/// at the last warning; one line when it is back above.
pub async fn watch(node: u64, data_dir: PathBuf) {
    let mut warned_at: Option<u64> = None;
    loop {
        // statvfs may block (a hung network file system): off the runtime.
        let dir = data_dir.clone();
        let asked = tokio::task::spawn_blocking(move || space(&dir)).await;
        if let Ok(Some(s)) = asked {
            let mib = |b: u64| b >> 20;
            match warned_at {
                _ if !s.low() => {
                    if warned_at.take().is_some() {
                        tracing::info!(
                            node,
                            available_mib = mib(s.available),
                            "the data directory has room again"
                        );
                    }
                }
                Some(last) if s.available >= last / 2 => {}
                _ => {
                    tracing::warn!(
                        node,
                        path = %data_dir.display(),
                        available_mib = mib(s.available),
                        total_mib = mib(s.total),
                        reserve_mib = mib(s.reserve()),
                        "the data directory's disk is nearly full: when a write finds no space the node stops until there is room; free space or grow the disk"
                    );
                    warned_at = Some(s.available);
                }
            }
        }
        tokio::time::sleep(PERIOD).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reserve_is_five_percent_within_bounds() {
        let gib = 1u64 << 30;
        let s = |available, total| DiskSpace { available, total };
        // A 1 TB disk keeps 5%; a 10 GB one 1 GiB; a 24 MB one a quarter.
        assert_eq!(s(0, 1000 * gib).reserve(), 50 * gib);
        assert_eq!(s(0, 10 * gib).reserve(), gib);
        assert_eq!(s(0, 24 << 20).reserve(), 6 << 20);
        assert!(s(49 * gib, 1000 * gib).low());
        assert!(!s(51 * gib, 1000 * gib).low());
    }

    #[test]
    fn a_directory_has_a_size_and_a_gone_one_none() {
        let dir = tempfile::tempdir().unwrap();
        let s = space(dir.path()).expect("statvfs of a temp dir");
        assert!(s.total > 0 && s.available <= s.total, "{s:?}");
        assert_eq!(space(&dir.path().join("no/such/dir")), None);
    }
}
