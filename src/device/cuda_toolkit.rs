//! What CubeCL's CUDA runtime needs besides the driver, checked before a run picks CUDA: it
//! compiles every kernel at run time with NVRTC (`libnvrtc.so`, loaded on first use) against
//! the toolkit's headers (`cuda_runtime.h`, `cuda_fp16.h`, `mma.h`, `cuda/barrier`, ...) found
//! through `CUDA_PATH`, `/usr/local/cuda`, `/opt/cuda` or `/usr/bin/nvcc` (cubecl-cuda's
//! `install::cuda_path`; without any of them it panics on the first kernel, and without the
//! headers NVRTC fails with "cannot open source file"). The CUDA *runtime* container images
//! have NVRTC but no headers. Plain file and `dlopen` checks: they run, and are tested, on a
//! machine without a GPU.

use std::path::{Path, PathBuf};

/// Headers the CUDA kernels CubeCL generates include (cubecl-cpp's CUDA dialect and its mma
/// compilers), relative to the toolkit's `include` directory. `cuda/barrier` and
/// `cuda/pipeline` are libcu++ (CCCL), under `include/cccl` since CUDA 13.
pub const REQUIRED_HEADERS: &[&str] = &[
    "cuda_runtime.h",
    "cuda_fp16.h",
    "cuda_bf16.h",
    "mma.h",
    "cooperative_groups.h",
    "cuda/barrier",
    "cuda/pipeline",
];

/// The NVRTC library names tried, newest soname first (cudarc loads the first that opens).
pub const NVRTC_LIBRARIES: &[&str] = &[
    "libnvrtc.so",
    "libnvrtc.so.13",
    "libnvrtc.so.12",
    "libnvrtc.so.11.2",
];

/// The toolkit root CubeCL will use, by cubecl-cuda's own rule: `CUDA_PATH` when set (even if
/// wrong), else the first of `/usr/local/cuda`, `/opt/cuda`, and `/usr` when `/usr/bin/nvcc`
/// exists. `root` replaces `/` for tests.
pub fn toolkit_root(cuda_path: Option<&str>, root: &Path) -> Option<PathBuf> {
    if let Some(p) = cuda_path {
        return Some(PathBuf::from(p));
    }
    let under = |p: &str| root.join(p.trim_start_matches('/'));
    if under("/usr/local/cuda").exists() {
        Some(under("/usr/local/cuda"))
    } else if under("/opt/cuda").exists() {
        Some(under("/opt/cuda"))
    } else if under("/usr/bin/nvcc").exists() {
        Some(under("/usr"))
    } else {
        None
    }
}

/// The headers of [`REQUIRED_HEADERS`] missing under `toolkit/include` (or its `cccl`).
pub fn missing_headers(toolkit: &Path) -> Vec<&'static str> {
    let include = toolkit.join("include");
    REQUIRED_HEADERS
        .iter()
        .copied()
        .filter(|h| !include.join(h).is_file() && !include.join("cccl").join(h).is_file())
        .collect()
}

/// Whether a shared library of `names` can be loaded (searched as the dynamic loader does,
/// then in `extra_dirs`); the path or name that opened, or `None`.
pub fn loadable(names: &[&str], extra_dirs: &[PathBuf]) -> Option<String> {
    let candidates = names.iter().map(|n| n.to_string()).chain(
        extra_dirs
            .iter()
            .flat_map(|d| names.iter().map(move |n| d.join(n).display().to_string())),
    );
    for name in candidates {
        let Ok(c) = std::ffi::CString::new(name.clone()) else {
            continue;
        };
        // SAFETY: a NUL-terminated name; RTLD_LAZY only maps the library, and it is closed
        // again at once (cudarc opens it itself later).
        let handle = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_LAZY | libc::RTLD_LOCAL) };
        if !handle.is_null() {
            // SAFETY: `handle` came from dlopen above.
            unsafe { libc::dlclose(handle) };
            return Some(name);
        }
    }
    None
}

/// Everything CubeCL's CUDA runtime needs on this machine besides the driver, or one line that
/// says what is missing and what to do. `cuda_path` is `$CUDA_PATH`; `root` is `/` (tests
/// pass a fake tree).
pub fn check(cuda_path: Option<&str>, root: &Path) -> Result<ToolkitInfo, String> {
    let Some(toolkit) = toolkit_root(cuda_path, root) else {
        return Err(
            "no CUDA toolkit headers (CUDA_PATH unset and no /usr/local/cuda, /opt/cuda \
                    or nvcc): CubeCL compiles its kernels with NVRTC against them; install the \
                    toolkit's headers (e.g. the nvidia/cuda *-devel image) and set CUDA_PATH"
                .to_string(),
        );
    };
    let missing = missing_headers(&toolkit);
    if !missing.is_empty() {
        return Err(format!(
            "the CUDA toolkit at {} lacks the headers CubeCL's kernels include ({}): install \
             the toolkit's headers there or point CUDA_PATH at a full toolkit",
            toolkit.display(),
            missing.join(", ")
        ));
    }
    let libs = [toolkit.join("lib64"), toolkit.join("lib")];
    let Some(nvrtc) = loadable(NVRTC_LIBRARIES, &libs) else {
        return Err(format!(
            "NVRTC (libnvrtc.so) cannot be loaded: CubeCL compiles every kernel with it; install \
             the CUDA toolkit's NVRTC or add its directory ({}) to LD_LIBRARY_PATH",
            toolkit.join("lib64").display()
        ));
    };
    Ok(ToolkitInfo { toolkit, nvrtc })
}

/// Where the toolkit's headers and NVRTC were found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ToolkitInfo {
    pub toolkit: PathBuf,
    pub nvrtc: String,
}

/// [`check`] on this machine.
pub fn check_here() -> Result<ToolkitInfo, String> {
    check(std::env::var("CUDA_PATH").ok().as_deref(), Path::new("/"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    /// A toolkit tree with every required header (libcu++ under `include/cccl` when `cccl`).
    fn toolkit(dir: &Path, cccl: bool) {
        for h in REQUIRED_HEADERS {
            let at = if cccl && h.starts_with("cuda/") {
                dir.join("include/cccl").join(h)
            } else {
                dir.join("include").join(h)
            };
            fs::create_dir_all(at.parent().unwrap()).unwrap();
            fs::write(at, "/* header */\n").unwrap();
        }
    }

    #[test]
    fn toolkit_root_follows_cubecl_rule() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        assert_eq!(toolkit_root(None, root), None);
        assert_eq!(
            toolkit_root(Some("/x/cuda"), root),
            Some(PathBuf::from("/x/cuda")),
            "CUDA_PATH wins, even when it is wrong (as in cubecl)"
        );
        fs::create_dir_all(root.join("usr/bin")).unwrap();
        fs::write(root.join("usr/bin/nvcc"), "").unwrap();
        assert_eq!(toolkit_root(None, root), Some(root.join("usr")));
        fs::create_dir_all(root.join("opt/cuda")).unwrap();
        assert_eq!(toolkit_root(None, root), Some(root.join("opt/cuda")));
        fs::create_dir_all(root.join("usr/local/cuda")).unwrap();
        assert_eq!(toolkit_root(None, root), Some(root.join("usr/local/cuda")));
    }

    #[test]
    fn no_toolkit_is_one_line_naming_the_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let why = check(None, tmp.path()).unwrap_err();
        assert!(why.contains("CUDA_PATH") && why.contains("-devel"), "{why}");
        assert!(!why.contains('\n'));
    }

    #[test]
    fn runtime_image_without_headers_names_the_missing_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let cuda = tmp.path().join("cuda");
        // What the runtime images have: libraries, no include directory.
        fs::create_dir_all(cuda.join("lib64")).unwrap();
        let why = check(Some(cuda.to_str().unwrap()), tmp.path()).unwrap_err();
        assert!(
            why.contains("cuda_runtime.h") && why.contains("cuda/barrier"),
            "{why}"
        );
        // One header short.
        toolkit(&cuda, false);
        fs::remove_file(cuda.join("include/mma.h")).unwrap();
        assert_eq!(missing_headers(&cuda), vec!["mma.h"]);
        let why = check(Some(cuda.to_str().unwrap()), tmp.path()).unwrap_err();
        assert!(why.contains("(mma.h)"), "{why}");
    }

    #[test]
    fn headers_are_found_in_include_or_cccl() {
        for cccl in [false, true] {
            let tmp = tempfile::tempdir().unwrap();
            toolkit(tmp.path(), cccl);
            assert!(missing_headers(tmp.path()).is_empty(), "cccl {cccl}");
        }
    }

    #[test]
    fn full_headers_without_nvrtc_say_so() {
        let tmp = tempfile::tempdir().unwrap();
        toolkit(tmp.path(), false);
        // A file that is not a library under one of the names: dlopen refuses it.
        fs::create_dir_all(tmp.path().join("lib64")).unwrap();
        fs::write(tmp.path().join("lib64/libnvrtc.so.12"), "not ELF").unwrap();
        if loadable(NVRTC_LIBRARIES, &[]).is_some() {
            eprintln!("this machine has NVRTC: the missing-library case cannot be shown here");
            return;
        }
        let why = check(Some(tmp.path().to_str().unwrap()), tmp.path()).unwrap_err();
        assert!(
            why.contains("NVRTC") && why.contains("LD_LIBRARY_PATH"),
            "{why}"
        );
    }

    #[test]
    fn loadable_opens_a_real_library_by_name_or_directory() {
        // The C library is loaded in every process: the positive case of the same check.
        assert_eq!(
            loadable(&["libnvrtc-none.so", "libc.so.6"], &[]).as_deref(),
            Some("libc.so.6")
        );
        assert_eq!(loadable(&["libnvrtc-none.so"], &[]), None);
    }
}
