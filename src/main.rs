use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

use virnucpro::cli::{Cli, Command};
use virnucpro::{config, embed, pipeline, predict, translate};

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
                return ExitCode::from(1);
            }
        }
    }
    let cli = Cli::from_arg_matches(&command.get_matches_from(args)).unwrap_or_else(|e| e.exit());
    init_logging(cli.verbose, cli.quiet);
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            // One line for the user: the whole context chain, outermost first.
            eprintln!("error: {e:#}");
            // Stopped by a signal after saving its work: the shell's convention, 128 + signal.
            match e.downcast_ref::<virnucpro::interrupt::Interrupted>() {
                Some(i) => ExitCode::from((128 + i.signal).clamp(1, 255) as u8),
                None => ExitCode::from(1),
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
            let summary = embed::models::embed_dna(&a.options(cli.quiet))?;
            embed::finish(&summary, a.report.as_deref())?;
            return Ok(finished_with(summary.failed));
        }
        Command::EmbedProtein(a) => {
            let summary = embed::models::embed_protein(&a.options(cli.quiet))?;
            embed::finish(&summary, a.report.as_deref())?;
            return Ok(finished_with(summary.failed));
        }
        Command::Devices(a) => {
            print!("{}", virnucpro::device::describe(a.json)?);
        }
        Command::Predict(a) => {
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
/// in a failed.tsv), as ARCHITECTURE.md sets out.
fn finished_with(failed: usize) -> ExitCode {
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
