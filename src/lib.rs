//! virnucpro: VirNucPro viral sequence identification in Rust.
//!
//! Data flow (docs/architecture.md): `translate` (chunks + six-frame ORFs) -> `embed-dna` (DNABERT-S)
//! and `embed-protein` (ESM-2) -> `predict` (MLP classifier, per-chunk and per-sequence calls).

pub mod cli;
pub mod config;
pub mod device;
pub mod embed;
pub mod embeddings;
pub mod fasta;
pub mod fault_injection;
pub mod fingerprint;
pub mod flag_values;
pub mod hub;
pub mod interrupt;
pub mod lockfile;
pub mod models;
pub mod output;
pub mod output_lock;
pub mod pipeline;
pub mod plot;
pub mod predict;
pub mod preflight;
pub mod progress;
pub mod resources;
pub mod seq;
pub mod subcommand;
pub mod tokenize;
pub mod train;
pub mod translate;
pub mod weights;

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                rust_files(&p, out);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }

    /// docs/architecture.md promises to name every file of `src/`: a file in a folder is named
    /// in its folder's row of the modules table (`| \`hub/\` | ... \`client.rs\` ...`) or by
    /// its path anywhere; a top-level file by its name in backquotes.
    #[test]
    fn the_architecture_map_names_every_source_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let doc = std::fs::read_to_string(root.join("docs/architecture.md")).unwrap();
        let row = |folder: &str| {
            doc.lines()
                .find(|l| l.starts_with(&format!("| `{folder}/` |")))
                .unwrap_or("")
        };
        let mut files = Vec::new();
        rust_files(&root.join("src"), &mut files);
        let missing: Vec<String> = files
            .iter()
            .map(|p| {
                p.strip_prefix(root.join("src"))
                    .unwrap()
                    .display()
                    .to_string()
            })
            .filter(|rel| match rel.split_once('/') {
                Some((folder, name)) => {
                    !doc.contains(rel.as_str()) && !row(folder).contains(&format!("`{name}`"))
                }
                None => !doc.contains(&format!("`{rel}`")),
            })
            .collect();
        assert!(
            missing.is_empty(),
            "docs/architecture.md does not name {missing:?}: add each to its folder's row"
        );
    }
}
