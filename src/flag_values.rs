//! The values of numeric flags, parsed by the functions here rather than clap's own parsers, so
//! that a bad value is refused saying what the flag means and what to give; a negative one too
//! (the flags take values with a leading hyphen, or clap would read `-1` as a short flag and say
//! only "unexpected argument"), and [`UsageError`], a value refused after parsing. Used by
//! src/cli.rs, src/train/ and `main`; imports nothing of the crate, so all can.

/// A flag's value refused after parsing (out of its range, too large for this machine, at odds
/// with what the output directory holds): `main` exits with 64 (usage error) as for clap's own
/// refusals, since nothing was run and only a changed command can succeed.
#[derive(Debug)]
pub struct UsageError(pub String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// A whole number in `min..=max`, or what is wrong with `s` as `what` and a hint.
pub fn whole(s: &str, what: &str, min: u64, max: u64, hint: &str) -> Result<u64, String> {
    let range = if min == 0 && max == u64::MAX {
        "a whole number, not negative".to_string()
    } else if max == u64::MAX {
        format!("a whole number of at least {min}")
    } else {
        format!("a whole number from {min} to {max}")
    };
    match s.trim().parse::<u64>() {
        Ok(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(format!("{what} must be {range} ({hint})")),
    }
}

/// A real number accepted by `ok` (described by `range`), or what is wrong with `s`.
pub fn real(
    s: &str,
    what: &str,
    ok: fn(f64) -> bool,
    range: &str,
    hint: &str,
) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(v) if ok(v) => Ok(v),
        _ => Err(format!("{what} must be {range} ({hint})")),
    }
}

pub fn chunk_size(s: &str) -> Result<u64, String> {
    let hint = "the published classifiers are for 300 and 500";
    whole(s, "the chunk length", 3, u64::from(u32::MAX), hint)
}

pub fn shard_size(s: &str) -> Result<u64, String> {
    whole(
        s,
        "the ORFs per shard",
        1,
        u64::MAX,
        "leave it out for one file",
    )
}

pub fn threads(s: &str) -> Result<usize, String> {
    let hint = "leave it out to use every core";
    whole(s, "the number of threads", 1, 65_536, hint).map(|n| n as usize)
}

pub fn batch_tokens(s: &str) -> Result<u64, String> {
    let hint = "padded tokens per batch; leave it out to size batches by the device";
    whole(s, "the batch size in tokens", 1, u64::from(u32::MAX), hint)
}

pub fn checkpoint_secs(s: &str) -> Result<u64, String> {
    let hint = "0 saves after every batch; the default is 60";
    whole(s, "the checkpoint interval", 0, u64::MAX, hint)
}

pub fn gpu_lease(s: &str) -> Result<usize, String> {
    let hint = "GPUs this process takes, one per process under Nextflow's local executor";
    whole(s, "the number of GPUs to lease", 1, 4096, hint).map(|n| n as usize)
}

pub fn gpu_lease_timeout(s: &str) -> Result<u64, String> {
    let hint = "seconds to wait for a free GPU; leave it out to wait for ever";
    whole(s, "the lease timeout", 0, u64::MAX, hint)
}

pub fn min_viral_fraction(s: &str) -> Result<f64, String> {
    let hint = "the fraction of a sequence's scored chunks that must be viral; the default is 0.5";
    let fraction = |v: f64| (0.0..=1.0).contains(&v);
    real(s, "the viral fraction", fraction, "from 0 to 1", hint)
}

pub fn plot_top(s: &str) -> Result<usize, String> {
    let hint = "sequences drawn in prediction.svg/.png; the default is 20";
    whole(s, "the number of sequences drawn", 0, 1_000_000, hint).map(|n| n as usize)
}
