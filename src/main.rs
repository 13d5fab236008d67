use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches};
use tracing_subscriber::EnvFilter;

use virnucpro::cli::{Cli, Command, ModelsCommand};
use virnucpro::config;
use virnucpro::device::DevicesRequest;
use virnucpro::embed::EmbedKind;
use virnucpro::hub::command::ListRequest;
use virnucpro::subcommand::{self, Subcommand};

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
            if let Some(i) = e.downcast_ref::<virnucpro::runtime::interrupt::Interrupted>() {
                ExitCode::from((128 + i.signal).clamp(1, 255) as u8)
            } else if e
                .downcast_ref::<virnucpro::flag_values::UsageError>()
                .is_some()
            {
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

/// Every subcommand in one shape (src/subcommand.rs): its options from the arguments (the
/// config's values are the flags' defaults; Hub ids resolved to cached paths), then checks,
/// the output lock and the step.
fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let quiet = cli.quiet;
    let command: Box<dyn Subcommand> = match cli.command {
        Command::Translate(a) => Box::new(a.options(quiet)),
        Command::EmbedDna(a) => Box::new(a.command(EmbedKind::Dna, quiet)?),
        Command::EmbedProtein(a) => Box::new(a.command(EmbedKind::Protein, quiet)?),
        Command::Predict(a) => Box::new(a.options(quiet)?),
        Command::Run(a) => Box::new(a.options(quiet)?),
        Command::Models(a) => match a.command {
            ModelsCommand::Fetch(f) => Box::new(f.request(quiet)),
            ModelsCommand::List(l) => Box::new(ListRequest { json: l.json }),
        },
        Command::Devices(a) => Box::new(DevicesRequest { json: a.json }),
        Command::Dataset(a) => Box::new(a.options()),
        Command::Train(a) => Box::new(a.options(quiet)),
        Command::Evaluate(a) => Box::new(a.options()),
    };
    let finished = subcommand::run(command.as_ref())?;
    // 0 when every record was processed, 2 when the step finished without some (listed in a
    // failed.tsv).
    Ok(if finished.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_SOME_FAILED)
    })
}
