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
    /// Extra detail after the count (rates per device), on the bar and in log lines.
    detail: String,
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
            detail: String::new(),
        }
    }

    pub fn set_detail(&mut self, detail: String) {
        if let Some(bar) = &self.bar {
            bar.set_message(format!("{} {detail}", self.unit));
        }
        self.detail = detail;
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
                    "{}: {}/{} {} ({:.1} {}/s, ETA {}) {}",
                    self.what,
                    self.done,
                    t,
                    self.unit,
                    rate,
                    self.unit,
                    eta(t.saturating_sub(self.done), rate),
                    self.detail
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

    pub fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

/// "1h02m", "4m10s", "12s", or "?" before there is a rate.
fn eta(left: u64, rate: f64) -> String {
    if rate <= 0.0 {
        return "?".into();
    }
    let s = (left as f64 / rate).round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn eta_reads_naturally() {
        assert_eq!(super::eta(10, 0.0), "?");
        assert_eq!(super::eta(10, 2.0), "5s");
        assert_eq!(super::eta(250, 1.0), "4m10s");
        assert_eq!(super::eta(3720, 1.0), "1h02m");
    }
}
