//! Checks a command makes before its first step: every input it will read is there and of the
//! right kind, every place it will write can be written, and the models fit together. A wrong
//! `--classifier` or an unwritable `--report` is reported in a second, not after hours of
//! embedding; nothing is created while checking.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use burn::backend::flex::FlexDevice;
use burn::backend::Flex;

use crate::io::fasta::input_label;
use crate::models::classifier::Classifier;
use crate::models::dnabert_s::DnabertConfig;
use crate::models::esm2::Esm2Config;
use crate::tokenize::dnabert::DnaTokenizer;
use crate::weights;

/// An input file (or `-`, stdin): it exists, is not a directory, and can be opened. A pipe is
/// only checked to exist: opening it here would wait for its writer, or take its data.
pub fn input_file(path: &Path, what: &str) -> Result<()> {
    if path == Path::new("-") {
        return Ok(());
    }
    if path.is_dir() {
        bail!("{what} {} is a directory, not a file", path.display());
    }
    if crate::io::fingerprint::is_stream(path) {
        return Ok(());
    }
    std::fs::File::open(path)
        .with_context(|| format!("cannot open {what} {}", input_label(path)))?;
    Ok(())
}

/// Whether the process may create entries in the directory `dir` (effective ids; a read-only
/// filesystem counts as not writable).
fn writable_dir(dir: &Path) -> bool {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return false;
    };
    // SAFETY: `c` is a valid NUL-terminated path that outlives the call.
    unsafe {
        libc::faccessat(
            libc::AT_FDCWD,
            c.as_ptr(),
            libc::W_OK | libc::X_OK,
            libc::AT_EACCESS,
        ) == 0
    }
}

/// `path` as given, or `.` for an empty parent.
fn or_dot(path: Option<&Path>) -> PathBuf {
    match path {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// An output directory (`flag` names it): an existing writable directory, or a path that can
/// be created (its nearest existing ancestor is a writable directory).
pub fn output_dir(dir: &Path, flag: &str) -> Result<()> {
    let noun = if flag == "--checkpoint-dir" {
        "checkpoint directory"
    } else {
        "output directory"
    };
    if dir.exists() {
        if !dir.is_dir() {
            bail!(
                "{noun} {} ({flag}) is an existing file; choose a directory",
                dir.display()
            );
        }
        if !writable_dir(dir) {
            bail!(
                "{noun} {} ({flag}) is not writable (check its permissions)",
                dir.display()
            );
        }
        return Ok(());
    }
    let mut ancestor = or_dot(dir.parent());
    while !ancestor.exists() {
        ancestor = match ancestor.parent() {
            Some(p) => or_dot(Some(p)),
            None => break,
        };
    }
    if !ancestor.is_dir() {
        bail!(
            "cannot create {noun} {} ({flag}): {} is a file, not a directory",
            dir.display(),
            ancestor.display()
        );
    }
    if !writable_dir(&ancestor) {
        bail!(
            "cannot create {noun} {} ({flag}): {} is not writable",
            dir.display(),
            ancestor.display()
        );
    }
    Ok(())
}

/// An output file (`flag` names it): not a directory, in an existing writable directory.
pub fn output_file(path: &Path, flag: &str) -> Result<()> {
    if path.is_dir() {
        bail!(
            "{flag} {} is an existing directory; give a file name",
            path.display()
        );
    }
    let parent = or_dot(path.parent());
    if !parent.is_dir() {
        bail!(
            "cannot write {flag} {}: {} is not an existing directory",
            path.display(),
            parent.display()
        );
    }
    if !writable_dir(&parent) {
        bail!(
            "cannot write {flag} {}: {} is not writable",
            path.display(),
            parent.display()
        );
    }
    Ok(())
}

/// Open the weights as the loader will (headers only, no tensor data), so a missing shard, an
/// unreadable file or an unknown format fails now.
fn weights_readable(path: &Path) -> Result<()> {
    weights::open(path).map(drop)
}

/// A DNABERT-S model (`--dnabert`, embed-dna's `--model`): config, tokenizer and weights
/// readable. Returns its embedding width.
pub fn dnabert(model: &Path) -> Result<usize> {
    let check = || -> Result<usize> {
        if !model.exists() {
            bail!("{} does not exist", model.display());
        }
        let dir = weights::model_dir(model);
        let config = DnabertConfig::from_dir(&dir)?;
        DnaTokenizer::from_dir(&dir)?;
        // The loaders' own search, so every layout they accept passes here too.
        weights_readable(&weights::locate(model, "DNABERT-S")?)?;
        Ok(config.hidden_size)
    };
    check().with_context(|| format!("DNABERT-S model {}", model.display()))
}

/// An ESM-2 model (`--esm`, embed-protein's `--model`): a Hugging Face directory (config and
/// weights) or a fair-esm checkpoint. Returns its embedding width.
pub fn esm(model: &Path) -> Result<usize> {
    let check = || -> Result<usize> {
        let weights = weights::locate(model, "ESM-2")?;
        let hidden = if model.is_dir() {
            Esm2Config::from_hf_config(&model.join("config.json"))?.hidden
        } else {
            let fair = match model.extension().and_then(|e| e.to_str()) {
                Some("pt" | "pth") => weights::torch_file::fair_esm_config(model)?,
                _ => None,
            };
            match fair {
                Some(args) => args.encoder_embed_dim,
                None => {
                    let config = weights::model_dir(model).join("config.json");
                    if !config.exists() {
                        bail!("neither a fair-esm checkpoint nor beside an HF config.json");
                    }
                    Esm2Config::from_hf_config(&config)?.hidden
                }
            }
        };
        weights_readable(&weights)?;
        Ok(hidden)
    };
    check().with_context(|| format!("ESM-2 model {}", model.display()))
}

/// The classifier loads, and takes `dna_dim + protein_dim` features.
pub fn classifier(path: &Path, dna_dim: usize, protein_dim: usize) -> Result<()> {
    input_file(path, "--classifier")?;
    let classifier = Classifier::<Flex>::load(path, &FlexDevice)
        .with_context(|| format!("loading classifier {}", path.display()))?;
    classifier
        .check_input_dim(dna_dim + protein_dim)
        .with_context(|| {
            format!(
                "--classifier {} does not fit --dnabert ({dna_dim}-d) + --esm ({protein_dim}-d)",
                path.display()
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn output_locations_are_checked_without_creating_anything() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "x").unwrap();
        assert!(output_dir(&tmp.path().join("a/b/c"), "-o").is_ok());
        assert!(!tmp.path().join("a").exists());
        let e = format!("{:#}", output_dir(&file, "--outdir").unwrap_err());
        assert!(e.contains("existing file"), "{e}");
        let e = format!(
            "{:#}",
            output_dir(&file.join("sub"), "--outdir").unwrap_err()
        );
        assert!(e.contains("is a file"), "{e}");

        assert!(output_file(&tmp.path().join("r.json"), "--report").is_ok());
        let e = format!("{:#}", output_file(tmp.path(), "--output").unwrap_err());
        assert!(e.contains("existing directory"), "{e}");
        let e = format!(
            "{:#}",
            output_file(&tmp.path().join("no/r.json"), "--report").unwrap_err()
        );
        assert!(e.contains("not an existing directory"), "{e}");
        assert!(output_file(Path::new("relative.json"), "--report").is_ok());
    }

    #[test]
    fn inputs_must_be_readable_files() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(input_file(Path::new("-"), "input").is_ok());
        let e = format!("{:#}", input_file(tmp.path(), "input").unwrap_err());
        assert!(e.contains("is a directory"), "{e}");
        let e = format!(
            "{:#}",
            input_file(&tmp.path().join("nope.fa"), "input").unwrap_err()
        );
        assert!(
            e.contains("cannot open input") && e.contains("nope.fa"),
            "{e}"
        );
    }
}
