//! The embedding engine shared by both models: one worker thread per device, each with its own
//! model, all pulling token-budget batches from one shared queue (so a slower device never idles
//! the rest). Results go over a channel to the calling thread, where a [`Coordinator`] places
//! them, checkpoints them and reports progress, so no worker ever waits on a disk write.
//!
//! Faults: a batch that fails (a CUDA out-of-memory, a panic inside the backend, non-finite
//! values) is split in two and both halves go back to the front of the queue; a sequence that
//! fails alone is reported as failed and the run goes on. A worker that fails
//! [`MAX_CONSECUTIVE_FAILURES`] sequences in a row stops the run: that is a broken device or
//! model, not bad records.
//!
//! On the CPU every worker runs its kernels on a single-threaded pool: Burn's CPU matmul gains
//! little from threads at these sizes, so one worker per core with its own batches is faster
//! than one worker using all cores (measured; see docs/architecture.md, "The engine").

use std::collections::VecDeque;
use std::ops::ControlFlow;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Condvar, Mutex, Once};
use std::thread::Scope;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use burn::tensor::{backend::Backend, Tensor};

use crate::device::dtype::compute_plan;
use crate::device::placement::DtypeReadBack;
use crate::device::{BackendTask, Precision};
use crate::models::ops::{Matmul, ModelOps};
use crate::models::shape::ModelShape;
use crate::models::tensor_to_f32;

/// Single-sequence failures in a row, on one worker, that stop the run.
pub const MAX_CONSECUTIVE_FAILURES: usize = 16;

/// A model that turns a batch of token-id sequences into one pooled vector each.
pub trait PooledEncoder<B: Backend>: Send + Sync {
    /// `[batch.len(), dim]`, padding handled inside.
    fn embed(&self, batch: &[Vec<u32>]) -> Tensor<B, 2>;
    /// The pooled vector's length.
    fn dim(&self) -> usize;
    fn shape(&self) -> ModelShape;
    /// What the loaded model computes in, read back rather than assumed: the dtype of an
    /// uploaded weight and of one activation.
    fn dtypes(&self) -> DtypeReadBack;
}

/// Loads a model on a device; called once per worker (CPU workers share one copy).
pub trait EncoderLoader: Sync {
    /// `'static` so that a loaded model can be kept for the next input of the same process
    /// (`encoders::Reusing`): the models own their tensors.
    type Model<B: ModelOps>: PooledEncoder<B> + Clone + 'static;
    /// Padded tokens per batch on a GPU whose free memory is not known.
    const GPU_BATCH_TOKENS: usize;
    /// The model on `device`, its projections' products in `matmul` (bf16 products on the
    /// CPU load packed bf16 weights).
    fn load<B: ModelOps>(&self, device: &B::Device, matmul: Matmul) -> Result<Self::Model<B>>;
    /// The free memory of CUDA device `gpu` once the model is loaded there (`read` asks the
    /// driver), which sizes the batches.
    fn free_after_load(&self, _gpu: usize, read: impl FnOnce() -> Option<u64>) -> Option<u64> {
        read()
    }
}

/// Receives the workers' results, on the thread that started the job.
pub trait Coordinator {
    /// The first model is loaded (so its size is known and, on a GPU, the memory it left
    /// free): return the batches to run, as indices into the job's tokens.
    fn plan(
        &mut self,
        dim: usize,
        shape: ModelShape,
        free_bytes: Option<u64>,
    ) -> Result<Vec<Vec<usize>>>;
    /// A batch is embedded: `rows` is `[batch.len(), dim]` row-major.
    fn done(&mut self, worker: usize, batch: &[usize], rows: &[f32], busy: Duration) -> Result<()>;
    /// Sequence `index` failed alone.
    fn failed(&mut self, worker: usize, index: usize, reason: &str);
    /// Called about twice a second while waiting (time-based checkpoints, progress).
    fn tick(&mut self) -> Result<()>;
}

/// Injected faults ([`crate::runtime::fault_injection`]: test builds only), read once per job: the
/// tests fail chosen records and slow batches down to prove the fault handling without a GPU.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// A batch holding one of these fails (like an OOM when it holds several sequences, like a
    /// bad record when alone).
    fail_ids: Vec<String>,
    /// Sleep before each batch.
    delay: Option<Duration>,
    /// The device's capacity in padded tokens: a larger batch fails as out of memory.
    device_tokens: Option<usize>,
}

impl Faults {
    /// The faults this build and environment inject (none in a `cargo build` binary).
    pub fn injected() -> Self {
        Self {
            fail_ids: crate::runtime::fault_injection::fail_ids(),
            delay: crate::runtime::fault_injection::batch_delay(),
            device_tokens: crate::runtime::fault_injection::device_tokens(),
        }
    }

    fn before_batch(&self, batch: &[usize], ids: &[String], tokens: &[Vec<u32>]) {
        if let Some(d) = self.delay {
            std::thread::sleep(d);
        }
        if let Some(capacity) = self.device_tokens {
            let longest = batch.iter().map(|&i| tokens[i].len()).max().unwrap_or(0);
            let padded = longest * batch.len();
            if padded > capacity {
                // What CubeCL's allocator raises (a panic on the device thread carrying
                // `LaunchError::OutOfMemory`'s text), here raised where the batch enters the
                // backend.
                panic!(
                    "An out-of-memory error happened during launch\nCaused by:\n  injected: \
                     {padded} padded tokens on a device that holds {capacity}"
                );
            }
        }
        if let Some(&i) = batch.iter().find(|&&i| self.fail_ids.contains(&ids[i])) {
            if batch.len() > 1 {
                panic!(
                    "CUDA_ERROR_OUT_OF_MEMORY (injected: batch holds {})",
                    ids[i]
                );
            }
            panic!("injected failure for {}", ids[i]);
        }
    }
}

/// One embedding job: all sequences' tokens, who plans and collects, and when to stop.
pub struct EmbedJob<'a, L: EncoderLoader, C: Coordinator> {
    pub loader: &'a L,
    pub tokens: &'a [Vec<u32>],
    pub ids: &'a [String],
    /// One name per device, for messages.
    pub names: &'a [String],
    pub coordinator: &'a mut C,
    /// Non-zero (a signal number) = take no new batch; batches in flight still finish.
    pub stop: &'a AtomicUsize,
    /// The CUDA index of the first device, to ask its free memory after the model is loaded.
    pub first_gpu: Option<usize>,
    /// What the devices were set to compute in: every loaded model must read back the same.
    pub precision: Precision,
    pub faults: Faults,
}

enum Event {
    Done {
        worker: usize,
        batch: Vec<usize>,
        rows: Vec<f32>,
        busy: Duration,
    },
    Failed {
        worker: usize,
        index: usize,
        reason: String,
    },
    Fatal(anyhow::Error),
}

/// The shared queue. Failed batches come back to its front as halves; it is drained when it is
/// empty and no batch is in flight (a batch in flight may still come back split).
struct WorkQueue {
    state: Mutex<QueueState>,
    changed: Condvar,
}

struct QueueState {
    items: VecDeque<Vec<usize>>,
    in_flight: usize,
    closed: bool,
}

impl WorkQueue {
    fn new(batches: Vec<Vec<usize>>) -> Self {
        Self {
            state: Mutex::new(QueueState {
                items: batches.into(),
                in_flight: 0,
                closed: false,
            }),
            changed: Condvar::new(),
        }
    }

    fn pop(&self, stop: &AtomicUsize) -> Option<Vec<usize>> {
        let mut s = self.state.lock().unwrap();
        loop {
            if s.closed || stop.load(Ordering::Relaxed) != 0 {
                return None;
            }
            if let Some(b) = s.items.pop_front() {
                s.in_flight += 1;
                return Some(b);
            }
            if s.in_flight == 0 {
                return None;
            }
            s = self
                .changed
                .wait_timeout(s, Duration::from_millis(200))
                .unwrap()
                .0;
        }
    }

    /// A batch in flight is finished; `retry` goes back to the front, in order.
    fn finish(&self, retry: Vec<Vec<usize>>) {
        let mut s = self.state.lock().unwrap();
        for b in retry.into_iter().rev() {
            s.items.push_front(b);
        }
        s.in_flight -= 1;
        self.changed.notify_all();
    }

    fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.changed.notify_all();
    }
}

const WORKER_PREFIX: &str = "embed-worker-";

/// Panics on worker threads are caught and reported as batch failures; keep the default hook
/// from printing each one as if the program had crashed.
fn quiet_worker_panics() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let on_worker = std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with(WORKER_PREFIX));
            if on_worker {
                tracing::debug!("worker panic: {info}");
            } else {
                previous(info);
            }
        }));
    });
}

fn panic_message(p: Box<dyn std::any::Any + Send>) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "panic without a message".to_string()
    }
}

/// One line of a possibly multi-line backend message, for failed.tsv and logs.
fn one_line(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if s.len() > 300 {
        format!("{}…", &s[..s.floor_char_boundary(300)])
    } else {
        s
    }
}

/// Embed one batch; any error or panic becomes a reason.
fn run_batch<B: Backend, M: PooledEncoder<B>>(
    model: &M,
    batch: &[usize],
    tokens: &[Vec<u32>],
    ids: &[String],
    faults: &Faults,
    dim: usize,
) -> Result<Vec<f32>, String> {
    let attempt = catch_unwind(AssertUnwindSafe(|| -> Result<Vec<f32>> {
        faults.before_batch(batch, ids, tokens);
        let seqs: Vec<Vec<u32>> = batch.iter().map(|&i| tokens[i].clone()).collect();
        let rows = tensor_to_f32(model.embed(&seqs))?;
        if rows.len() != batch.len() * dim {
            bail!(
                "model returned {} values for a batch of {} (dim {dim})",
                rows.len(),
                batch.len()
            );
        }
        if rows.iter().any(|v| !v.is_finite()) {
            bail!("non-finite values in the embeddings (overflow in half precision? try --precision f32)");
        }
        Ok(rows)
    }));
    match attempt {
        Ok(Ok(rows)) => Ok(rows),
        Ok(Err(e)) => Err(one_line(&format!("{e:#}"))),
        Err(p) => Err(one_line(&panic_message(p))),
    }
}

impl<L: EncoderLoader, C: Coordinator> BackendTask for EmbedJob<'_, L, C> {
    /// The dtypes read back from the first device's model.
    type Output = DtypeReadBack;

    fn run<B: ModelOps>(self, devices: Vec<B::Device>, cpu: bool) -> Result<DtypeReadBack> {
        let EmbedJob {
            loader,
            tokens,
            ids,
            names,
            coordinator,
            stop,
            first_gpu,
            precision,
            faults,
        } = self;
        let name_of = |w: usize| {
            names
                .get(w)
                .cloned()
                .unwrap_or_else(|| format!("worker {w}"))
        };
        // The first model is loaded before any worker starts: bad weights fail fast, its
        // dimension sizes the output, and on a GPU the memory it leaves sizes the batches.
        // CPU workers share it (tensors are reference-counted); every other GPU loads its own.
        let (tensors, matmul) = compute_plan(precision, cpu);
        let first = loader.load::<B>(&devices[0], matmul)?;
        let read_back = first.dtypes();
        read_back.check(tensors, &name_of(0))?;
        let dim = first.dim();
        // The weights' uploads must be finished before the free memory is read.
        if !cpu {
            let _ = B::sync(&devices[0]);
        }
        let free = first_gpu
            .and_then(|gpu| loader.free_after_load(gpu, || crate::device::cuda::free_memory(gpu)));
        let batches = coordinator.plan(dim, first.shape(), free)?;
        if batches.is_empty() {
            return Ok(read_back);
        }
        quiet_worker_panics();
        let workers = devices.len().min(batches.len()).max(1);
        let queue = WorkQueue::new(batches);
        let crew = Crew {
            loader,
            first: &first,
            tokens,
            ids,
            stop,
            queue: &queue,
            faults: &faults,
            precision,
            matmul,
            dim,
            cpu,
        };
        let (tx, rx) = mpsc::channel::<Event>();
        let fatal = std::thread::scope(|scope| -> Option<anyhow::Error> {
            for (w, device) in devices.into_iter().take(workers).enumerate() {
                let (crew, tx, name) = (&crew, tx.clone(), name_of(w));
                let spawned = spawn_worker(scope, w, cpu, move || crew.work(w, device, name, tx));
                if let Err(e) = spawned {
                    queue.close();
                    return Some(anyhow!("cannot start worker thread {w}: {e}"));
                }
            }
            drop(tx);
            collect(rx, coordinator, &queue)
        });
        match fatal {
            Some(e) => Err(e),
            None => Ok(read_back),
        }
    }
}

/// What every worker of a job shares.
struct Crew<'a, B: ModelOps, L: EncoderLoader> {
    loader: &'a L,
    /// The model loaded before the plan: the first device's, and every CPU worker's.
    first: &'a L::Model<B>,
    tokens: &'a [Vec<u32>],
    ids: &'a [String],
    stop: &'a AtomicUsize,
    queue: &'a WorkQueue,
    faults: &'a Faults,
    precision: Precision,
    /// What the projections multiply in ([`compute_plan`]).
    matmul: Matmul,
    dim: usize,
    cpu: bool,
}

impl<B: ModelOps, L: EncoderLoader> Crew<'_, B, L> {
    /// Worker `w` on `device`: batches from the queue until it is drained, closed or stopped,
    /// each result sent to `tx`. A model that does not load here stops the whole run: the
    /// other devices would carry on with a share they were not sized for, and the device is
    /// likely broken.
    fn work(&self, w: usize, device: B::Device, name: String, tx: Sender<Event>) {
        let model = match self.model(w, &device, &name) {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.send(Event::Fatal(
                    e.context(format!("loading the model on {name}")),
                ));
                self.queue.close();
                return;
            }
        };
        let mut worker = Worker {
            crew: self,
            w,
            device,
            name,
            tx,
            in_a_row: 0,
        };
        while let Some(batch) = self.queue.pop(self.stop) {
            let started = Instant::now();
            let result = run_batch(&model, &batch, self.tokens, self.ids, self.faults, self.dim);
            if worker.settle(batch, result, started.elapsed()).is_break() {
                return;
            }
        }
    }

    /// Worker `w`'s model: the first one on the CPU (tensors are reference-counted) and on the
    /// first device; elsewhere its own, which must compute in what the devices were set to.
    fn model(&self, w: usize, device: &B::Device, name: &str) -> Result<L::Model<B>> {
        if self.cpu || w == 0 {
            return Ok(self.first.clone());
        }
        let model = self.loader.load::<B>(device, self.matmul)?;
        model.dtypes().check(self.precision, name)?;
        Ok(model)
    }
}

/// One worker's side of the queue: where its results go, and its single-sequence failures in
/// a row.
struct Worker<'a, B: ModelOps, L: EncoderLoader> {
    crew: &'a Crew<'a, B, L>,
    w: usize,
    device: B::Device,
    name: String,
    tx: Sender<Event>,
    in_a_row: usize,
}

impl<B: ModelOps, L: EncoderLoader> Worker<'_, B, L> {
    /// What a batch's result means: its rows are handed on; a failed batch of several goes back
    /// to the queue as two halves; a sequence that fails alone is reported, and left out,
    /// unless it makes [`MAX_CONSECUTIVE_FAILURES`] in a row, which stops the run (`Break`:
    /// this worker takes no more batches).
    fn settle(
        &mut self,
        batch: Vec<usize>,
        result: Result<Vec<f32>, String>,
        busy: Duration,
    ) -> ControlFlow<()> {
        let (queue, name) = (self.crew.queue, &self.name);
        match result {
            Ok(rows) => {
                self.in_a_row = 0;
                queue.finish(Vec::new());
                let _ = self.tx.send(Event::Done {
                    worker: self.w,
                    batch,
                    rows,
                    busy,
                });
            }
            Err(reason) if batch.len() > 1 => {
                tracing::warn!(
                    "a batch of {} sequences failed on {name} ({reason}); retrying it as two halves",
                    batch.len()
                );
                // Give the failed batch's buffers back to the device before the halves run
                // (CubeCL's pools keep them otherwise).
                if !self.crew.cpu {
                    B::memory_cleanup(&self.device);
                }
                let (a, b) = batch.split_at(batch.len() / 2);
                queue.finish(vec![a.to_vec(), b.to_vec()]);
            }
            Err(reason) => {
                self.in_a_row += 1;
                queue.finish(Vec::new());
                if self.in_a_row >= MAX_CONSECUTIVE_FAILURES {
                    let _ = self.tx.send(Event::Fatal(anyhow!(
                        "{name} failed {} sequences in a row, last {}: {reason}; \
                         the device or model is broken, stopping",
                        self.in_a_row,
                        self.crew.ids[batch[0]]
                    )));
                    queue.close();
                    return ControlFlow::Break(());
                }
                let _ = self.tx.send(Event::Failed {
                    worker: self.w,
                    index: batch[0],
                    reason,
                });
            }
        }
        ControlFlow::Continue(())
    }
}

/// Start worker `w`'s thread, named so that its panics stay quiet ([`quiet_worker_panics`]).
/// A CPU worker runs its kernels on a single-threaded pool of its own (see the module's note).
fn spawn_worker<'scope>(
    scope: &'scope Scope<'scope, '_>,
    w: usize,
    cpu: bool,
    work: impl FnOnce() + Send + 'scope,
) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name(format!("{WORKER_PREFIX}{w}"))
        .spawn_scoped(scope, move || {
            if cpu {
                match rayon::ThreadPoolBuilder::new()
                    .num_threads(1)
                    .thread_name(move |_| format!("{WORKER_PREFIX}{w}"))
                    .build()
                {
                    Ok(pool) => pool.install(work),
                    Err(e) => {
                        warn_no_pool(&e.to_string());
                        work()
                    }
                }
            } else {
                work()
            }
        })
        .map(drop)
}

/// The calling thread's side: every worker's events to the coordinator, until all workers have
/// ended. The first error (a worker's fatal one, or the coordinator's, such as a checkpoint
/// that cannot be written) closes the queue and is the run's; results that arrive after it
/// still reach the coordinator, so their rows are saved for the next run.
fn collect<C: Coordinator>(
    rx: Receiver<Event>,
    coordinator: &mut C,
    queue: &WorkQueue,
) -> Option<anyhow::Error> {
    let mut fatal: Option<anyhow::Error> = None;
    let keep = |r: Result<()>, fatal: &mut Option<anyhow::Error>| {
        if let Err(e) = r {
            queue.close();
            fatal.get_or_insert(e);
        }
    };
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(Event::Done {
                worker,
                batch,
                rows,
                busy,
            }) => keep(coordinator.done(worker, &batch, &rows, busy), &mut fatal),
            Ok(Event::Failed {
                worker,
                index,
                reason,
            }) => coordinator.failed(worker, index, &reason),
            Ok(Event::Fatal(e)) => keep(Err(e), &mut fatal),
            Err(RecvTimeoutError::Timeout) => keep(coordinator.tick(), &mut fatal),
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    fatal
}

/// A CPU worker whose single-thread pool cannot start still runs (on rayon's global pool).
fn warn_no_pool(why: &str) {
    tracing::warn!(
        "cannot start a single-threaded pool for a CPU worker ({why}); using the shared pool"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_drains_only_when_nothing_is_in_flight() {
        let stop = AtomicUsize::new(0);
        let q = WorkQueue::new(vec![vec![0, 1, 2, 3]]);
        let b = q.pop(&stop).unwrap();
        // The batch failed: its halves come back first, in order.
        q.finish(vec![b[..2].to_vec(), b[2..].to_vec()]);
        assert_eq!(q.pop(&stop), Some(vec![0, 1]));
        assert_eq!(q.pop(&stop), Some(vec![2, 3]));
        q.finish(Vec::new());
        q.finish(Vec::new());
        assert_eq!(q.pop(&stop), None);
    }

    #[test]
    fn stop_takes_no_new_batch() {
        let stop = AtomicUsize::new(15);
        let q = WorkQueue::new(vec![vec![0]]);
        assert_eq!(q.pop(&stop), None);
    }

    #[test]
    fn reasons_are_one_line() {
        assert_eq!(one_line("a\n  b\tc"), "a b c");
        assert!(one_line(&"x".repeat(1000)).len() < 310);
    }
}
