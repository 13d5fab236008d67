//! Faults the integration tests inject into the binary they run, to prove crash recovery and
//! fault handling without a GPU or a real crash: fail chosen records, slow batches down, die
//! like `kill -9` after a number of checkpoint parts or right after a pipeline step.
//!
//! Read from `VIRNUCPRO_TEST_*` environment variables, but only in a build with the
//! `fault-injection` cargo feature. The package enables that feature for its own tests through
//! a dev-dependency on itself (Cargo.toml): `cargo test` builds the binary that the tests run
//! (`CARGO_BIN_EXE_virnucpro`) with the feature, so the README's `cargo test --release` needs
//! no flag; `cargo build --release` (and `cargo install`, the container build) does not enable
//! it, and then nothing here reads the environment: a shipped binary cannot be steered into
//! failing by a stray variable. (Compiling the hooks under `cfg(debug_assertions)` would not do:
//! the tests run the release profile.)

use std::time::Duration;

/// Whether this build reads the fault variables.
pub const ENABLED: bool = cfg!(feature = "fault-injection");

/// `VIRNUCPRO_TEST_FAIL_IDS=a,b`: a batch holding one of these records fails (like an
/// out-of-memory when it holds several, like a bad record when alone).
pub const FAIL_IDS: &str = "VIRNUCPRO_TEST_FAIL_IDS";
/// `VIRNUCPRO_TEST_BATCH_DELAY_MS=N`: sleep N ms before each batch.
pub const BATCH_DELAY_MS: &str = "VIRNUCPRO_TEST_BATCH_DELAY_MS";
/// `VIRNUCPRO_TEST_DEVICE_TOKENS=N`: the device holds at most N padded tokens per batch; a
/// larger batch fails at the backend boundary the way CubeCL reports a device out of memory
/// (its `LaunchError::OutOfMemory` text), so the split-and-retry path runs without a GPU.
pub const DEVICE_TOKENS: &str = "VIRNUCPRO_TEST_DEVICE_TOKENS";
/// `VIRNUCPRO_TEST_FREE_BYTES=N`: the disk under a download has N bytes free when it starts,
/// and each byte written uses one, so the free-space checks (before and while data arrives)
/// run without filling a real disk.
pub const FREE_BYTES: &str = "VIRNUCPRO_TEST_FREE_BYTES";
/// `VIRNUCPRO_TEST_ABORT_AFTER_CHECKPOINTS=k`: abort after writing k checkpoint parts.
pub const ABORT_AFTER_CHECKPOINTS: &str = "VIRNUCPRO_TEST_ABORT_AFTER_CHECKPOINTS";
/// `VIRNUCPRO_TEST_ABORT_AFTER=step`: abort right after `run` records that step complete.
pub const ABORT_AFTER_STEP: &str = "VIRNUCPRO_TEST_ABORT_AFTER";

/// The variable's value when `enabled`; nothing otherwise, without looking.
fn read(enabled: bool, name: &str) -> Option<String> {
    if enabled {
        std::env::var(name).ok()
    } else {
        None
    }
}

fn var(name: &str) -> Option<String> {
    read(ENABLED, name)
}

/// Record ids whose batches fail.
pub fn fail_ids() -> Vec<String> {
    var(FAIL_IDS)
        .map(|v| {
            v.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// A pause before each batch.
pub fn batch_delay() -> Option<Duration> {
    var(BATCH_DELAY_MS)
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
}

/// Padded tokens per batch past which an injected out-of-memory fails the batch.
pub fn device_tokens() -> Option<usize> {
    var(DEVICE_TOKENS).and_then(|v| v.parse().ok())
}

/// The free bytes a download's disk reports instead of its own.
pub fn free_bytes() -> Option<u64> {
    var(FREE_BYTES).and_then(|v| v.parse().ok())
}

/// Checkpoint parts after which the process aborts.
pub fn abort_after_checkpoints() -> Option<usize> {
    var(ABORT_AFTER_CHECKPOINTS).and_then(|v| v.parse().ok())
}

/// Abort (like `kill -9`) when `step` is the step named to die after.
pub fn abort_after_step(step: &str) {
    if var(ABORT_AFTER_STEP).as_deref() == Some(step) {
        std::process::abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_build_without_the_feature_reads_no_variable() {
        // PATH is set in any test environment: the gate, not its absence, decides.
        assert!(std::env::var("PATH").is_ok());
        assert_eq!(read(false, "PATH"), None);
        assert_eq!(read(true, "PATH"), std::env::var("PATH").ok());
    }

    // The dev-dependency on the package itself turns the feature on for every test build;
    // without it the integration tests' injected faults would silently not happen, so such a
    // test build must not compile.
    #[cfg(not(feature = "fault-injection"))]
    compile_error!("test builds need the fault-injection feature (Cargo.toml's dev-dependency)");

    #[test]
    fn only_the_test_dev_dependency_turns_the_hooks_on() {
        // A `cargo build` binary is built from [dependencies] and the default features: neither
        // may name the feature, or the shipped binary would read the fault variables.
        let manifest: toml::Table = toml::from_str(include_str!("../../Cargo.toml")).unwrap();
        let features = manifest["features"].as_table().unwrap();
        for (name, enables) in features {
            let enables = enables.as_array().unwrap();
            assert!(
                !enables
                    .iter()
                    .any(|f| f.as_str() == Some("fault-injection")),
                "feature {name} turns the fault hooks on"
            );
        }
        let deps = manifest["dependencies"].as_table().unwrap();
        assert!(!deps.contains_key("virnucpro"));
        let dev = &manifest["dev-dependencies"]["virnucpro"];
        assert_eq!(dev["path"].as_str(), Some("."));
        assert_eq!(
            dev["features"].as_array().unwrap(),
            &vec![toml::Value::from("fault-injection")]
        );
    }
}
