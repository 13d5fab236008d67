//! A model loaded once per device and process, then reused by every input the process embeds.
//!
//! Loading ESM-2 3B (11 GB read, converted, uploaded) can take longer than embedding a small
//! sample. `embed-* --manifest` embeds many inputs in one process: the engine asks its loader
//! for a model at the start of each input, and [`Reusing`] answers with the copy it already
//! holds for that backend and device (a clone shares the tensors). It also counts the loads and
//! their seconds, which every report carries (`model_loads`, `model_load_seconds`), so the
//! saving is measured rather than assumed.

use std::any::Any;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;

use super::engine::EncoderLoader;
use crate::models::ops::{Matmul, ModelOps};

/// One kept model: the device it is on, what its products multiply in (a bf16 one holds
/// packed weights) and the model, the device and model typed by their backend.
struct Kept {
    device: Box<dyn Any + Send + Sync>,
    matmul: Matmul,
    model: Box<dyn Any + Send + Sync>,
}

/// `L`, loading each backend/device's model once and handing out clones after.
pub(crate) struct Reusing<L> {
    inner: L,
    kept: Mutex<Vec<Kept>>,
    /// Free memory per CUDA device as read just after its model was first loaded.
    free: Mutex<Vec<(usize, Option<u64>)>>,
    loads: AtomicUsize,
    load_nanos: AtomicU64,
}

/// Loads so far and their seconds, to report one input's share as a difference.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub(crate) struct LoadCount {
    pub loads: usize,
    pub seconds: f64,
}

impl<L> Reusing<L> {
    pub fn new(inner: L) -> Self {
        Self {
            inner,
            kept: Mutex::new(Vec::new()),
            free: Mutex::new(Vec::new()),
            loads: AtomicUsize::new(0),
            load_nanos: AtomicU64::new(0),
        }
    }

    pub fn count(&self) -> LoadCount {
        LoadCount {
            loads: self.loads.load(Ordering::Relaxed),
            seconds: self.load_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

impl<L: EncoderLoader> EncoderLoader for Reusing<L> {
    type Model<B: ModelOps> = L::Model<B>;
    const GPU_BATCH_TOKENS: usize = L::GPU_BATCH_TOKENS;

    /// Read once per device, after the first load: a later input would otherwise see the
    /// memory the backend's pools kept from the inputs before it as used, get smaller batches
    /// than the same input alone, and run slower.
    fn free_after_load(&self, gpu: usize, read: impl FnOnce() -> Option<u64>) -> Option<u64> {
        let mut free = self.free.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&(_, bytes)) = free.iter().find(|(g, _)| *g == gpu) {
            return bytes;
        }
        let bytes = read();
        free.push((gpu, bytes));
        bytes
    }

    fn load<B: ModelOps>(&self, device: &B::Device, matmul: Matmul) -> Result<L::Model<B>> {
        // Looked up under the lock, loaded outside it: each GPU's worker loads its own model
        // at the same time as the others, as without reuse (one worker per device, so no
        // device is loaded twice).
        let found = self
            .kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find_map(|k| {
                let same =
                    k.device.downcast_ref::<B::Device>() == Some(device) && k.matmul == matmul;
                same.then(|| k.model.downcast_ref::<L::Model<B>>().cloned())
                    .flatten()
            });
        if let Some(model) = found {
            return Ok(model);
        }
        let started = Instant::now();
        let model = self.inner.load::<B>(device, matmul)?;
        self.load_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.loads.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.push(Kept {
            device: Box::new(device.clone()),
            matmul,
            model: Box::new(model.clone()),
        });
        Ok(model)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embed::encoders::EsmLoader;
    use crate::embed::engine::PooledEncoder;

    type Cpu = burn::backend::Flex;

    /// The second request for the same device gets the kept model: one load, counted once;
    /// the free memory is read once per GPU.
    #[test]
    fn a_device_s_model_is_loaded_once() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/esm2_tiny");
        let loader = Reusing::new(EsmLoader(dir));
        let device = Default::default();
        let a = loader.load::<Cpu>(&device, Matmul::F32).unwrap();
        let b = loader.load::<Cpu>(&device, Matmul::F32).unwrap();
        assert_eq!(a.dim(), b.dim());
        let count = loader.count();
        assert_eq!(count.loads, 1);
        assert!(count.seconds > 0.0);
        assert_eq!(loader.free_after_load(0, || Some(10)), Some(10));
        assert_eq!(loader.free_after_load(0, || Some(3)), Some(10), "read once");
        assert_eq!(loader.free_after_load(1, || None), None);
    }
}
