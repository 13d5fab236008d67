use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

use virnucpro::cli::{Cli, Command, ModelsCommand};
use virnucpro::device::LazyPlacement;
use virnucpro::hub::{self, ModelKind};
use virnucpro::output::ensure_dir;
use virnucpro::output_lock::OutputLock;
use virnucpro::{config, embed, pipeline, predict, preflight, train, translate};

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
            if let Some(i) = e.downcast_ref::<virnucpro::interrupt::Interrupted>() {
                ExitCode::from((128 + i.signal).clamp(1, 255) as u8)
            } else if e.downcast_ref::<virnucpro::cli::UsageError>().is_some() {
                // A flag's value refused after parsing: a usage error like clap's.
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::from(EXIT_ERROR)
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
            let opts = a.options(cli.quiet);
            let summary = translate::run(&opts)?;
            translate::log_summary(&summary, &opts.outdir);
        }
        Command::EmbedDna(mut a) => {
            a.model = hub::resolve::model(&a.model, ModelKind::Dnabert, a.download, cli.quiet)?;
            check_report(a.report.as_deref())?;
            let opts = a.options(cli.quiet);
            let placement = LazyPlacement::new(opts.compute.placement_request());
            let summary = embed::embed_dna(&opts, &placement)?;
            embed::finish(&summary, a.report.as_deref())?;
            return Ok(finished_with(summary.failed));
        }
        Command::EmbedProtein(mut a) => {
            a.model = hub::resolve::model(&a.model, ModelKind::Esm, a.download, cli.quiet)?;
            check_report(a.report.as_deref())?;
            let opts = a.options(cli.quiet);
            let placement = LazyPlacement::new(opts.compute.placement_request());
            let summary = embed::embed_protein(&opts, &placement)?;
            embed::finish(&summary, a.report.as_deref())?;
            return Ok(finished_with(summary.failed));
        }
        Command::Models(a) => match a.command {
            ModelsCommand::Fetch(f) => hub::command::fetch(&f.request(), cli.quiet)?,
            ModelsCommand::List(l) => print!("{}", hub::command::list(l.json)?),
        },
        Command::Devices(a) => {
            // The test kernels `devices` runs go through the same caches as a run's.
            let cache = std::env::var_os(virnucpro::device::kernel_cache::ENV)
                .map(std::path::PathBuf::from);
            virnucpro::device::kernel_cache::setup(cache.as_deref(), false)?;
            print!("{}", virnucpro::device::describe(a.json)?);
        }
        Command::Predict(mut a) => {
            a.classifier = hub::resolve::classifier(&a.classifier, a.download, cli.quiet)?;
            for f in a.dna.iter().chain(&a.protein) {
                preflight::input_file(f, "embeddings file")?;
            }
            preflight::input_file(&a.classifier, "--classifier")?;
            if let Some(f) = &a.sequences {
                preflight::input_file(f, "--sequences")?;
            }
            for f in &a.chunks {
                preflight::input_file(f, "--chunks")?;
            }
            let _lock = claim_dir(&a.outdir)?;
            let opts = a.options();
            let summary = predict::run(&opts)?;
            predict::log_summary(&summary, &opts.outdir);
        }
        Command::Run(mut a) => {
            // Hub ids and published classifiers to cached paths (fetched with --download).
            let classifier = match a.classifier.take() {
                Some(c) => c,
                None => hub::resolve::default_classifier(a.chunk_size)?,
            };
            a.dnabert = hub::resolve::model(&a.dnabert, ModelKind::Dnabert, a.download, cli.quiet)?;
            a.esm = hub::resolve::model(&a.esm, ModelKind::Esm, a.download, cli.quiet)?;
            let classifier = hub::resolve::classifier(&classifier, a.download, cli.quiet)?;
            let outcome = pipeline::run(&a.options(classifier, cli.quiet))?;
            return Ok(finished_with(outcome.failed));
        }
        // --- Training (src/train) ---
        Command::Dataset(a) => {
            for f in a.viral.iter().chain(&a.others) {
                preflight::input_file(f, "input")?;
            }
            let _lock = claim_dir(&a.outdir)?;
            let opts = train::dataset::DatasetOptions {
                viral: a.viral,
                others: a.others,
                chunk_size: a.chunk_size as usize,
                outdir: a.outdir,
                seed: a.seed,
                shard_size: a.shard_size.map(|n| n as usize),
            };
            train::dataset::log_summary(&train::dataset::run(&opts)?, &opts.outdir);
        }
        Command::Train(a) => {
            let opts = a.options(cli.quiet);
            opts.check()?;
            for (f, what) in opts.inputs() {
                preflight::input_file(f, what)?;
            }
            let _lock = claim_dir(&opts.outdir)?;
            train::fit::log_summary(&train::fit::run(&opts)?, &opts.outdir);
        }
        Command::Evaluate(a) => {
            for f in a.dna.iter().chain(&a.protein).chain([&a.labels]) {
                preflight::input_file(f, "input")?;
            }
            preflight::input_file(&a.classifier, "--classifier")?;
            let _lock = claim_dir(&a.outdir)?;
            let opts = train::evaluate::EvaluateOptions {
                dna: a.dna,
                protein: a.protein,
                labels: a.labels,
                classifier: a.classifier,
                outdir: a.outdir,
            };
            train::evaluate::log_summary(&train::evaluate::run(&opts)?, &opts.outdir);
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
