//! SIGTERM/SIGINT during a long step: the first signal asks the step to stop at the next batch
//! boundary, save what is done (a checkpoint the next run resumes from) and exit cleanly; a
//! second one ends the process at once. Schedulers (SLURM, Nextflow) send SIGTERM before
//! SIGKILL, so a pre-empted job loses at most the batches in flight.
//!
//! Handlers are installed only while such a step runs ([`StopOnSignal`] removes them when
//! dropped), so short steps keep the default behaviour of dying on the spot.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use anyhow::{Context, Result};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::SigId;

pub struct StopOnSignal {
    which: Arc<AtomicUsize>,
    ids: Vec<SigId>,
}

impl StopOnSignal {
    pub fn install() -> Result<Self> {
        let which = Arc::new(AtomicUsize::new(0));
        let armed = Arc::new(AtomicBool::new(false));
        let mut ids = Vec::new();
        for sig in [SIGINT, SIGTERM] {
            // Order matters: the shutdown check runs first, so only a second signal exits.
            ids.push(
                signal_hook::flag::register_conditional_shutdown(sig, 128 + sig, armed.clone())
                    .context("installing a signal handler")?,
            );
            ids.push(
                signal_hook::flag::register(sig, armed.clone())
                    .context("installing a signal handler")?,
            );
            ids.push(
                signal_hook::flag::register_usize(sig, which.clone(), sig as usize)
                    .context("installing a signal handler")?,
            );
        }
        Ok(Self { which, ids })
    }

    /// The signal received, if any.
    pub fn requested(&self) -> Option<i32> {
        match self.which.load(Ordering::Relaxed) {
            0 => None,
            s => Some(s as i32),
        }
    }

    /// A cheap handle for worker threads.
    pub fn flag(&self) -> Arc<AtomicUsize> {
        self.which.clone()
    }
}

impl Drop for StopOnSignal {
    fn drop(&mut self) {
        for id in self.ids.drain(..) {
            signal_hook::low_level::unregister(id);
        }
    }
}

/// A step stopped by a signal after saving its work; `main` exits with 128 + signal.
#[derive(Debug)]
pub struct Interrupted {
    pub signal: i32,
    pub detail: String,
}

impl fmt::Display for Interrupted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.signal {
            SIGINT => "SIGINT",
            SIGTERM => "SIGTERM",
            _ => "a signal",
        };
        write!(f, "stopped by {name}: {}", self.detail)
    }
}

impl std::error::Error for Interrupted {}
