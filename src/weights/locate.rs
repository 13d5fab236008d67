//! Where a model's weights are: the one search every caller uses (the loaders, preflight), so
//! a layout that loads also passes the checks before a run, and one that does not is refused
//! by both with the same message.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};

/// The weight files a Hugging Face model directory may hold, in the order transformers prefers
/// them: safetensors before PyTorch pickles, a single file before a sharded index.
pub const HF_WEIGHT_FILES: [&str; 4] = [
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
];

/// The weights of an HF model directory (any layout of [`HF_WEIGHT_FILES`]), or an error
/// naming what was expected. `model` names the model for the message.
pub fn find_in_dir(dir: &Path, model: &str) -> Result<PathBuf> {
    HF_WEIGHT_FILES
        .iter()
        .map(|f| dir.join(f))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "{}: no {model} weights found (expected one of {}, with shards \
                 model-0000N-of-0000M.safetensors or pytorch_model-0000N-of-0000M.bin beside an \
                 index)",
                dir.display(),
                HF_WEIGHT_FILES.join(", ")
            )
        })
}

/// The weights of a model given as a directory ([`find_in_dir`]) or as a weights file (itself).
pub fn locate(model: &Path, kind: &str) -> Result<PathBuf> {
    if !model.exists() {
        bail!("{} does not exist", model.display());
    }
    if model.is_dir() {
        find_in_dir(model, kind)
    } else {
        Ok(model.to_path_buf())
    }
}

/// The directory of a model given as a directory or as a file inside one: where its
/// `config.json` and `tokenizer.json` are (`.` for a bare file name).
pub fn model_dir(model: &Path) -> PathBuf {
    if model.is_dir() {
        return model.to_path_buf();
    }
    match model.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_directory_is_searched_in_transformers_order_and_a_file_is_itself() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let err = format!("{:#}", find_in_dir(dir, "ESM-2").unwrap_err());
        assert!(err.contains("no ESM-2 weights found"), "{err}");
        std::fs::write(dir.join("pytorch_model.bin"), b"x").unwrap();
        assert_eq!(locate(dir, "ESM-2").unwrap(), dir.join("pytorch_model.bin"));
        std::fs::write(dir.join("model.safetensors.index.json"), b"{}").unwrap();
        assert_eq!(
            locate(dir, "ESM-2").unwrap(),
            dir.join("model.safetensors.index.json")
        );
        let file = dir.join("pytorch_model.bin");
        assert_eq!(locate(&file, "ESM-2").unwrap(), file);
        assert_eq!(model_dir(&file), dir);
        assert_eq!(model_dir(dir), dir);
        assert_eq!(model_dir(Path::new("w.pt")), Path::new("."));
        assert!(locate(&dir.join("absent"), "ESM-2").is_err());
    }
}
