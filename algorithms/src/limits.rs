//! How large a model a job may ask for. A job's sizes come from its spec
//! and its data (a libsvm file's largest feature id, a corpus header's
//! vocabulary, a network's layer widths), so a typo or a hostile file
//! could ask a node for more memory than it has: the allocation aborts the
//! daemon, the restarted node recovers the job, and the job aborts it
//! again. Each algorithm counts its model's numbers once its data are read
//! and before it allocates them, and a model over the node's bound fails
//! the job with the sizes that made it large.

use petuum_core::spec::SpecError;
use std::sync::atomic::{AtomicU64, Ordering};

/// Bytes counted per model number: a value and one working copy or
/// gradient of it (f32 + f32, or one f64).
pub const BYTES_PER_NUMBER: u64 = 8;

/// The bound set by [`set_max_model_bytes`]; 0: not set.
static MAX_MODEL_BYTES: AtomicU64 = AtomicU64::new(0);

/// Sets the bound on a model's bytes (petuumd from node.toml
/// `max_model_mb`; 0 restores the default).
pub fn set_max_model_bytes(bytes: u64) {
    MAX_MODEL_BYTES.store(bytes, Ordering::Relaxed);
}

/// The bound on a model's bytes: as set, else a quarter of this machine's
/// memory (every worker on a node holds a copy, and its shards, snapshots
/// and checkpoints more), or 4 GiB when the memory cannot be read.
pub fn max_model_bytes() -> u64 {
    static DEFAULT: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    match MAX_MODEL_BYTES.load(Ordering::Relaxed) {
        0 => *DEFAULT.get_or_init(|| physical_memory().map_or(4 << 30, |m| m / 4)),
        set => set,
    }
}

/// The memory this process may use, in bytes: `MemTotal` of
/// /proc/meminfo, or the cgroup's `memory.max` when that is lower (a
/// container, a systemd `MemoryMax=`).
fn physical_memory() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = text.lines().find(|l| l.starts_with("MemTotal:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    let total = kib.saturating_mul(1024);
    let cgroup = std::fs::read_to_string("/sys/fs/cgroup/memory.max")
        .ok()
        .and_then(|t| t.trim().parse::<u64>().ok());
    Some(cgroup.map_or(total, |c| c.min(total)))
}

/// Refuses a model of `numbers` numbers over [`max_model_bytes`]: the
/// error names `field` and says what the count is made of (`what`, e.g.
/// "784 features x 10 classes").
pub fn check_model(field: &str, what: &str, numbers: u128) -> Result<(), SpecError> {
    match too_large(what, numbers) {
        None => Ok(()),
        Some(problem) => Err(SpecError::invalid(field, problem)),
    }
}

/// Why a model of `numbers` numbers (`what`) is too large for this node,
/// or None when it fits.
pub fn too_large(what: &str, numbers: u128) -> Option<String> {
    let bytes = numbers.saturating_mul(BYTES_PER_NUMBER as u128);
    let max = max_model_bytes();
    (bytes > max as u128).then(|| {
        format!(
            "the model would hold {numbers} numbers ({what}), about {} MiB; a job's model may use at most {} MiB on this node (a quarter of its memory, or node.toml `max_model_mb`)",
            bytes >> 20,
            max >> 20
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_over_the_bound_is_refused_with_its_sizes() {
        // The default is a quarter of this machine's memory, so anything
        // the machine could hold passes and a 2^31 x 10 model does not.
        assert!(check_model("data.train", "784 features x 10 classes", 7850).is_ok());
        let e = check_model(
            "data.train",
            "2000000000 features x 10 classes",
            20_000_000_000,
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("data.train")
                && e.contains("2000000000 features x 10 classes")
                && e.contains("max_model_mb"),
            "{e}"
        );
        // No overflow on absurd sizes.
        assert!(check_model("params.hidden", "huge", u128::MAX).is_err());
    }
}
