//! Where the GPU backends keep compiled kernels and autotune results between runs.
//!
//! CubeCL (under Burn's CUDA and wgpu backends) compiles every kernel at run time and autotunes
//! matmuls and reductions per shape. Left alone it keeps no compilation cache at all and puts
//! its autotune cache under a `target/` directory it looks for above the working directory (or
//! `~/.cache/cubecl`), so every Nextflow task, each in its own work directory and often its own
//! container, compiled and tuned everything again. Both caches go in one directory that
//! persists across runs: `--kernel-cache DIR` / `VIRNUCPRO_KERNEL_CACHE`, by default
//! `$XDG_CACHE_HOME/virnucpro/cubecl` (`~/.cache/virnucpro/cubecl`). CubeCL locks its cache
//! files, so concurrent tasks may share the directory.

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};

/// The environment variable that sets the cache directory (the flag overrides it).
pub const ENV: &str = "VIRNUCPRO_KERNEL_CACHE";

/// The default directory from `$XDG_CACHE_HOME` or `$HOME`, or `None` when neither is set.
pub fn default_dir(xdg_cache_home: Option<&str>, home: Option<&str>) -> Option<PathBuf> {
    let base = match (xdg_cache_home, home) {
        // The XDG spec: a relative XDG_CACHE_HOME is invalid and ignored.
        (Some(x), _) if Path::new(x).is_absolute() => PathBuf::from(x),
        (_, Some(h)) if !h.is_empty() => Path::new(h).join(".cache"),
        _ => return None,
    };
    Some(base.join("virnucpro").join("cubecl"))
}

/// `dir` created if needed and proven writable (a file is created and removed), or one line
/// saying why not.
pub fn usable(dir: &Path) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    tempfile::Builder::new()
        .prefix(".write-test")
        .tempfile_in(dir)
        .map_err(|e| format!("{} is not writable: {e}", dir.display()))?;
    Ok(dir.to_path_buf())
}

/// The cache directory to use: the one asked for (`--kernel-cache` or `$VIRNUCPRO_KERNEL_CACHE`)
/// must be usable (an error otherwise: the user chose it); the default one, when unusable, is
/// skipped with one line (`None`: CubeCL's own defaults, kernels compiled again each run),
/// a warning when `gpu_asked` (the user asked for a GPU), else a debug message.
pub fn choose(asked: Option<&Path>, gpu_asked: bool) -> Result<Option<PathBuf>> {
    if let Some(dir) = asked.filter(|d| !d.as_os_str().is_empty()) {
        return match usable(dir) {
            Ok(dir) => Ok(Some(dir)),
            Err(why) => {
                bail!("kernel cache (--kernel-cache / {ENV}): {why}; pass a writable directory")
            }
        };
    }
    let xdg = std::env::var("XDG_CACHE_HOME").ok();
    let home = std::env::var("HOME").ok();
    let why = match default_dir(xdg.as_deref(), home.as_deref()) {
        None => "no XDG_CACHE_HOME or HOME".to_string(),
        Some(dir) => match usable(&dir) {
            Ok(dir) => return Ok(Some(dir)),
            Err(why) => why,
        },
    };
    let line = format!(
        "kernel cache: {why}; GPU kernels are compiled and tuned again in every run (set \
         --kernel-cache or {ENV})"
    );
    if gpu_asked {
        tracing::warn!("{line}");
    } else {
        tracing::debug!("{line}");
    }
    Ok(None)
}

/// Point CubeCL's compilation and autotune caches at `dir` (subdirectories `compilation` and
/// `autotune`). Must run before the first GPU kernel: CubeCL reads its configuration once. The
/// rest of its configuration (a `cubecl.toml` above the working directory, `CUBECL_*`
/// variables) is kept. Returns whether the setting took (`false` when CubeCL had already
/// read its configuration, e.g. a second call in one process).
pub fn apply(dir: &Path) -> bool {
    #[cfg(any(feature = "cuda", feature = "wgpu", feature = "wgpu-metal"))]
    {
        use burn::cubecl::config::cache::CacheConfig;
        use burn::cubecl::config::{CubeClRuntimeConfig, RuntimeConfig};
        let mut slot = CubeClRuntimeConfig::storage().lock();
        if slot.is_some() {
            return false;
        }
        // CubeCL panics on a malformed cubecl.toml; its defaults then, with one line.
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(|_| {}));
        let from_files = std::panic::catch_unwind(CubeClRuntimeConfig::from_current_dir);
        std::panic::set_hook(hook);
        let mut config = from_files.unwrap_or_else(|_| {
            tracing::warn!("a cubecl.toml above the working directory is malformed: ignored");
            CubeClRuntimeConfig::default()
        });
        config = config.override_from_env();
        config.autotune.cache = CacheConfig::File(dir.join("autotune"));
        config.compilation.cache = Some(CacheConfig::File(dir.join("compilation")));
        *slot = Some(std::sync::Arc::new(config));
        true
    }
    #[cfg(not(any(feature = "cuda", feature = "wgpu", feature = "wgpu-metal")))]
    {
        let _ = dir;
        false
    }
}

/// [`choose`] then [`apply`], before a command that may run on a GPU touches one. Nothing to do
/// in a build without a GPU backend.
pub fn setup(asked: Option<&Path>, gpu_asked: bool) -> Result<()> {
    if !cfg!(any(
        feature = "cuda",
        feature = "wgpu",
        feature = "wgpu-metal"
    )) {
        return Ok(());
    }
    if let Some(dir) = choose(asked, gpu_asked)? {
        if apply(&dir) {
            tracing::debug!("GPU kernel caches in {}", dir.display());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_follows_xdg_then_home() {
        assert_eq!(
            default_dir(Some("/x/cache"), Some("/home/u")),
            Some(PathBuf::from("/x/cache/virnucpro/cubecl"))
        );
        assert_eq!(
            default_dir(None, Some("/home/u")),
            Some(PathBuf::from("/home/u/.cache/virnucpro/cubecl"))
        );
        // A relative XDG_CACHE_HOME is invalid (XDG spec): HOME's then.
        assert_eq!(
            default_dir(Some("rel"), Some("/home/u")),
            Some(PathBuf::from("/home/u/.cache/virnucpro/cubecl"))
        );
        assert_eq!(default_dir(None, None), None);
        assert_eq!(default_dir(None, Some("")), None);
    }

    #[test]
    fn usable_creates_the_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("a/b");
        assert_eq!(usable(&dir).unwrap(), dir);
        assert!(dir.is_dir());
        // Nothing left behind by the write test.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    }

    #[test]
    fn a_file_in_the_way_is_one_line() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "").unwrap();
        let why = usable(&file.join("cubecl")).unwrap_err();
        assert!(
            why.starts_with("cannot create") && !why.contains('\n'),
            "{why}"
        );
        let err = choose(Some(&file), true).unwrap_err().to_string();
        assert!(
            err.contains("--kernel-cache") && err.contains("writable"),
            "{err}"
        );
    }

    #[test]
    fn an_unwritable_directory_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ro");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o555)).unwrap();
        // root writes anywhere: the refusal can only be shown as another user.
        if unsafe { libc::geteuid() } == 0 {
            eprintln!("running as root: an unwritable directory cannot be made");
            return;
        }
        let why = usable(&dir).unwrap_err();
        assert!(why.contains("not writable"), "{why}");
    }
}
