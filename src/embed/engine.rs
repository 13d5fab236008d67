//! The embedding engine shared by both models: one worker per device, each with its own model,
//! all pulling token-budget batches from one shared queue (so a slower device never idles the
//! rest), results scattered back to input order.
//!
//! On the CPU every worker runs its kernels on a single-threaded pool: Burn's CPU matmul gains
//! little from threads at these sizes, so one worker per core with its own batches is faster
//! than one worker using all cores (measured; see ARCHITECTURE.md).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;

use anyhow::{anyhow, Context, Result};
use burn::tensor::{backend::Backend, Tensor};

use crate::device::BackendTask;
use crate::progress::Progress;

/// A model that turns a batch of token-id sequences into one pooled vector each.
pub trait PooledEncoder<B: Backend>: Send + Sync {
    /// `[batch.len(), dim]`, padding handled inside.
    fn embed(&self, batch: &[Vec<u32>]) -> Tensor<B, 2>;
    /// The pooled vector's length.
    fn dim(&self) -> usize;
}

/// Loads a model on a device; called once per worker (CPU workers share one copy).
pub trait EncoderLoader: Sync {
    type Model<B: Backend>: PooledEncoder<B> + Clone;
    fn load<B: Backend>(&self, device: &B::Device) -> Result<Self::Model<B>>;
}

/// One embedding job: all sequences' tokens and the batches to run them in.
pub struct EmbedJob<'a, L: EncoderLoader> {
    pub loader: &'a L,
    pub tokens: &'a [Vec<u32>],
    pub batches: Vec<Vec<usize>>,
    pub progress: Mutex<Progress>,
}

impl<L: EncoderLoader> BackendTask for EmbedJob<'_, L> {
    /// Row-major `[tokens.len(), dim]` in input order, and `dim`.
    type Output = (Vec<f32>, usize);

    fn run<B: Backend>(self, devices: Vec<B::Device>, cpu: bool) -> Result<(Vec<f32>, usize)> {
        // The first model is loaded before any worker starts: bad weights fail fast, and its
        // dimension sizes the output. CPU workers share it (tensors are reference-counted);
        // every other GPU loads its own copy.
        let first = self.loader.load::<B>(&devices[0])?;
        let dim = first.dim();
        let n = self.tokens.len();
        let out = Mutex::new(vec![0f32; n * dim]);
        if self.batches.is_empty() {
            return Ok((out.into_inner().unwrap(), dim));
        }
        let next = AtomicUsize::new(0);
        let failed = AtomicBool::new(false);
        let first_error: Mutex<Option<anyhow::Error>> = Mutex::new(None);
        let workers = devices.len().min(self.batches.len()).max(1);
        let first = &first;

        std::thread::scope(|scope| {
            for (w, device) in devices.into_iter().take(workers).enumerate() {
                let (next, failed, first_error, out) = (&next, &failed, &first_error, &out);
                let job = &self;
                scope.spawn(move || {
                    let work = || -> Result<()> {
                        let model = if cpu || w == 0 {
                            first.clone()
                        } else {
                            job.loader.load::<B>(&device)?
                        };
                        loop {
                            if failed.load(Ordering::Relaxed) {
                                return Ok(());
                            }
                            let b = next.fetch_add(1, Ordering::Relaxed);
                            let Some(batch) = job.batches.get(b) else {
                                return Ok(());
                            };
                            let seqs: Vec<Vec<u32>> =
                                batch.iter().map(|&i| job.tokens[i].clone()).collect();
                            let pooled = model.embed(&seqs);
                            let rows = tensor_to_f32(pooled)
                                .with_context(|| format!("reading back embeddings of batch {b}"))?;
                            if rows.len() != batch.len() * dim {
                                return Err(anyhow!(
                                    "model returned {} values for a batch of {} (dim {dim})",
                                    rows.len(),
                                    batch.len()
                                ));
                            }
                            let mut out = out.lock().unwrap();
                            for (r, &i) in batch.iter().enumerate() {
                                out[i * dim..(i + 1) * dim]
                                    .copy_from_slice(&rows[r * dim..(r + 1) * dim]);
                            }
                            drop(out);
                            job.progress.lock().unwrap().inc(batch.len() as u64);
                        }
                    };
                    let result = if cpu {
                        match rayon::ThreadPoolBuilder::new().num_threads(1).build() {
                            Ok(pool) => pool.install(work),
                            Err(e) => Err(anyhow!("starting a CPU worker: {e}")),
                        }
                    } else {
                        work()
                    };
                    if let Err(e) = result {
                        failed.store(true, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(e);
                    }
                });
            }
        });
        if let Some(e) = first_error.into_inner().unwrap() {
            return Err(e);
        }
        Ok((out.into_inner().unwrap(), dim))
    }
}

/// Any float tensor (f32, f16, bf16) as `f32` values.
pub fn tensor_to_f32<B: Backend, const D: usize>(t: Tensor<B, D>) -> Result<Vec<f32>> {
    t.into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .map_err(|e| anyhow!("{e:?}"))
}
