//! `--config FILE` (or `VIRNUCPRO_CONFIG`): the tool's own defaults in TOML (see
//! `conf/virnucpro.toml`). A config value becomes the default of the matching command-line flag,
//! so a flag given on the command line always wins, `--help` shows the configured defaults, and
//! flags a config provides stop being required.
//!
//! Unknown keys are errors (a typo must not silently fall back to a default), and values are
//! checked when the file is read, so the error names the file and the key.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::device::{DeviceSpec, Precision};

pub const CONFIG_ENV: &str = "VIRNUCPRO_CONFIG";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub models: ModelsConfig,
    #[serde(default)]
    pub translate: TranslateConfig,
    #[serde(default)]
    pub embed: EmbedConfig,
    #[serde(default)]
    pub predict: PredictConfig,
}

/// Model locations; relative paths are taken from the config file's directory. Each may also be
/// a Hub id (`org/name[@revision]`; for the classifier `500`, `300` or a URL), kept as it is
/// unless a path of that name exists beside the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelsConfig {
    pub dnabert: Option<PathBuf>,
    pub esm: Option<PathBuf>,
    pub classifier: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TranslateConfig {
    pub chunk_size: Option<u64>,
    pub shard_size: Option<u64>,
    pub threads: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedConfig {
    pub device: Option<String>,
    pub precision: Option<String>,
    pub batch_tokens: Option<u64>,
    pub threads: Option<usize>,
    pub checkpoint_secs: Option<u64>,
    pub checkpoint_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictConfig {
    pub min_viral_fraction: Option<f64>,
    pub plot_top: Option<usize>,
}

impl Config {
    /// Read and check a config file; relative model paths become relative to its directory.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read config file {}", path.display()))?;
        let mut cfg: Config = toml::from_str(&text).map_err(|e| {
            // toml's message spans several lines (with a caret under the key): keep one line.
            // The message itself can span lines too ("invalid string\nexpected `\"`, `'`").
            let msg = e
                .message()
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect::<Vec<_>>()
                .join("; ");
            let at = e
                .span()
                .map(|s| {
                    let line = text[..s.start.min(text.len())].lines().count().max(1);
                    format!(" (line {line})")
                })
                .unwrap_or_default();
            anyhow::anyhow!(
                "config file {}{at}: {msg}; see conf/virnucpro.toml for the keys",
                path.display()
            )
        })?;
        cfg.check(path)?;
        let base = path.parent().unwrap_or(Path::new("."));
        for p in [
            &mut cfg.models.dnabert,
            &mut cfg.models.esm,
            &mut cfg.models.classifier,
            &mut cfg.embed.checkpoint_dir,
        ]
        .into_iter()
        .flatten()
        {
            // A Hub id stays an id unless a path of that name exists beside the config.
            if p.is_relative() && (!is_model_id(p) || base.join(&*p).exists()) {
                *p = base.join(&*p);
            }
        }
        Ok(cfg)
    }

    fn check(&self, path: &Path) -> Result<()> {
        let bad = |key: &str, why: String| -> Result<()> {
            bail!("config file {}: {key}: {why}", path.display())
        };
        if let Some(d) = &self.embed.device {
            if let Err(e) = d.parse::<DeviceSpec>() {
                bad("embed.device", e)?;
            }
        }
        if let Some(p) = &self.embed.precision {
            if let Err(e) = p.parse::<Precision>() {
                bad("embed.precision", e)?;
            }
        }
        if let Some(c) = self.translate.chunk_size {
            if c < 3 {
                bad(
                    "translate.chunk_size",
                    format!("{c} is below 3 (use 300 or 500)"),
                )?;
            }
        }
        for (key, v) in [
            ("translate.shard_size", self.translate.shard_size),
            ("embed.batch_tokens", self.embed.batch_tokens),
        ] {
            if v == Some(0) {
                bad(key, "must be at least 1".into())?;
            }
        }
        if let Some(f) = self.predict.min_viral_fraction {
            if !(0.0..=1.0).contains(&f) {
                bad("predict.min_viral_fraction", format!("{f} is not in 0..=1"))?;
            }
        }
        Ok(())
    }

    /// Defaults per subcommand: `{subcommand: [(argument id, value)]}` (argument ids are the
    /// clap field names in `cli.rs`).
    pub fn defaults(&self) -> BTreeMap<&'static str, Vec<(&'static str, String)>> {
        let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        let num = |n: Option<u64>| n.map(|n| n.to_string());
        let compute = move || {
            let e = &self.embed;
            vec![
                ("device", e.device.clone()),
                ("precision", e.precision.clone()),
                ("batch_tokens", num(e.batch_tokens)),
                ("threads", e.threads.map(|n| n.to_string())),
                ("checkpoint_secs", num(e.checkpoint_secs)),
                ("checkpoint_dir", path(&e.checkpoint_dir)),
            ]
        };
        let predict = || {
            vec![
                (
                    "min_viral_fraction",
                    self.predict.min_viral_fraction.map(|f| f.to_string()),
                ),
                ("plot_top", self.predict.plot_top.map(|n| n.to_string())),
                ("classifier", path(&self.models.classifier)),
            ]
        };
        let mut out: BTreeMap<&'static str, Vec<(&'static str, Option<String>)>> = BTreeMap::new();
        out.insert(
            "translate",
            vec![
                ("chunk_size", num(self.translate.chunk_size)),
                ("shard_size", num(self.translate.shard_size)),
                ("threads", self.translate.threads.map(|n| n.to_string())),
            ],
        );
        let mut dna = compute();
        dna.push(("model", path(&self.models.dnabert)));
        out.insert("embed-dna", dna);
        let mut protein = compute();
        protein.push(("model", path(&self.models.esm)));
        out.insert("embed-protein", protein);
        out.insert("predict", predict());
        let mut run = compute();
        run.extend(predict());
        run.push(("chunk_size", num(self.translate.chunk_size)));
        run.push(("dnabert", path(&self.models.dnabert)));
        run.push(("esm", path(&self.models.esm)));
        out.insert("run", run);
        out.into_iter()
            .map(|(cmd, args)| {
                (
                    cmd,
                    args.into_iter()
                        .filter_map(|(id, v)| v.map(|v| (id, v)))
                        .collect(),
                )
            })
            .collect()
    }

    /// `cmd` with this config's values as its subcommands' defaults.
    pub fn apply(&self, mut cmd: clap::Command) -> clap::Command {
        for (sub, args) in self.defaults() {
            cmd = cmd.mut_subcommand(sub, |mut sc| {
                for (id, value) in args {
                    // A flag missing from a subcommand (e.g. a key meant for another one)
                    // is simply not applied there.
                    if sc.get_arguments().any(|a| a.get_id() == id) {
                        sc = sc.mut_arg(id, |a| a.default_value(value).required(false));
                    }
                }
                sc
            });
        }
        cmd
    }
}

/// A model value that names a Hub repository or a published/remote classifier, not a path.
fn is_model_id(p: &Path) -> bool {
    p.to_str().is_some_and(|s| {
        crate::hub::RepoId::parse(s).is_some()
            || matches!(crate::hub::classifier::Remote::parse(s), Ok(Some(_)))
    })
}

/// The config file named on the command line (`--config F` / `--config=F`, before `--`), else
/// by `VIRNUCPRO_CONFIG`. Found before clap parses, because it changes what clap accepts.
pub fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--config" {
            return it.next().map(PathBuf::from);
        }
        if let Some(v) = s.strip_prefix("--config=") {
            return Some(PathBuf::from(v));
        }
    }
    std::env::var_os(CONFIG_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{CommandFactory, FromArgMatches};

    use crate::cli::{Cli, Command};

    fn write(dir: &Path, text: &str) -> PathBuf {
        let p = dir.join("virnucpro.toml");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn parse(cfg: &Config, args: &[&str]) -> Result<Cli, clap::Error> {
        let m = cfg.apply(Cli::command()).try_get_matches_from(args)?;
        Cli::from_arg_matches(&m)
    }

    #[test]
    fn a_value_toml_cannot_read_is_a_one_line_error() {
        // Found by the config property test: toml's own message for this spans two lines.
        let dir = tempfile::tempdir().unwrap();
        let p = write(dir.path(), "[predict]\nplot_top =:20\n");
        let msg = format!("{:#}", Config::load(&p).unwrap_err());
        assert!(!msg.contains('\n'), "{msg}");
        assert!(
            msg.contains("(line 2)") && msg.contains("virnucpro.toml"),
            "{msg}"
        );
    }

    #[test]
    fn shipped_config_parses() {
        let p = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/virnucpro.toml");
        let cfg = Config::load(&p).unwrap();
        assert_eq!(cfg.translate.chunk_size, Some(500));
    }

    #[test]
    fn config_gives_defaults_and_flags_win() {
        let dir = tempfile::tempdir().unwrap();
        // An existing directory: `models/esm` alone would read as a Hub id (org/name).
        std::fs::create_dir_all(dir.path().join("models/esm")).unwrap();
        let p = write(
            dir.path(),
            "[translate]\nchunk_size = 300\n[embed]\nbatch_tokens = 777\nprecision = \"bf16\"\n\
             [models]\nesm = \"models/esm\"\n",
        );
        let cfg = Config::load(&p).unwrap();
        let cli = parse(&cfg, &["virnucpro", "translate", "in.fa", "-o", "out"]).unwrap();
        let Command::Translate(t) = cli.command else {
            panic!()
        };
        assert_eq!(t.chunk_size, 300);
        let cli = parse(
            &cfg,
            &["virnucpro", "translate", "in.fa", "-o", "out", "-c", "500"],
        )
        .unwrap();
        let Command::Translate(t) = cli.command else {
            panic!()
        };
        assert_eq!(t.chunk_size, 500);
        let cli = parse(&cfg, &["virnucpro", "embed-protein", "in.faa", "-o", "x"]).unwrap();
        let Command::EmbedProtein(e) = cli.command else {
            panic!()
        };
        assert_eq!(e.model, dir.path().join("models/esm"));
        assert_eq!(e.compute.batch_tokens, Some(777));
        assert_eq!(e.compute.precision, Precision::Bf16);
        // Still required when the config does not give it.
        assert!(parse(&cfg, &["virnucpro", "embed-dna", "in.fa", "-o", "x"]).is_err());
    }

    #[test]
    fn hub_ids_in_the_config_are_not_taken_for_paths() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("local/dnabert")).unwrap();
        let p = write(
            dir.path(),
            "[models]\nesm = \"facebook/esm2_t36_3B_UR50D\"\ndnabert = \"local/dnabert\"\n\
             classifier = \"500\"\n",
        );
        let cfg = Config::load(&p).unwrap();
        assert_eq!(
            cfg.models.esm.as_deref(),
            Some(Path::new("facebook/esm2_t36_3B_UR50D"))
        );
        // An existing directory beside the config wins over the id reading.
        assert_eq!(cfg.models.dnabert, Some(dir.path().join("local/dnabert")));
        assert_eq!(cfg.models.classifier.as_deref(), Some(Path::new("500")));
        let cli = parse(
            &cfg,
            &["virnucpro", "run", "in.fa", "-c", "500", "-o", "out"],
        )
        .unwrap();
        let Command::Run(r) = cli.command else {
            panic!()
        };
        assert_eq!(r.esm, PathBuf::from("facebook/esm2_t36_3B_UR50D"));
        assert_eq!(r.classifier, Some(PathBuf::from("500")));
    }

    #[test]
    fn bad_keys_and_values_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        for (text, needle) in [
            ("[translate]\nchunk_sise = 500\n", "chunk_sise"),
            ("[embed]\ndevice = \"tpu\"\n", "embed.device"),
            ("[embed]\nprecision = \"f8\"\n", "embed.precision"),
            ("[translate]\nchunk_size = \"500\"\n", "line 2"),
            (
                "[predict]\nmin_viral_fraction = 2.0\n",
                "min_viral_fraction",
            ),
        ] {
            let p = write(dir.path(), text);
            let e = format!("{:#}", Config::load(&p).unwrap_err());
            assert!(e.contains("virnucpro.toml") && e.contains(needle), "{e}");
            assert!(!e.contains('\n'), "one line: {e}");
        }
    }

    #[test]
    fn finds_the_config_flag() {
        let a = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            config_path(&a(&["v", "--config", "c.toml", "translate"])),
            Some(PathBuf::from("c.toml"))
        );
        assert_eq!(
            config_path(&a(&["v", "translate", "--config=c.toml"])),
            Some(PathBuf::from("c.toml"))
        );
        if std::env::var_os(CONFIG_ENV).is_none() {
            assert_eq!(config_path(&a(&["v", "translate", "--", "--config"])), None);
        }
    }
}
