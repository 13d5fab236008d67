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
use crate::models::ops::ModelOps;

/// One kept model: the device it is on and the model, both typed by their backend.
struct Kept {
    device: Box<dyn Any + Send + Sync>,
    model: Box<dyn Any + Send + Sync>,
}

/// `L`, loading each backend/device's model once and handing out clones after.
pub(crate) struct Reusing<L> {
    inner: L,
    kept: Mutex<Vec<Kept>>,
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

    fn load<B: ModelOps>(&self, device: &B::Device) -> Result<L::Model<B>> {
        // Looked up under the lock, loaded outside it: each GPU's worker loads its own model
        // at the same time as the others, as without reuse (one worker per device, so no
        // device is loaded twice).
        let found = self
            .kept
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find_map(|k| {
                let same = k.device.downcast_ref::<B::Device>() == Some(device);
                same.then(|| k.model.downcast_ref::<L::Model<B>>().cloned())
                    .flatten()
            });
        if let Some(model) = found {
            return Ok(model);
        }
        let started = Instant::now();
        let model = self.inner.load::<B>(device)?;
        self.load_nanos
            .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
        self.loads.fetch_add(1, Ordering::Relaxed);
        let mut kept = self.kept.lock().unwrap_or_else(|p| p.into_inner());
        kept.push(Kept {
            device: Box::new(device.clone()),
            model: Box::new(model.clone()),
        });
        Ok(model)
    }
}
