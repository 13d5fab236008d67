//! Progress for long steps and downloads: an `indicatif` spinner/bar when stderr is a terminal,
//! plain log lines every so often when it is not (Nextflow, SLURM logs), so logs stay readable.
//! The interval is 30 s, or `VIRNUCPRO_PROGRESS_SECS`.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};

pub struct Progress {
    bar: Option<ProgressBar>,
    what: String,
    unit: &'static str,
    total: Option<u64>,
    done: u64,
    /// Where this process started counting (a resumed download's bytes already there), so the
    /// rate is of this process's work.
    start: u64,
    started: Instant,
    last_log: Instant,
    every: Duration,
    /// Extra detail after the count (rates per device), on the bar and in log lines.
    detail: String,
}

/// The counted things in bytes: shown as "1.2 GB" rather than a count.
pub const BYTES: &str = "bytes";

impl Progress {
    /// `what` names the step ("translate"), `unit` the counted things ("bp", "sequences").
    pub fn new(what: &'static str, unit: &'static str, total: Option<u64>, quiet: bool) -> Self {
        Self::starting_at(what.to_string(), unit, total, 0, quiet)
    }

    /// A download of `total` bytes (when known), `done` of them already there.
    pub fn bytes(what: String, total: Option<u64>, done: u64, quiet: bool) -> Self {
        Self::starting_at(what, BYTES, total, done, quiet)
    }

    fn starting_at(
        what: String,
        unit: &'static str,
        total: Option<u64>,
        done: u64,
        quiet: bool,
    ) -> Self {
        let bar = if !quiet && std::io::stderr().is_terminal() {
            let bar = match total {
                Some(t) if unit == BYTES => {
                    let b = ProgressBar::new(t);
                    b.set_style(
                        ProgressStyle::with_template(
                            "{prefix} [{elapsed_precise}] {wide_bar} {bytes}/{total_bytes} ({bytes_per_sec}, ETA {eta})",
                        )
                        .expect("valid template"),
                    );
                    b
                }
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
            bar.set_prefix(what.clone());
            bar.set_message(unit);
            bar.set_position(done);
            bar.enable_steady_tick(Duration::from_millis(200));
            Some(bar)
        } else {
            None
        };
        let now = Instant::now();
        let every = std::env::var("VIRNUCPRO_PROGRESS_SECS")
            .ok()
            .and_then(|v| v.parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map(Duration::from_secs_f64)
            .unwrap_or(Duration::from_secs(30));
        Self {
            bar,
            what,
            unit,
            total,
            done,
            start: done,
            started: now,
            last_log: now,
            every,
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
        self.set(self.done + n);
    }

    /// The count so far (a download's bytes on disk).
    pub fn set(&mut self, done: u64) {
        self.done = done;
        if let Some(bar) = &self.bar {
            bar.set_position(done);
        } else if self.last_log.elapsed() >= self.every {
            self.last_log = Instant::now();
            let rate = self.done.saturating_sub(self.start) as f64
                / self.started.elapsed().as_secs_f64().max(1e-9);
            if self.unit == BYTES {
                let of = match self.total {
                    Some(t) if t > 0 => format!(
                        " of {} ({:.0}%), ETA {}",
                        human_bytes(t),
                        100.0 * self.done as f64 / t as f64,
                        eta(t.saturating_sub(self.done), rate)
                    ),
                    _ => String::new(),
                };
                tracing::info!(
                    "{}: {}{of}, {}/s",
                    self.what,
                    human_bytes(self.done),
                    human_bytes(rate as u64)
                );
                return;
            }
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

/// "11.4 GB" (decimal, as the Hub shows sizes).
pub fn human_bytes(n: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", units[u])
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

    #[test]
    fn sizes_read_like_the_hub() {
        assert_eq!(super::human_bytes(999), "999 B");
        assert_eq!(super::human_bytes(11_356_000_000), "11.4 GB");
    }
}
