//! Labelled samples for `train` and `evaluate`: `labels.tsv` (`id`, `label` = `virus` /
//! `others`, as `dataset` writes it) joined by ORF id with the DNA and protein embeddings files
//! (read as `predict` reads them, mapped, a batch's rows at a time), and the train/validation
//! split.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::rng::{self, Stream};
use crate::io::embeddings::{EmbeddingKind, MappedSet};
use crate::predict::load_side;

pub const LABEL_VIRUS: &str = "virus";
pub const LABEL_OTHERS: &str = "others";

/// Class index of a label: 1 `virus`, 0 `others`, as the classifier's outputs.
pub fn class_of(label: &str) -> Option<u8> {
    match label {
        LABEL_VIRUS => Some(1),
        LABEL_OTHERS => Some(0),
        _ => None,
    }
}

pub fn label_name(class: u8) -> &'static str {
    if class == 1 {
        LABEL_VIRUS
    } else {
        LABEL_OTHERS
    }
}

/// `labels.tsv`: a header `id<TAB>label`, then one ORF per line.
pub fn read_labels(path: &Path) -> Result<Vec<(String, u8)>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read labels file {}", path.display()))?;
    let mut lines = text.lines().enumerate();
    match lines.next() {
        Some((_, header)) if header.trim_end() == "id\tlabel" => {}
        _ => bail!(
            "{}: the first line must be the header 'id<TAB>label' (the file `virnucpro dataset` writes)",
            path.display()
        ),
    }
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (i, line) in lines {
        let line = line.trim_end_matches('\r');
        if line.is_empty() {
            continue;
        }
        let mut cols = line.split('\t');
        let (Some(id), Some(label), None) = (cols.next(), cols.next(), cols.next()) else {
            bail!(
                "{} line {}: expected two tab-separated columns (id, label), found {line:?}",
                path.display(),
                i + 1
            );
        };
        let Some(class) = class_of(label) else {
            bail!(
                "{} line {}: unknown label {label:?} for '{id}'; labels are '{LABEL_VIRUS}' or '{LABEL_OTHERS}'",
                path.display(),
                i + 1
            );
        };
        if !seen.insert(id.to_string()) {
            bail!(
                "{} line {}: ORF id '{id}' is labelled twice; each ORF must appear once",
                path.display(),
                i + 1
            );
        }
        out.push((id.to_string(), class));
    }
    Ok(out)
}

/// How the labels and the embeddings matched up.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JoinCounts {
    pub labelled: usize,
    /// Labelled ids missing from the DNA or the protein files (skipped).
    pub labelled_without_embeddings: usize,
    /// Embedded ids (either side) without a label (skipped).
    pub embedded_without_label: usize,
}

/// Labelled ORFs with both embeddings, in the labels file's order.
pub struct Samples {
    dna: Vec<MappedSet>,
    protein: Vec<MappedSet>,
    pub ids: Vec<String>,
    pub labels: Vec<u8>,
    /// (DNA file, row), (protein file, row) of each sample.
    rows: Vec<((usize, usize), (usize, usize))>,
    pub dna_dim: usize,
    pub protein_dim: usize,
    pub dna_model: String,
    pub protein_model: String,
    pub counts: JoinCounts,
}

fn index(sets: &[MappedSet], flag: &str) -> Result<HashMap<String, (usize, usize)>> {
    let mut map = HashMap::new();
    for (s, set) in sets.iter().enumerate() {
        for (r, id) in set.ids.iter().enumerate() {
            if map.insert(id.clone(), (s, r)).is_some() {
                bail!(
                    "ORF id '{id}' appears twice in the {flag} files; each ORF must be embedded once"
                );
            }
        }
    }
    Ok(map)
}

impl Samples {
    pub fn open(dna: &[PathBuf], protein: &[PathBuf], labels: &Path) -> Result<Self> {
        let labelled = read_labels(labels)?;
        let dna_sets = load_side(dna, EmbeddingKind::Dna, "--dna")?;
        let protein_sets = load_side(protein, EmbeddingKind::Protein, "--protein")?;
        let dna_index = index(&dna_sets, "--dna")?;
        let protein_index = index(&protein_sets, "--protein")?;
        let mut counts = JoinCounts {
            labelled: labelled.len(),
            ..Default::default()
        };
        let (mut ids, mut classes, mut rows) = (Vec::new(), Vec::new(), Vec::new());
        let mut labelled_ids = HashSet::new();
        for (id, class) in labelled {
            match (dna_index.get(&id), protein_index.get(&id)) {
                (Some(&d), Some(&p)) => {
                    rows.push((d, p));
                    labelled_ids.insert(id.clone());
                    ids.push(id);
                    classes.push(class);
                }
                _ => {
                    labelled_ids.insert(id);
                    counts.labelled_without_embeddings += 1;
                }
            }
        }
        let unlabelled: HashSet<&String> = dna_index
            .keys()
            .chain(protein_index.keys())
            .filter(|id| !labelled_ids.contains(*id))
            .collect();
        counts.embedded_without_label = unlabelled.len();
        if counts.labelled_without_embeddings > 0 {
            tracing::warn!(
                "{} of {} labelled ORFs lack a DNA or protein embedding and are skipped \
                 (were all shards given to --dna and --protein?)",
                counts.labelled_without_embeddings,
                counts.labelled
            );
        }
        if counts.embedded_without_label > 0 {
            tracing::warn!(
                "{} embedded ORFs have no label in {} and are skipped (embeddings of another dataset?)",
                counts.embedded_without_label,
                labels.display()
            );
        }
        if ids.is_empty() {
            bail!(
                "no ORF in {} has both a DNA and a protein embedding: nothing to use \
                 (embeddings of another dataset, or the wrong labels file?)",
                labels.display()
            );
        }
        Ok(Self {
            dna_dim: dna_sets[0].dim,
            protein_dim: protein_sets[0].dim,
            dna_model: dna_sets[0].meta.model.clone(),
            protein_model: protein_sets[0].meta.model.clone(),
            dna: dna_sets,
            protein: protein_sets,
            ids,
            labels: classes,
            rows,
            counts,
        })
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Feature width: DNA then protein, as the original concatenates them.
    pub fn dim(&self) -> usize {
        self.dna_dim + self.protein_dim
    }

    /// Append the feature rows of samples `which` to `out` (refusing NaN / infinite values).
    pub fn gather(&self, which: &[usize], out: &mut Vec<f32>) -> Result<()> {
        out.reserve(which.len() * self.dim());
        for &i in which {
            let ((ds, dr), (ps, pr)) = self.rows[i];
            self.dna[ds].extend_row(dr, out)?;
            self.protein[ps].extend_row(pr, out)?;
        }
        Ok(())
    }

    /// Refuse a set without both classes: nothing to learn or measure.
    pub fn check_both_classes(&self, what: &str, which: &[usize]) -> Result<()> {
        let virus = which.iter().filter(|&&i| self.labels[i] == 1).count();
        if virus == 0 || virus == which.len() {
            let only = if virus == 0 {
                LABEL_OTHERS
            } else {
                LABEL_VIRUS
            };
            bail!(
                "the {what} holds only '{only}' ORFs ({} of them); it needs both '{LABEL_VIRUS}' and \
                 '{LABEL_OTHERS}' (label both classes, e.g. with `virnucpro dataset --viral … --others …`)",
                which.len()
            );
        }
        Ok(())
    }
}

/// Split sample indices into (train, validation), each in the samples' order. With
/// `validation_ids` those are the validation set; otherwise a seeded random `fraction`
/// (the original's `random_split` keeps ⌊0.9·n⌋ rows for training).
pub fn split(
    samples: &Samples,
    fraction: f64,
    seed: u64,
    validation_ids: Option<&[String]>,
    source: Option<&Path>,
) -> Result<(Vec<usize>, Vec<usize>)> {
    let n = samples.len();
    let mut is_val = vec![false; n];
    match validation_ids {
        Some(list) => {
            let at: HashMap<&str, usize> = samples
                .ids
                .iter()
                .enumerate()
                .map(|(i, id)| (id.as_str(), i))
                .collect();
            let file = source.map(|p| p.display().to_string()).unwrap_or_default();
            for id in list {
                match at.get(id.as_str()) {
                    Some(&i) => is_val[i] = true,
                    None => bail!(
                        "{file}: validation id '{id}' is not among the labelled ORFs with both embeddings"
                    ),
                }
            }
        }
        None => {
            let n_train = (n as f64 * (1.0 - fraction)).floor() as usize;
            let mut order: Vec<usize> = (0..n).collect();
            rng::shuffle(&mut rng::rng(seed, Stream::Split), &mut order);
            for &i in &order[n_train..] {
                is_val[i] = true;
            }
        }
    }
    let train: Vec<usize> = (0..n).filter(|&i| !is_val[i]).collect();
    let val: Vec<usize> = (0..n).filter(|&i| is_val[i]).collect();
    if val.is_empty() {
        bail!(
            "the validation set is empty ({n} ORFs); raise --validation-fraction or give --validation-ids"
        );
    }
    if train.len() < 2 {
        bail!(
            "{} ORFs are left for training; at least 2 are needed (BatchNorm needs a batch of 2)",
            train.len()
        );
    }
    Ok((train, val))
}

/// `--validation-ids`: one id per line (a first column of a TSV is fine; a header `id` is skipped).
pub fn read_id_list(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read --validation-ids file {}", path.display()))?;
    let ids: Vec<String> = text
        .lines()
        .filter_map(|l| l.split('\t').next())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .enumerate()
        .filter(|(i, s)| !(*i == 0 && s == "id"))
        .map(|(_, s)| s)
        .collect();
    if ids.is_empty() {
        bail!("--validation-ids file {} lists no id", path.display());
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_parsed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("labels.tsv");
        std::fs::write(&p, "id\tlabel\na\tvirus\nb\tothers\n").unwrap();
        assert_eq!(
            read_labels(&p).unwrap(),
            vec![("a".to_string(), 1), ("b".to_string(), 0)]
        );
        for (text, needle) in [
            ("id\tlabel\na\tbacteria\n", "unknown label \"bacteria\""),
            ("id\tlabel\na\tvirus\na\tothers\n", "labelled twice"),
            ("a\tvirus\n", "header"),
            ("id\tlabel\na virus\n", "two tab-separated columns"),
        ] {
            std::fs::write(&p, text).unwrap();
            let err = format!("{:#}", read_labels(&p).unwrap_err());
            assert!(err.contains(needle) && err.contains("labels.tsv"), "{err}");
        }
    }

    #[test]
    fn id_list_skips_header_and_columns() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("val.txt");
        std::fs::write(&p, "id\tlabel\nx\tvirus\ny\n\n").unwrap();
        assert_eq!(read_id_list(&p).unwrap(), vec!["x", "y"]);
    }
}
