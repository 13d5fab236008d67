//! Where the models run: `--device auto|cpu|cuda|cuda:N|cuda:0,2,3|wgpu|wgpu:N` and
//! `--precision`.
//!
//! One binary serves GPU and CPU machines: with the `cuda` feature the CUDA driver is loaded at
//! run time, and when it is missing `auto` falls back to the CPU with one log line instead of
//! crashing (Burn's CUDA runtime would panic). With the `wgpu` feature the Vulkan (Metal on
//! macOS) adapters are listed first, for the same reason.

use std::fmt;
use std::str::FromStr;

use crate::models::ops::ModelOps;
use anyhow::{bail, Result};

pub mod cpu_cache;
pub mod cuda;
pub mod cuda_toolkit;
pub mod dtype;
pub mod gpu_probe;
pub mod kernel_cache;
pub mod lease;
pub mod placement;
pub mod wgpu;

pub use self::gpu_probe::{gpu_probe, GpuProbe};
pub use self::placement::{LazyPlacement, Placement, PlacementRequest};

use self::wgpu::{AdapterInfo, AdapterKind};
use crate::io::output_lock::OutputLock;
use crate::subcommand::{Finished, Subcommand};

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeviceSpec {
    Auto,
    Cpu,
    /// `cuda` (all visible devices) or `cuda:0,2`.
    Cuda(Option<Vec<usize>>),
    /// `wgpu` (every hardware adapter, else the software one) or `wgpu:0,1` (wgpu's order, as
    /// `virnucpro devices` lists them).
    Wgpu(Option<Vec<usize>>),
}

/// `0,2,3` as indices.
fn index_list(list: &str, spec: &str, what: &str, example: &str) -> Result<Vec<usize>, String> {
    let ids = list
        .split(',')
        .map(|x| x.trim().parse::<usize>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| format!("bad {what} device list in '{spec}': expected e.g. {example}"))?;
    if ids.is_empty() {
        return Err(format!("no {what} device ids in '{spec}'"));
    }
    Ok(ids)
}

impl FromStr for DeviceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(None)),
            "wgpu" | "vulkan" | "metal" => Ok(Self::Wgpu(None)),
            other => {
                if let Some(list) = other.strip_prefix("cuda:") {
                    return index_list(list, s, "CUDA", "cuda:0 or cuda:0,2,3")
                        .map(|ids| Self::Cuda(Some(ids)));
                }
                if let Some(list) = other.strip_prefix("wgpu:") {
                    return index_list(list, s, "wgpu", "wgpu:0 or wgpu:0,1")
                        .map(|ids| Self::Wgpu(Some(ids)));
                }
                Err(format!(
                    "unknown device '{s}': use auto, cpu, cuda, cuda:N, cuda:0,2,3, wgpu or wgpu:N"
                ))
            }
        }
    }
}

/// Floating-point precision of the model on the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// f32 on CPU (exact to the goldens) and on software adapters, f16 on CUDA and on GPUs
    /// with f16 shaders.
    Auto,
    F32,
    F16,
    Bf16,
    /// W8A8 int8 products in the projections on a CPU with AMX-INT8 or AVX-512 VNNI,
    /// everything else f32 (`models/reduced/int8.rs`); CPU only.
    Int8,
}

impl FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(Self::Auto),
            "f32" | "fp32" | "float32" => Ok(Self::F32),
            "f16" | "fp16" | "float16" | "half" => Ok(Self::F16),
            "bf16" | "bfloat16" => Ok(Self::Bf16),
            "int8" | "i8" | "w8a8" => Ok(Self::Int8),
            _ => Err(format!(
                "unknown precision '{s}': use auto, f32, f16, bf16 or int8"
            )),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Auto => "auto",
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::Bf16 => "bf16",
            Self::Int8 => "int8",
        })
    }
}

/// The devices a run will use, after looking at the machine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Devices {
    /// CPU workers, each with its own model copy and single-threaded kernels.
    Cpu {
        workers: usize,
    },
    Cuda {
        ids: Vec<usize>,
    },
    /// Burn's wgpu backend, one worker per adapter.
    Wgpu {
        adapters: Vec<AdapterInfo>,
    },
}

impl Devices {
    /// One name per worker, for logs and reports: `cpu#0`, `cuda:2`.
    pub fn worker_names(&self) -> Vec<String> {
        match self {
            Devices::Cpu { workers } => (0..*workers).map(|w| format!("cpu#{w}")).collect(),
            Devices::Cuda { ids } => ids.iter().map(|i| format!("cuda:{i}")).collect(),
            Devices::Wgpu { adapters } => adapters.iter().map(AdapterInfo::label).collect(),
        }
    }
}

impl fmt::Display for Devices {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Devices::Cpu { workers } => write!(f, "cpu ({workers} workers)"),
            Devices::Cuda { ids } => {
                let names: Vec<String> = ids.iter().map(|i| format!("cuda:{i}")).collect();
                f.write_str(&names.join(","))
            }
            Devices::Wgpu { adapters } => {
                let names: Vec<String> = adapters
                    .iter()
                    .map(|a| format!("{} ({}, {})", a.label(), a.name, a.kind))
                    .collect();
                f.write_str(&names.join(","))
            }
        }
    }
}

/// Number of CUDA devices the driver reports, or why there are none.
pub fn cuda_device_count() -> Result<usize, String> {
    cuda::device_count()
}

/// Turn the user's choice into devices (through [`Placement::resolve`], once per process).
/// `precision`: what was asked, so that CUDA's test kernel runs in the dtype the models will
/// (it sets each device's default dtype; see [`placement`]). `cpu_threads` = CPU workers
/// (default: all cores); `lease` = take this many GPUs through lock files (see [`lease`])
/// instead of all of them, waiting for a free one up to `lease_timeout` (default: for ever).
fn resolve(
    spec: &DeviceSpec,
    precision: Precision,
    cpu_threads: Option<usize>,
    lease: Option<usize>,
    lease_timeout: Option<std::time::Duration>,
) -> Result<Devices> {
    let cpu = || Devices::Cpu {
        workers: cpu_threads
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|n| n.get())
                    .unwrap_or(1)
            })
            .max(1),
    };
    let auto = *spec == DeviceSpec::Auto;
    let ids = match spec {
        DeviceSpec::Cpu => return Ok(cpu()),
        DeviceSpec::Wgpu(ids) => return resolve_wgpu(ids.as_deref(), lease),
        DeviceSpec::Auto => match gpu_probe().count().and_then(|n| {
            // Headers and NVRTC first (files only, no GPU touched): without them every kernel
            // compilation fails, so the CPU is the better choice.
            if n > 0 {
                if let Some(Err(why)) = gpu_probe().toolkit() {
                    return Err(format!("{n} CUDA device(s) visible but {why}"));
                }
            }
            Ok(n)
        }) {
            Ok(n) if n > 0 => (0..n).collect(),
            other => {
                let why = match other {
                    Ok(_) => "no CUDA device visible".to_string(),
                    Err(why) => why,
                };
                let hardware: Vec<AdapterInfo> = wgpu::adapters()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|a| a.kind.is_hardware())
                    .collect();
                if auto_pick(false, !hardware.is_empty()) == AutoPick::Wgpu {
                    tracing::info!("{why}; running on wgpu");
                    return Ok(Devices::Wgpu { adapters: hardware });
                }
                tracing::info!("{why}; running on the CPU");
                return Ok(cpu());
            }
        },
        DeviceSpec::Cuda(ids) => {
            let n = match gpu_probe().count() {
                Ok(n) => n,
                Err(why) => bail!("--device cuda requested but {why}; use --device cpu or auto"),
            };
            if n == 0 {
                bail!("--device cuda requested but no CUDA device is visible (check CUDA_VISIBLE_DEVICES)");
            }
            if let Some(Err(why)) = gpu_probe().toolkit() {
                bail!("--device cuda: {why}");
            }
            let ids = ids.clone().unwrap_or_else(|| (0..n).collect());
            if let Some(bad) = ids.iter().find(|&&i| i >= n) {
                bail!(
                    "CUDA device {bad} does not exist: {n} device(s) visible (0..{})",
                    n - 1
                );
            }
            ids
        }
    };
    let Some(want) = lease else {
        return smoke_tested(ids, precision, auto, cpu);
    };
    // UUIDs only: reading them needs no context, so GPUs other processes hold are not touched.
    let known = gpu_probe().list().unwrap_or_default();
    let candidates: Vec<(usize, String)> = ids
        .iter()
        .map(|&i| {
            let key = known
                .iter()
                .find(|d| d.index == i)
                .map(|d| d.uuid.clone())
                .unwrap_or_else(|| format!("index-{i}"));
            (i, key)
        })
        .collect();
    let dir = lease::lock_dir();
    let held = lease::acquire(&candidates, want, &dir, lease_timeout)?.keep();
    tracing::info!(
        "leased {} of {} GPU(s) (lock files in {})",
        held.len(),
        candidates.len(),
        dir.display()
    );
    let names: Vec<String> = held
        .iter()
        .map(|&i| {
            let key = candidates.iter().find(|c| c.0 == i).map_or("?", |c| &c.1);
            format!("cuda:{i} ({key})")
        })
        .collect();
    tracing::info!("leased {}", names.join(", "));
    smoke_tested(held, precision, auto, cpu)
}

/// CUDA on `ids` once one kernel has compiled, run and come back right on each (CubeCL's NVRTC
/// and the driver's PTX support are only proven by doing it; a failure there would otherwise
/// be a panic inside the first batch), in the precision the run computes in: the test kernel
/// sets each device's default dtype to it first ([`placement::claim_dtype`]), so it cannot fix
/// another one. On failure `auto` falls back to the CPU with one line; an explicit
/// `--device cuda` stops with the reason. GPUs that compute on the CPU backend (tests) have no
/// kernel to test.
fn smoke_tested(
    ids: Vec<usize>,
    precision: Precision,
    auto: bool,
    cpu: impl Fn() -> Devices,
) -> Result<Devices> {
    let devices = Devices::Cuda { ids };
    let precision = effective_precision(&devices, precision)?;
    let Devices::Cuda { ids } = devices else {
        unreachable!()
    };
    for &i in &ids {
        if let Err(why) = gpu_probe().smoke_test(i, Some(precision)) {
            if auto {
                tracing::info!("cuda:{i}: {why}; running on the CPU");
                return Ok(cpu());
            }
            bail!("--device cuda: cuda:{i}: {why}; use --device cpu");
        }
    }
    Ok(Devices::Cuda { ids })
}

/// `--device wgpu[:N]`: the adapters, checked to exist and to be openable by Burn.
fn resolve_wgpu(ids: Option<&[usize]>, lease: Option<usize>) -> Result<Devices> {
    let all = match wgpu::adapters() {
        Ok(all) => all,
        Err(why) => bail!("--device wgpu requested but {why}; use --device cpu or auto"),
    };
    let chosen = match ids {
        None => wgpu::default_choice(&all),
        Some(ids) => {
            let mut chosen = Vec::with_capacity(ids.len());
            for &i in ids {
                let Some(a) = all.get(i) else {
                    bail!(
                        "wgpu adapter {i} does not exist: {} adapter(s) found (0..{}; see `virnucpro devices`)",
                        all.len(),
                        all.len() - 1
                    );
                };
                if chosen.contains(a) {
                    bail!("wgpu adapter {i} is listed twice in --device");
                }
                chosen.push(a.clone());
            }
            chosen
        }
    };
    if let Err(why) = wgpu::check_openable(&chosen) {
        bail!("--device wgpu: {why}");
    }
    if lease.is_some() {
        tracing::warn!(
            "the GPU lease covers CUDA devices only; the wgpu adapters are used as given"
        );
    }
    if chosen.iter().all(|a| a.kind == AdapterKind::Cpu) {
        tracing::info!(
            "{} is a software adapter: it runs the GPU code path on the CPU, slower than --device cpu",
            chosen[0].name
        );
    }
    Ok(Devices::Wgpu { adapters: chosen })
}

/// What `--device auto` takes, from what was found: usable CUDA devices first, then GPUs
/// through wgpu (hardware adapters only: the CPU backend is faster than a rasteriser emulating a
/// GPU on the same cores), else the CPU. `resolve` and `virnucpro devices` both decide here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum AutoPick {
    Cuda,
    Wgpu,
    Cpu,
}

fn auto_pick(cuda_usable: bool, hardware_wgpu: bool) -> AutoPick {
    if cuda_usable {
        AutoPick::Cuda
    } else if hardware_wgpu {
        AutoPick::Wgpu
    } else {
        AutoPick::Cpu
    }
}

/// `virnucpro devices` as a subcommand.
pub struct DevicesRequest {
    pub json: bool,
}

impl Subcommand for DevicesRequest {
    /// Nothing ahead: every device's problem is part of the report, not an error.
    fn check(&self) -> Result<()> {
        Ok(())
    }

    /// None: it only reads (the GPU leases are looked at, not taken).
    fn claim(&self) -> Result<Option<OutputLock>> {
        Ok(None)
    }

    /// The test kernels it runs go through the same caches as a run's.
    fn execute(&self) -> Result<Finished> {
        let cache = std::env::var_os(kernel_cache::ENV).map(std::path::PathBuf::from);
        kernel_cache::setup(cache.as_deref(), false)?;
        print!("{}", describe(self.json)?);
        Ok(Finished::COMPLETE)
    }
}

/// `virnucpro devices`: what `--device auto` would use, and the lease state of each GPU.
pub fn describe(json: bool) -> Result<String> {
    let inv = Inventory::probe();
    if json {
        Ok(format!("{}\n", serde_json::to_string_pretty(&inv.json())?))
    } else {
        Ok(inv.text())
    }
}

/// Everything `virnucpro devices` reports, probed once.
struct Inventory {
    cpus: usize,
    lock_dir: std::path::PathBuf,
    lock_dir_problem: Option<String>,
    /// Whether the GPUs compute on the CPU backend (the test builds' fake GPUs).
    on_cpu: bool,
    gpus: Vec<cuda::CudaDeviceInfo>,
    /// Why no CUDA device could be listed.
    why_none: Option<String>,
    /// Each GPU's lease holder, if leased.
    leased: Vec<Option<String>>,
    toolkit: Option<Result<cuda_toolkit::ToolkitInfo, String>>,
    /// Each GPU's test kernel, when it could be run.
    kernel_test: Vec<Option<Result<(), String>>>,
    adapters: Vec<AdapterInfo>,
    wgpu_none: Option<String>,
}

impl Inventory {
    fn probe() -> Inventory {
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let lock_dir = lease::lock_dir();
        let lock_dir_problem = lease::dir_problem(&lock_dir);
        let probe = gpu_probe();
        let (mut gpus, why_none) = match probe.list() {
            Ok(d) => (d, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        let leased: Vec<Option<String>> = gpus
            .iter()
            .map(|g| lease::holder(&lock_dir, &g.uuid))
            .collect();
        // Free memory needs a context on the GPU: not on one another process leased, nor on one
        // in an exclusive compute mode (a context there, however brief, could lock its user
        // out). The same checks as `--device auto`: the toolkit (files only), then one kernel
        // on each GPU that may be looked at (same rule as for free memory).
        let toolkit = if gpus.is_empty() {
            None
        } else {
            probe.toolkit()
        };
        let mut kernel_test: Vec<Option<Result<(), String>>> = vec![None; gpus.len()];
        for ((g, l), test) in gpus.iter_mut().zip(&leased).zip(&mut kernel_test) {
            if l.is_none() && probe.shared_compute_mode(g.index) {
                g.free_bytes = probe.free_memory(g.index);
                if matches!(toolkit, Some(Ok(_))) {
                    // f32 with an explicit dtype: this process computes nothing after it.
                    *test = Some(probe.smoke_test(g.index, None));
                }
            }
        }
        let (adapters, wgpu_none) = match wgpu::adapters() {
            Ok(a) => (a, None),
            Err(why) => (Vec::new(), Some(why)),
        };
        Inventory {
            cpus,
            lock_dir,
            lock_dir_problem,
            on_cpu: !probe.computes_on_cuda(),
            gpus,
            why_none,
            leased,
            toolkit,
            kernel_test,
            adapters,
            wgpu_none,
        }
    }

    /// What `--device auto` would use, in `--device` terms.
    fn auto(&self) -> String {
        let kernels_ok = self.kernel_test.iter().all(|t| !matches!(t, Some(Err(_))));
        let cuda_usable =
            !self.gpus.is_empty() && !matches!(self.toolkit, Some(Err(_))) && kernels_ok;
        let hardware: Vec<&AdapterInfo> = self
            .adapters
            .iter()
            .filter(|a| a.kind.is_hardware())
            .collect();
        let join = |labels: Vec<String>| labels.join(",");
        match auto_pick(cuda_usable, !hardware.is_empty()) {
            AutoPick::Cuda => join(
                self.gpus
                    .iter()
                    .map(|g| format!("cuda:{}", g.index))
                    .collect(),
            ),
            AutoPick::Wgpu => join(hardware.iter().map(|a| a.label()).collect()),
            AutoPick::Cpu => format!("cpu ({} workers)", self.cpus),
        }
    }

    fn json(&self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .gpus
            .iter()
            .zip(&self.leased)
            .zip(&self.kernel_test)
            .map(|((g, l), t)| {
                let mut v = serde_json::to_value(g).unwrap_or_default();
                v["leased_by"] = serde_json::json!(l);
                v["kernel_test"] = serde_json::json!(test_text(t));
                v
            })
            .collect();
        serde_json::json!({
            "auto": self.auto(),
            "cuda_devices": list,
            "cuda_unavailable": self.why_none,
            "cuda_toolkit": self.toolkit.as_ref().map(|t| match t {
                Ok(info) => serde_json::json!(info),
                Err(why) => serde_json::json!({ "error": why }),
            }),
            "cpu_cores": self.cpus,
            "lock_dir": self.lock_dir.display().to_string(),
            "lock_dir_problem": self.lock_dir_problem,
            "fake_gpus": self.on_cpu,
            "cuda_visible_devices": std::env::var("CUDA_VISIBLE_DEVICES").ok(),
            "wgpu_adapters": self.adapters,
            "wgpu_unavailable": self.wgpu_none,
        })
    }

    fn text(&self) -> String {
        let mut out = String::new();
        self.cuda_text(&mut out);
        self.wgpu_text(&mut out);
        out.push_str(&format!("CPU: {} cores\n", self.cpus));
        out.push_str(&format!("--device auto uses: {}\n", self.auto()));
        out
    }

    fn cuda_text(&self, out: &mut String) {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        if let Some(why) = &self.why_none {
            out.push_str(&format!("CUDA: none ({why})\n"));
        } else if self.gpus.is_empty() {
            out.push_str("CUDA: no device visible (check CUDA_VISIBLE_DEVICES)\n");
        }
        for ((g, l), t) in self.gpus.iter().zip(&self.leased).zip(&self.kernel_test) {
            let free = g
                .free_bytes
                .map(|f| format!("{:.1} GiB free", gib(f)))
                .unwrap_or_else(|| "free memory unknown".into());
            let lease = match l {
                Some(holder) => format!("leased ({holder})"),
                None => "not leased".into(),
            };
            out.push_str(&format!(
                "cuda:{}  {}  {:.1} GiB, {free}  {}  {lease}  test kernel: {}\n",
                g.index,
                g.name,
                gib(g.total_bytes),
                g.uuid,
                test_text(t)
            ));
        }
        match &self.toolkit {
            Some(Ok(info)) => out.push_str(&format!(
                "CUDA toolkit: headers in {}/include, NVRTC {}\n",
                info.toolkit.display(),
                info.nvrtc
            )),
            Some(Err(why)) => out.push_str(&format!("CUDA toolkit: {why}\n")),
            None => {}
        }
        if !self.gpus.is_empty() {
            match &self.lock_dir_problem {
                None => out.push_str(&format!(
                    "GPU lease lock files: {}\n",
                    self.lock_dir.display()
                )),
                Some(why) => out.push_str(&format!("GPU lease: refused: {why}\n")),
            }
        }
    }

    fn wgpu_text(&self, out: &mut String) {
        if let Some(why) = &self.wgpu_none {
            out.push_str(&format!("wgpu: none ({why})\n"));
            return;
        }
        for a in &self.adapters {
            let f16 = if a.shader_f16 {
                "f16 and f32"
            } else {
                "f32 only (no f16 shaders)"
            };
            out.push_str(&format!(
                "{}  {}  {}  {f16}  driver {}{}\n",
                a.label(),
                a.name,
                a.kind,
                a.driver,
                if a.kind.is_hardware() {
                    ""
                } else {
                    "  (software: never chosen by --device auto)"
                }
            ));
        }
    }
}

fn test_text(t: &Option<Result<(), String>>) -> String {
    match t {
        None => "not run".to_string(),
        Some(Ok(())) => "ok".to_string(),
        Some(Err(why)) => format!("failed: {why}"),
    }
}

/// The precision actually used on these devices, or why the one asked for cannot be.
pub fn effective_precision(devices: &Devices, asked: Precision) -> Result<Precision> {
    Ok(match (devices, asked) {
        (Devices::Cpu { .. }, Precision::Auto | Precision::F32) => Precision::F32,
        // bf16 or int8 products on AMX tiles, everything else f32 (`dtype::compute_plan`).
        (Devices::Cpu { .. }, p @ (Precision::Bf16 | Precision::Int8))
            if crate::models::reduced::available(dtype::compute_plan(p, true).1) =>
        {
            p
        }
        (Devices::Cpu { .. }, other) => {
            tracing::warn!(
                "--precision {other} is not available on this CPU (bf16 needs AMX-BF16, int8 \
                 AMX-INT8 or AVX-512 VNNI); using f32"
            );
            Precision::F32
        }
        (_, Precision::Int8) => {
            bail!("--precision int8 runs on the CPU only (AMX-INT8 or AVX-512 VNNI); on GPUs use f16, bf16 or f32")
        }
        // GPUs that compute on the CPU backend (tests' fake GPUs): f32 only, as the CPU.
        (Devices::Cuda { .. }, Precision::Auto | Precision::F32)
            if !gpu_probe().computes_on_cuda() =>
        {
            Precision::F32
        }
        (Devices::Cuda { .. }, p) if !gpu_probe().computes_on_cuda() => {
            bail!("--precision {p}: these GPUs compute on the CPU backend (fake GPUs, a test setting), in f32 only")
        }
        (Devices::Cuda { .. }, Precision::Auto) => Precision::F16,
        (Devices::Cuda { .. }, p) => p,
        (Devices::Wgpu { .. }, Precision::F32) => Precision::F32,
        (Devices::Wgpu { adapters }, Precision::Auto) => {
            // f16 on a real GPU that computes in it; a software adapter has no f16 units, so
            // f32 there is both exact and no slower.
            if adapters
                .iter()
                .all(|a| a.kind.is_hardware() && a.shader_f16)
            {
                Precision::F16
            } else {
                if let Some(a) = adapters
                    .iter()
                    .find(|a| a.kind.is_hardware() && !a.shader_f16)
                {
                    tracing::info!(
                        "{} ({}) has no f16 shaders: running in f32",
                        a.label(),
                        a.name
                    );
                }
                Precision::F32
            }
        }
        (Devices::Wgpu { adapters }, Precision::F16) => {
            if let Some(a) = adapters.iter().find(|a| !a.shader_f16) {
                bail!(
                    "--precision f16: {} ({}) does not support f16 shaders; use --precision f32",
                    a.label(),
                    a.name
                );
            }
            Precision::F16
        }
        (Devices::Wgpu { .. }, Precision::Bf16) => bail!(
            "--precision bf16 is not available on wgpu (Vulkan and Metal shaders have no bf16 \
             arithmetic); use f16 or f32"
        ),
    })
}

/// Work that runs on whichever backend the devices and precision select.
pub trait BackendTask {
    type Output;
    /// `devices`: one entry per worker. `cpu`: whether these are CPU workers (so each should
    /// keep its kernels on one thread).
    fn run<B: ModelOps>(self, devices: Vec<B::Device>, cpu: bool) -> Result<Self::Output>;
}

/// `devs` with `precision` as their default dtype (or an error if one already has another),
/// then `task` on them.
fn claimed<B: ModelOps, T: BackendTask>(
    devs: Vec<B::Device>,
    precision: Precision,
    cpu: bool,
    task: T,
) -> Result<T::Output> {
    for d in &devs {
        placement::claim_dtype::<B>(d, precision)?;
    }
    task.run::<B>(devs, cpu)
}

/// Run `task` on the backend for `devices` at `precision` (already made effective: a
/// [`Placement`]'s). Each device's default dtype is set to `precision` first.
pub fn dispatch<T: BackendTask>(
    devices: &Devices,
    precision: Precision,
    task: T,
) -> Result<T::Output> {
    use burn::backend::{flex::FlexDevice, Flex};
    match devices {
        Devices::Cpu { workers } => {
            let (tensors, _) = dtype::compute_plan(precision, true);
            claimed::<Flex, T>(vec![FlexDevice; *workers], tensors, true, task)
        }
        // GPUs that compute on the CPU backend (tests' fake GPUs): GPU workers (each its own
        // model, no CPU thread pinning) on the CPU backend.
        Devices::Cuda { ids } if !gpu_probe().computes_on_cuda() => {
            claimed::<Flex, T>(vec![FlexDevice; ids.len()], precision, false, task)
        }
        #[cfg(feature = "cuda")]
        Devices::Cuda { ids } => {
            use burn::backend::cuda::{Cuda, CudaDevice};
            let devs: Vec<CudaDevice> = ids.iter().map(|&i| CudaDevice::new(i)).collect();
            match precision {
                Precision::F32 | Precision::Auto => {
                    claimed::<Cuda<f32, i32>, T>(devs, precision, false, task)
                }
                Precision::F16 => claimed::<Cuda<half::f16, i32>, T>(devs, precision, false, task),
                Precision::Bf16 => {
                    claimed::<Cuda<half::bf16, i32>, T>(devs, precision, false, task)
                }
                // `effective_precision` refuses it on GPUs; said again for any other caller.
                Precision::Int8 => bail!("--precision int8 runs on the CPU only"),
            }
        }
        #[cfg(not(feature = "cuda"))]
        Devices::Cuda { .. } => {
            let _ = precision;
            bail!("this binary was built without the `cuda` feature")
        }
        #[cfg(any(feature = "wgpu", feature = "wgpu-metal"))]
        Devices::Wgpu { adapters } => {
            use burn::backend::wgpu::Wgpu;
            let devs: Vec<_> = adapters.iter().map(wgpu::burn_device).collect::<Vec<_>>();
            match precision {
                Precision::F32 | Precision::Auto => {
                    claimed::<Wgpu<f32, i32>, T>(devs, precision, false, task)
                }
                Precision::F16 => claimed::<Wgpu<half::f16, i32>, T>(devs, precision, false, task),
                Precision::Bf16 => bail!("--precision bf16 is not available on wgpu"),
                Precision::Int8 => bail!("--precision int8 runs on the CPU only"),
            }
        }
        #[cfg(not(any(feature = "wgpu", feature = "wgpu-metal")))]
        Devices::Wgpu { .. } => {
            let _ = precision;
            bail!("this binary was built without the `wgpu` feature")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_device_specs() {
        assert_eq!("auto".parse::<DeviceSpec>().unwrap(), DeviceSpec::Auto);
        assert_eq!("CPU".parse::<DeviceSpec>().unwrap(), DeviceSpec::Cpu);
        assert_eq!(
            "cuda".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda(None)
        );
        assert_eq!(
            "cuda:1".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda(Some(vec![1]))
        );
        assert_eq!(
            "cuda:0,2,3".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Cuda(Some(vec![0, 2, 3]))
        );
        assert!("tpu".parse::<DeviceSpec>().is_err());
        assert!("cuda:x".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn auto_takes_cuda_then_hardware_wgpu_then_the_cpu() {
        assert_eq!(auto_pick(true, true), AutoPick::Cuda);
        assert_eq!(auto_pick(false, true), AutoPick::Wgpu);
        assert_eq!(auto_pick(false, false), AutoPick::Cpu);
    }

    #[test]
    fn cpu_precision_is_f32_but_for_bf16_products_on_amx() {
        let cpu = Devices::Cpu { workers: 1 };
        assert_eq!(
            effective_precision(&cpu, Precision::Auto).unwrap(),
            Precision::F32
        );
        assert_eq!(
            effective_precision(&cpu, Precision::F16).unwrap(),
            Precision::F32
        );
        // bf16 (int8) on the CPU is bf16 (int8) products on AMX tiles, where the CPU has them.
        use crate::models::{ops::Matmul, reduced};
        for (asked, matmul) in [
            (Precision::Bf16, Matmul::Bf16),
            (Precision::Int8, Matmul::Int8),
        ] {
            let want = if reduced::available(matmul) {
                asked
            } else {
                Precision::F32
            };
            assert_eq!(effective_precision(&cpu, asked).unwrap(), want);
        }
    }

    fn adapter(kind: AdapterKind, shader_f16: bool) -> AdapterInfo {
        AdapterInfo {
            index: 0,
            name: "test adapter".into(),
            kind,
            driver: String::new(),
            index_in_kind: 0,
            shader_f16,
            max_binding_bytes: 1 << 30,
        }
    }

    #[test]
    fn wgpu_auto_precision_is_f16_only_on_a_real_gpu_with_f16() {
        let on = |kind, f16| Devices::Wgpu {
            adapters: vec![adapter(kind, f16)],
        };
        let auto = |d: &Devices| effective_precision(d, Precision::Auto).unwrap();
        assert_eq!(auto(&on(AdapterKind::Discrete, true)), Precision::F16);
        assert_eq!(auto(&on(AdapterKind::Discrete, false)), Precision::F32);
        assert_eq!(auto(&on(AdapterKind::Cpu, true)), Precision::F32);
        let err = effective_precision(&on(AdapterKind::Integrated, false), Precision::F16)
            .unwrap_err()
            .to_string();
        assert!(err.contains("does not support f16"), "{err}");
        assert!(effective_precision(&on(AdapterKind::Discrete, true), Precision::Bf16).is_err());
        // int8 is a CPU path: refused on GPUs with a line that says so.
        let err = effective_precision(&on(AdapterKind::Discrete, true), Precision::Int8)
            .unwrap_err()
            .to_string();
        assert!(err.contains("int8 runs on the CPU only"), "{err}");
        assert_eq!("W8A8".parse::<Precision>().unwrap(), Precision::Int8);
        assert_eq!(Precision::Int8.to_string(), "int8");
    }

    #[test]
    fn parses_wgpu_specs() {
        assert_eq!(
            "wgpu".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Wgpu(None)
        );
        assert_eq!(
            "wgpu:1,0".parse::<DeviceSpec>().unwrap(),
            DeviceSpec::Wgpu(Some(vec![1, 0]))
        );
        assert!("wgpu:".parse::<DeviceSpec>().is_err());
        assert!("wgpu:a".parse::<DeviceSpec>().is_err());
    }

    #[test]
    fn auto_without_cuda_runs_on_cpu() {
        if cuda_device_count().unwrap_or(0) == 0 {
            assert_eq!(
                resolve(&DeviceSpec::Auto, Precision::Auto, Some(2), None, None).unwrap(),
                Devices::Cpu { workers: 2 }
            );
            assert!(resolve(&DeviceSpec::Cuda(None), Precision::Auto, None, None, None).is_err());
        }
    }
}
