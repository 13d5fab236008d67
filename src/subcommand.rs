//! The one shape every subcommand has, so that `main` reads as a table.
//!
//! A subcommand's options are built from its arguments and the config (`src/cli.rs`,
//! `src/train/cli.rs`; Hub ids are resolved to cached paths there), then [`run`] takes it
//! through the same three stages:
//! 1. [`Subcommand::check`]: every input it will read is there and of the right kind, every
//!    place it will write can be written, the models fit together. Nothing is created, and a
//!    wrong flag is said in a second, not after hours of embedding.
//! 2. [`Subcommand::claim`]: its output created and locked for the whole command, so a second
//!    writer is refused rather than mixed in.
//! 3. [`Subcommand::execute`]: the step itself, its summary logged.
//!
//! A step that runs inside another (`run`'s translate, embeddings and predict) is the bare
//! work of stage 3: the outer command has checked everything once and holds the lock.

use anyhow::Result;

use crate::io::output_lock::OutputLock;

/// One subcommand, ready to run (see the module's header for the stages).
pub trait Subcommand {
    /// Everything the command reads and writes, checked before anything is created.
    fn check(&self) -> Result<()>;

    /// The command's output, created and locked until the returned lock is dropped; `None` for
    /// a command with no output of its own (it prints, or its files have locks of their own).
    fn claim(&self) -> Result<Option<OutputLock>>;

    /// The work, its summary logged.
    fn execute(&self) -> Result<Finished>;
}

/// How a command finished: `failed` records were left out (listed in a failed.tsv), and the
/// process exits with 2 instead of 0 when there are any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Finished {
    pub failed: usize,
}

impl Finished {
    /// Every record processed.
    pub const COMPLETE: Finished = Finished { failed: 0 };
}

/// Check, claim, execute: the order every subcommand runs in. The lock is held until the
/// work has ended, however it ends.
pub fn run(command: &dyn Subcommand) -> Result<Finished> {
    command.check()?;
    let _lock = command.claim()?;
    command.execute()
}
