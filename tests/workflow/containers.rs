//! The container files, without Docker or Apptainer (neither runs here): the Dockerfile's build
//! command is the one containers/build-check.sh runs in CI, the image's shape (multi-stage, CUDA
//! devel base with NVRTC and headers, non-root, models mounted), the tags agree everywhere, and
//! every shell script in the repository is shellcheck clean.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// `ARG NAME=value` default in the Dockerfile.
fn arg_default(dockerfile: &str, name: &str) -> String {
    dockerfile
        .lines()
        .find_map(|l| l.strip_prefix(&format!("ARG {name}=")))
        .unwrap_or_else(|| panic!("Dockerfile: no ARG {name}="))
        .to_string()
}

/// The image tag the pipeline uses by default: virnucpro:<crate version>.
fn image_tag() -> String {
    format!("virnucpro:{}", env!("CARGO_PKG_VERSION"))
}

/// build-check.sh reads the cargo command out of the Dockerfile: what it would run for each
/// variant is exactly the command the issue fixes (and what CI builds).
#[test]
fn build_check_runs_the_dockerfile_cargo_command_for_both_variants() {
    let o = Command::new("bash")
        .arg(repo().join("containers/build-check.sh"))
        .arg("--print")
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "cuda: cargo build --release --locked --features cuda\ncpu: cargo build --release --locked\n"
    );
    // CI's cuda variant: the same line type-checked.
    let o = Command::new("bash")
        .arg(repo().join("containers/build-check.sh"))
        .args(["--print", "--check", "cuda"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "cuda: cargo check --release --locked --features cuda\n"
    );
    // One cargo build line, or the mirror refuses (so the two cannot drift apart silently).
    let dockerfile = read("containers/Dockerfile");
    let runs: Vec<&str> = dockerfile
        .lines()
        .filter(|l| l.starts_with("RUN ") && l.contains("cargo build"))
        .collect();
    assert_eq!(runs.len(), 1, "{runs:?}");
}

#[test]
fn dockerfile_builds_in_rust_and_runs_from_the_cuda_devel_image_as_non_root() {
    let d = read("containers/Dockerfile");
    let froms: Vec<&str> = d.lines().filter(|l| l.starts_with("FROM ")).collect();
    assert_eq!(
        froms,
        ["FROM ${RUST_IMAGE} AS build", "FROM ${RUNTIME_BASE}"],
        "two stages"
    );
    assert_eq!(arg_default(&d, "RUST_IMAGE"), "rust:1-bookworm");
    let runtime = arg_default(&d, "RUNTIME_BASE");
    // NVRTC compiles CubeCL's kernels against the toolkit's headers: the runtime images have
    // NVRTC but no headers ("cannot open source file cuda_runtime.h"), the devel ones both.
    assert!(
        runtime.starts_with("nvidia/cuda:") && runtime.contains("-devel-"),
        "the CUDA *devel* image (NVRTC and the headers): {runtime}"
    );
    assert!(
        d.contains("ENV CUDA_PATH=/usr/local/cuda"),
        "CUDA_PATH for cubecl-cuda"
    );
    assert!(
        d.contains("driver >= 550"),
        "the minimum driver is documented"
    );
    // cudarc binds the runtime base's CUDA version: nvidia/cuda:12.4.1-... -> 12040.
    let version = runtime
        .trim_start_matches("nvidia/cuda:")
        .split('-')
        .next()
        .unwrap();
    let mut parts = version.split('.');
    let (major, minor) = (parts.next().unwrap(), parts.next().unwrap());
    assert_eq!(
        arg_default(&d, "CUDARC_CUDA_VERSION"),
        format!("{major}0{minor}0"),
        "matches {runtime}"
    );
    assert_eq!(arg_default(&d, "FEATURES"), "cuda");
    let cargo_toml = read("Cargo.toml");
    assert!(cargo_toml.contains("\ncuda = ["), "the cuda feature exists");
    assert!(d.contains("COPY --from=build /src/target/release/virnucpro /usr/local/bin/virnucpro"));
    let last_user = d
        .lines()
        .filter_map(|l| l.strip_prefix("USER "))
        .next_back();
    assert_eq!(last_user, Some("virnucpro"), "runs as a non-root user");
    assert!(
        !d.lines().any(|l| l.starts_with("ENTRYPOINT")),
        "no ENTRYPOINT: Nextflow runs commands through a shell"
    );
    assert!(
        d.contains("RUN virnucpro --version"),
        "the image build runs the binary on its base"
    );
    // Models are mounted, not baked: nothing copies them, the usage shows the mount.
    assert!(d.contains("-v /path/to/models:/models:ro"));
    assert!(
        !d.contains(".safetensors\n") && !d.contains("COPY models"),
        "no model in the image"
    );
    // The documented CPU variant is the one build-check.sh mirrors.
    assert!(d.contains("--build-arg FEATURES= --build-arg RUNTIME_BASE=debian:bookworm-slim"));
    assert!(read("containers/build-check.sh")
        .contains("cpu) echo \"FEATURES=\"; echo \"RUNTIME_BASE=debian:bookworm-slim\""));
    assert!(
        d.contains(&format!("-t {} .", image_tag())),
        "documented tag {}",
        image_tag()
    );
    let ignore = read(".dockerignore");
    for p in ["target/", ".git"] {
        assert!(ignore.lines().any(|l| l == p), ".dockerignore: {p}");
    }
}

#[test]
fn apptainer_definition_wraps_the_same_image() {
    let def = read("containers/virnucpro.def");
    assert!(def.contains("\nBootstrap: docker-daemon\n"));
    assert!(def.contains(&format!("\nFrom: {}\n", image_tag())));
    for section in ["%runscript", "%help", "%test"] {
        assert!(def.contains(&format!("\n{section}\n")), "{section}");
    }
    assert!(def.contains("exec virnucpro \"$@\""));
    assert!(def.contains("apptainer build virnucpro.sif containers/virnucpro.def"));
    assert!(def.contains("--nv"));
    // The pipeline's default image is the one these files build.
    assert!(read("nextflow/nextflow.config")
        .contains(&format!("container          = '{}'", image_tag())));
}

fn shell_scripts(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_str().unwrap();
        if p.is_dir() {
            if !["target", ".git", "work", "results"].contains(&name) {
                shell_scripts(&p, out);
            }
        } else if name.ends_with(".sh") {
            out.push(p);
        }
    }
}

/// bench/*.sh, bench/gpu/run.sh, containers/*.sh, .ci/run: shellcheck clean.
#[test]
fn repository_shell_scripts_are_shellcheck_clean() {
    let mut scripts = vec![repo().join(".ci/run")];
    shell_scripts(&repo(), &mut scripts);
    scripts.sort();
    for want in [
        "bench/translate.sh",
        "bench/gpu/run.sh",
        "containers/build-check.sh",
    ] {
        assert!(scripts.contains(&repo().join(want)), "{want} found");
    }
    crate::common::shellcheck(&scripts);
}
