//! The output files of `predict`: the original's two tables, byte for byte, and the
//! per-sequence summary the original leaves to the user.

use std::collections::BTreeMap;

use anyhow::{Context, Result};

use crate::io::output::OutputSet;

pub const RESULTS_FILE: &str = "prediction_results.txt";
pub const HIGHEST_FILE: &str = "prediction_results_highestscore.csv";
pub const SUMMARY_FILE: &str = "sequence_summary.tsv";

/// The classifier's answer for one ORF.
#[derive(Debug, Clone, PartialEq)]
pub struct OrfScore {
    pub id: String,
    /// softmax of class 0 (`others`)
    pub others: f32,
    /// softmax of class 1 (`virus`)
    pub virus: f32,
}

impl OrfScore {
    /// The original's label: argmax, ties to `others`.
    pub fn is_virus(&self) -> bool {
        self.virus > self.others
    }
    /// The chunk id: the ORF id minus its frame suffix (`F1` … `R3`), as the original's
    /// `Modified_ID`.
    pub fn chunk_id(&self) -> &str {
        &self.id[..self.id.len().saturating_sub(2)]
    }
}

/// Format an f32 as numpy prints a float32 scalar (shortest round-trip digits; positional for
/// 1e-4 <= |x| < 1e16, else scientific with a two-digit exponent), which is what the original's
/// table holds.
pub fn format_f32(x: f32) -> String {
    if x == 0.0 {
        return if x.is_sign_negative() {
            "-0.0".into()
        } else {
            "0.0".into()
        };
    }
    if !x.is_finite() {
        return if x.is_nan() {
            "nan".into()
        } else if x > 0.0 {
            "inf".into()
        } else {
            "-inf".into()
        };
    }
    let a = x.abs();
    if (1e-4..1e16).contains(&a) {
        let s = format!("{x}");
        if s.contains('.') {
            s
        } else {
            format!("{s}.0")
        }
    } else {
        let s = format!("{x:e}");
        let (mantissa, exp) = s.split_once('e').expect("{:e} has an exponent");
        let (sign, digits) = match exp.strip_prefix('-') {
            Some(d) => ('-', d),
            None => ('+', exp),
        };
        format!("{mantissa}e{sign}{digits:0>2}")
    }
}

/// `prediction_results.txt`: one row per ORF, in the order given.
pub fn write_results(set: &OutputSet, scores: &[OrfScore]) -> Result<()> {
    let mut body = String::from("Sequence_ID\tPrediction\tscore1\tscore2\n");
    for s in scores {
        body.push_str(&s.id);
        body.push('\t');
        body.push_str(if s.is_virus() { "virus" } else { "others" });
        body.push('\t');
        body.push_str(&format_f32(s.others));
        body.push('\t');
        body.push_str(&format_f32(s.virus));
        body.push('\n');
    }
    set.write(RESULTS_FILE, body.as_bytes())
        .context("writing prediction results")
}

/// A chunk's best score of each class over its ORFs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ChunkBest {
    pub others: f32,
    pub virus: f32,
}

impl ChunkBest {
    /// The original's chunk call: the best virus score is >= the best others score.
    pub fn is_virus(&self) -> bool {
        self.virus >= self.others
    }
}

/// Every chunk's best scores, by chunk id (byte order, as the original sorts its table).
pub type ChunkMaxima<'a> = BTreeMap<&'a str, ChunkBest>;

/// Per chunk: the best score of each class over its ORFs.
pub fn chunk_maxima(scores: &[OrfScore]) -> ChunkMaxima<'_> {
    let mut chunks = ChunkMaxima::new();
    for s in scores {
        let e = chunks.entry(s.chunk_id()).or_insert(ChunkBest {
            others: f32::NEG_INFINITY,
            virus: f32::NEG_INFINITY,
        });
        e.others = e.others.max(s.others);
        e.virus = e.virus.max(s.virus);
    }
    chunks
}

/// `prediction_results_highestscore.csv` (tab-separated, as the original): one row per chunk,
/// `True` when its best virus score is >= its best others score; sorted by id (byte order).
pub fn write_highest(set: &OutputSet, maxima: &ChunkMaxima) -> Result<()> {
    let mut body = String::from("Modified_ID\tIs_Virus\n");
    for (id, best) in maxima {
        body.push_str(id);
        body.push_str(if best.is_virus() {
            "\tTrue\n"
        } else {
            "\tFalse\n"
        });
    }
    set.write(HIGHEST_FILE, body.as_bytes())
        .context("writing chunk calls")
}

/// The per-sequence view: what people actually want to know about each contig.
#[derive(Debug, Clone, PartialEq)]
pub struct SequenceSummary {
    pub id: String,
    /// (chunk number, best scores) for each chunk with at least one ORF, in chunk order.
    pub chunks: Vec<(usize, ChunkBest)>,
    pub viral_chunks: usize,
    pub max_virus_score: f32,
    pub mean_virus_score: f32,
    pub is_virus: bool,
}

impl SequenceSummary {
    /// `virus_fraction` as sequence_summary.tsv prints it (4 decimals); one function, so the
    /// viral FASTA's headers print the very same digits.
    pub fn virus_fraction_text(&self) -> String {
        format!(
            "{:.4}",
            self.viral_chunks as f64 / self.chunks.len().max(1) as f64
        )
    }

    pub fn call(&self) -> &'static str {
        if self.is_virus {
            "virus"
        } else {
            "others"
        }
    }
}

/// Split a chunk id `<record>_chunk_<j>` into the record id and `j`.
pub fn split_chunk_id(chunk_id: &str) -> Option<(&str, usize)> {
    let pos = chunk_id.rfind("_chunk_")?;
    let j = chunk_id[pos + 7..].parse().ok()?;
    Some((&chunk_id[..pos], j))
}

/// The input sequence a chunk belongs to, and the chunk number (an id that is not a chunk id
/// counts as a one-chunk sequence of its own).
fn seq_of(chunk_id: &str) -> (&str, usize) {
    split_chunk_id(chunk_id).unwrap_or((chunk_id, 1))
}

/// Summaries per input sequence, in order of first appearance in `scores`. A sequence is
/// called viral when at least `min_fraction` of its scored chunks are (0.5: the majority).
pub fn summarise(
    scores: &[OrfScore],
    maxima: &ChunkMaxima,
    min_fraction: f64,
) -> Vec<SequenceSummary> {
    let mut order: Vec<&str> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for s in scores {
        let seq = seq_of(s.chunk_id()).0;
        if seen.insert(seq) {
            order.push(seq);
        }
    }
    // Each chunk once, from the maxima (not per ORF), so long contigs stay linear.
    let mut per_seq: std::collections::HashMap<&str, Vec<(usize, ChunkBest)>> = Default::default();
    for (chunk, best) in maxima {
        let (seq, j) = seq_of(chunk);
        per_seq.entry(seq).or_default().push((j, *best));
    }
    order
        .into_iter()
        .map(|seq| {
            let mut chunks = per_seq.remove(seq).unwrap_or_default();
            chunks.sort_by_key(|c| c.0);
            let viral = chunks.iter().filter(|c| c.1.is_virus()).count();
            let max = chunks
                .iter()
                .map(|c| c.1.virus)
                .fold(f32::NEG_INFINITY, f32::max);
            let mean =
                chunks.iter().map(|c| c.1.virus as f64).sum::<f64>() / chunks.len().max(1) as f64;
            SequenceSummary {
                id: seq.to_string(),
                is_virus: viral as f64 >= min_fraction * chunks.len() as f64 && viral > 0,
                viral_chunks: viral,
                max_virus_score: max,
                mean_virus_score: mean as f32,
                chunks,
            }
        })
        .collect()
}

/// `sequence_summary.tsv`.
pub fn write_summary(set: &OutputSet, seqs: &[SequenceSummary]) -> Result<()> {
    let mut body = String::from(
        "sequence_id\tchunks_scored\tchunks_virus\tvirus_fraction\tmax_virus_score\tmean_chunk_virus_score\tprediction\n",
    );
    for s in seqs {
        body.push_str(&format!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            s.id,
            s.chunks.len(),
            s.viral_chunks,
            s.virus_fraction_text(),
            format_f32(s.max_virus_score),
            format_f32(s.mean_virus_score),
            s.call()
        ));
    }
    set.write(SUMMARY_FILE, body.as_bytes())
        .context("writing sequence summary")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_print_like_numpy_float32() {
        assert_eq!(format_f32(0.51399034), "0.51399034");
        assert_eq!(format_f32(0.5039121), "0.5039121");
        assert_eq!(format_f32(1.0), "1.0");
        assert_eq!(format_f32(0.0), "0.0");
        assert_eq!(format_f32(1e-5), "1e-05");
        assert_eq!(format_f32(3.2e-7), "3.2e-07");
        assert_eq!(format_f32(0.0001), "0.0001");
        assert_eq!(format_f32(1.5e-12), "1.5e-12");
    }

    fn s(id: &str, others: f32, virus: f32) -> OrfScore {
        OrfScore {
            id: id.into(),
            others,
            virus,
        }
    }

    #[test]
    fn chunk_call_uses_max_over_frames_with_ties_to_virus() {
        let scores = [
            s("a_chunk_1F1", 0.6, 0.4),
            s("a_chunk_1R2", 0.45, 0.55),
            s("a_chunk_2F3", 0.5, 0.5),
        ];
        let m = chunk_maxima(&scores);
        let best = |others, virus| ChunkBest { others, virus };
        assert_eq!(m["a_chunk_1"], best(0.6, 0.55));
        assert!(!m["a_chunk_1"].is_virus()); // 0.55 < 0.6 -> False
        assert_eq!(m["a_chunk_2"], best(0.5, 0.5));
        assert!(m["a_chunk_2"].is_virus()); // tie -> True
        assert!(!scores[2].is_virus()); // but the ORF label tie goes to others
    }

    #[test]
    fn summary_per_sequence() {
        let scores = [
            s("x_chunk_1F1", 0.2, 0.8),
            s("x_chunk_2F1", 0.9, 0.1),
            s("x_chunk_3R1", 0.3, 0.7),
            s("y_chunk_1_chunk_1F2", 0.9, 0.1),
        ];
        let sum = summarise(&scores, &chunk_maxima(&scores), 0.5);
        assert_eq!(sum.len(), 2);
        assert_eq!(sum[0].id, "x");
        assert_eq!(sum[0].viral_chunks, 2);
        assert!(sum[0].is_virus);
        assert!((sum[0].max_virus_score - 0.8).abs() < 1e-7);
        assert!((sum[0].mean_virus_score - (0.8 + 0.1 + 0.7) / 3.0).abs() < 1e-6);
        assert_eq!(sum[1].id, "y_chunk_1");
        assert!(!sum[1].is_virus);
    }
}
