//! Progress for long steps: an `indicatif` spinner/bar when stderr is a terminal, plain log lines
//! every so often when it is not (Nextflow, SLURM logs), so logs stay readable.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    what: &'static str,
    unit: &'static str,
    total: Option<u64>,
    done: u64,
    started: Instant,
    last_log: Instant,
    every: Duration,
}

impl Progress {
    /// `what` names the step ("translate"), `unit` the counted things ("bp", "sequences").
    pub fn new(what: &'static str, unit: &'static str, total: Option<u64>, quiet: bool) -> Self {
        let bar = if !quiet && std::io::stderr().is_terminal() {
            let bar = match total {
                Some(t) => {
                    let b = ProgressBar::new(t);
                    b.set_style(
                        ProgressStyle::with_template(
                            "{prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} {msg} ({per_sec}, ETA {eta})",
                        )
                        .expect("valid template"),
                    );
                    b
                }
                None => {
                    let b = ProgressBar::new_spinner();
                    b.set_style(
                        ProgressStyle::with_template(
                            "{prefix} [{elapsed_precise}] {spinner} {human_pos} {msg} ({per_sec})",
                        )
                        .expect("valid template"),
                    );
                    b
                }
            };
            bar.set_prefix(what);
            bar.set_message(unit);
            bar.enable_steady_tick(Duration::from_millis(200));
            Some(bar)
        } else {
            None
        };
        let now = Instant::now();
        Self {
            bar,
            what,
            unit,
            total,
            done: 0,
            started: now,
            last_log: now,
            every: Duration::from_secs(30),
        }
    }

    pub fn inc(&mut self, n: u64) {
        self.done += n;
        if let Some(bar) = &self.bar {
            bar.inc(n);
        } else if self.last_log.elapsed() >= self.every {
            self.last_log = Instant::now();
            let rate = self.done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            match self.total {
                Some(t) => tracing::info!(
                    "{}: {}/{} {} ({:.0} {}/s)",
                    self.what,
                    self.done,
                    t,
                    self.unit,
                    rate,
                    self.unit
                ),
                None => tracing::info!(
                    "{}: {} {} ({:.0} {}/s)",
                    self.what,
                    self.done,
                    self.unit,
                    rate,
                    self.unit
                ),
            }
        }
    }

    pub fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
