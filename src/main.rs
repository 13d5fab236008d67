use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

use virnucpro::cli::{Cli, Command};
use virnucpro::output::ensure_dir;
use virnucpro::output_lock::OutputLock;
use virnucpro::{config, embed, pipeline, predict, preflight, translate};

/// Exit codes (README "Exit codes"): 0 success; 1 error; 2 finished, some records failed (listed
/// in a failed.tsv); 64 usage error (EX_USAGE: a wrong flag or value, nothing was run);
/// 128 + N stopped by signal N after saving its work.
const EXIT_ERROR: u8 = 1;
const EXIT_SOME_FAILED: u8 = 2;
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    // The config file changes what clap accepts (its values become the flags' defaults), so it
    // is found and read before parsing.
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let mut command = Cli::command();
    if let Some(path) = config::config_path(&args) {
        match config::Config::load(&path) {
            Ok(cfg) => command = cfg.apply(command),
            Err(e) => {
                eprintln!("error: {e:#}");
                return ExitCode::from(EXIT_ERROR);
            }
        }
    }
    // Not clap's `exit()`: it ends usage errors with 2, which here means "finished with some
    // records failed" (and pipelines accept it as success).
    let cli = match command
        .try_get_matches_from(args)
        .and_then(|m| Cli::from_arg_matches(&m))
    {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            // --help and --version come this way too, as successes.
            return if e.use_stderr() {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    init_logging(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line for the user: the whole context chain, outermost first.
            eprintln!("error: {e:#}");
            // Stopped by a signal after saving its work: the shell's convention, 128 + signal.
            match e.downcast_ref::<virnucpro::interrupt::Interrupted>() {
                Some(i) => ExitCode::from((128 + i.signal).clamp(1, 255) as u8),
                None => ExitCode::from(EXIT_ERROR),
            }
        }
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let level = match (quiet, verbose) {
        (true, _) => "warn",
        (false, 0) => "info",
        (false, 1) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_env("VIRNUCPRO_LOG").unwrap_or_else(|_| EnvFilter::new(level));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Translate(a) => {
            preflight::input_file(&a.input, "input")?;
            let _lock = claim_dir(&a.outdir)?;
            let opts = translate::TranslateOptions {
                input: a.input,
                chunk_size: a.chunk_size as usize,
                outdir: a.outdir,
                threads: a.threads,
                shard_size: a.shard_size.map(|n| n as usize),
                write_chunks: a.write_chunks,
                allow_duplicate_ids: a.allow_duplicate_ids,
                quiet: cli.quiet,
            };
            let summary = translate::run(&opts)?;
            translate::log_summary(&summary, &opts.outdir);
        }
        Command::EmbedDna(a) => {
            check_report(a.report.as_deref())?;
            let summary = embed::models::embed_dna(&a.options(cli.quiet))?;
            embed::finish(&summary, a.report.as_deref())?;
            return Ok(finished_with(summary.failed));
        }
        Command::EmbedProtein(a) => {
            check_report(a.report.as_deref())?;
            let summary = embed::models::embed_protein(&a.options(cli.quiet))?;
            embed::finish(&summary, a.report.as_deref())?;
            return Ok(finished_with(summary.failed));
        }
        Command::Devices(a) => {
            // The test kernels `devices` runs go through the same caches as a run's.
            let cache = std::env::var_os(virnucpro::device::kernel_cache::ENV)
                .map(std::path::PathBuf::from);
            virnucpro::device::kernel_cache::setup(cache.as_deref(), false)?;
            print!("{}", virnucpro::device::describe(a.json)?);
        }
        Command::Predict(a) => {
            for f in a.dna.iter().chain(&a.protein) {
                preflight::input_file(f, "embeddings file")?;
            }
            preflight::input_file(&a.classifier, "--classifier")?;
            let _lock = claim_dir(&a.outdir)?;
            let opts = predict::PredictOptions {
                dna: a.dna,
                protein: a.protein,
                classifier: a.classifier,
                outdir: a.outdir,
                min_viral_fraction: a.min_viral_fraction,
                plot_top: a.plot_top,
            };
            let summary = predict::run(&opts)?;
            predict::log_summary(&summary, &opts.outdir);
        }
        Command::Run(a) => {
            let outcome = pipeline::run(&pipeline::RunOptions {
                input: a.input,
                dnabert: a.dnabert,
                esm: a.esm,
                classifier: a.classifier,
                chunk_size: a.chunk_size as usize,
                outdir: a.outdir,
                compute: a.compute.settings(),
                force: a.force,
                min_viral_fraction: a.min_viral_fraction,
                quiet: cli.quiet,
            })?;
            return Ok(finished_with(outcome.failed));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Exit code 0 when every record was processed, 2 when the step finished without some (listed
/// in a failed.tsv).
fn finished_with(failed: usize) -> ExitCode {
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SOME_FAILED)
    }
}

/// An output directory checked, created and locked for the whole command.
fn claim_dir(outdir: &std::path::Path) -> anyhow::Result<OutputLock> {
    preflight::output_dir(outdir, "--outdir")?;
    ensure_dir(outdir)?;
    OutputLock::dir(outdir, "--outdir")
}

/// `--report` must be writable before the embedding starts, not after it.
fn check_report(report: Option<&std::path::Path>) -> anyhow::Result<()> {
    match report {
        Some(path) => preflight::output_file(path, "--report"),
        None => Ok(()),
    }
}
