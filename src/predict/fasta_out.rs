//! `viral_sequences.fa` and `viral_chunks.fa`: the sequences `predict` calls viral, copied from
//! FASTA files the user names (`--sequences`: the sample's input; `--chunks`: translate's
//! `chunked.fa`), so that nobody has to join tables to get them. `run` passes both.
//!
//! The files are streamed through the house reader ([`crate::io::fasta`]: compression, FASTQ,
//! binary and id checks included), so memory holds one record plus the ids of the predictions,
//! whatever the size of the input. A copy is only right if the FASTA is the one the sample came
//! from, so every id the predictions hold must be found in it exactly once; a chunk must also
//! give the reading frames that were scored (which catches a `chunked.fa` of another
//! `--chunk-size`, whose chunk ids are the same). Anything else is an error naming the file.
//! Records the predictions do not hold are normal (a sequence or chunk without an ORF has no
//! call) and are only counted.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;

use super::report::{format_f32, ChunkMaxima, OrfScore, SequenceSummary};
use crate::io::fasta::{input_label, FastaReader, SeqKind};
use crate::io::output::OutputSet;
use crate::seq::orf::{six_frame_orfs, OrfScratch, FRAMES};

pub const VIRAL_SEQUENCES_FILE: &str = "viral_sequences.fa";
pub const VIRAL_CHUNKS_FILE: &str = "viral_chunks.fa";

/// Sequence line width: Biopython's, as translate's chunked.fa, so a chunk is copied line for
/// line.
const LINE_WIDTH: usize = 60;

/// One viral FASTA as `predict.json` lists it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ViralFasta {
    /// The file written, in the output directory.
    pub file: String,
    /// The FASTA files it was copied from.
    pub from: Vec<String>,
    /// Records written: the viral sequences or chunks.
    pub records: usize,
    /// Records read from `from`, those without a call included.
    pub input_records: usize,
}

/// The ids a FASTA must hold, each with the header to write when it is viral.
struct Expected<'a> {
    /// "sequence" or "chunk", and the flag that names the FASTA, for messages.
    what: &'static str,
    flag: &'static str,
    /// What the flag should be given, for messages.
    hint: &'static str,
    ids: Vec<&'a str>,
    index: HashMap<&'a str, usize>,
    /// The header line (without '>') of each viral id; `None` for the others.
    headers: Vec<Option<String>>,
}

impl<'a> Expected<'a> {
    fn new(
        what: &'static str,
        flag: &'static str,
        hint: &'static str,
        calls: impl Iterator<Item = (&'a str, Option<String>)>,
    ) -> Self {
        let (ids, headers): (Vec<&str>, Vec<Option<String>>) = calls.unzip();
        let index = ids.iter().enumerate().map(|(i, &id)| (id, i)).collect();
        Self {
            what,
            flag,
            hint,
            ids,
            index,
            headers,
        }
    }
}

/// `viral_sequences.fa`: every record of `input` called `virus` in sequence_summary.tsv, in
/// input order, its sequence as written (RNA keeps its `U`), under the header
/// `ID call=virus viral_fraction=F chunks_viral=V/N max_virus_score=S` with the numbers as
/// sequence_summary.tsv prints them. The input's description is left out, so the header holds
/// only `key=value` fields after the id, whatever the description says.
pub fn write_viral_sequences(
    set: &OutputSet,
    input: &Path,
    sequences: &[SequenceSummary],
) -> Result<ViralFasta> {
    let expected = Expected::new(
        "sequence",
        "--sequences",
        "the FASTA the sample was translated from",
        sequences.iter().map(|s| {
            let header = s.is_virus.then(|| {
                format!(
                    "{} call=virus viral_fraction={} chunks_viral={}/{} max_virus_score={}",
                    s.id,
                    s.virus_fraction_text(),
                    s.viral_chunks,
                    s.chunks.len(),
                    format_f32(s.max_virus_score)
                )
            });
            (s.id.as_str(), header)
        }),
    );
    copy_viral(
        set,
        VIRAL_SEQUENCES_FILE,
        &[input.to_path_buf()],
        SeqKind::Verbatim,
        &expected,
        |i, seq, label| {
            // translate skips empty records, so a scored sequence is never empty: this file is
            // not the sample's input.
            if seq.is_empty() {
                bail!(
                    "{label}: sequence '{}' is empty here but has scored chunks; pass \
                     --sequences the FASTA the sample was translated from",
                    expected.ids[i]
                );
            }
            Ok(())
        },
        |_, _| Ok(()),
    )
}

/// `viral_chunks.fa`: every chunk called viral (`True` in prediction_results_highestscore.csv),
/// in the order of `inputs` (translate's chunked.fa: input order), its sequence as translate
/// wrote it, under the header `ID call=virus max_virus_score=S max_others_score=O` (its best
/// score of each class over its ORFs).
pub fn write_viral_chunks(
    set: &OutputSet,
    inputs: &[PathBuf],
    scores: &[OrfScore],
    maxima: &ChunkMaxima,
) -> Result<ViralFasta> {
    let expected = Expected::new(
        "chunk",
        "--chunks",
        "translate's chunked.fa (translate --write-chunks) from the run the embeddings came from",
        maxima.iter().map(|(&id, best)| {
            let header = best.is_virus().then(|| {
                format!(
                    "{id} call=virus max_virus_score={} max_others_score={}",
                    format_f32(best.virus),
                    format_f32(best.others)
                )
            });
            (id, header)
        }),
    );
    // The frames scored per chunk (bit k = FRAMES[k]); 0 where an ORF id has no frame label
    // (not made by translate), which leaves that chunk unchecked.
    let mut scored = vec![0u8; expected.ids.len()];
    for s in scores {
        if let (Some(&i), Some(k)) = (
            expected.index.get(s.chunk_id()),
            FRAMES.iter().position(|f| s.id.ends_with(f)),
        ) {
            scored[i] |= 1 << k;
        }
    }
    let mut scratch = OrfScratch::default();
    let mut orfs = Vec::with_capacity(FRAMES.len());
    let frames = |mask: u8| -> String {
        let names: Vec<&str> = (0..FRAMES.len())
            .filter(|k| mask & (1 << k) != 0)
            .map(|k| FRAMES[k])
            .collect();
        if names.is_empty() {
            "none".to_string()
        } else {
            names.join(" ")
        }
    };
    copy_viral(
        set,
        VIRAL_CHUNKS_FILE,
        inputs,
        SeqKind::Nucleotide,
        &expected,
        |i, seq, label| {
            orfs.clear();
            six_frame_orfs(seq, &mut scratch, &mut orfs);
            let kept = orfs.iter().fold(0u8, |m, o| m | 1 << o.frame);
            // Scored frames must be kept frames (some kept ones may have failed to embed).
            if scored[i] & !kept != 0 {
                bail!(
                    "{label}: chunk '{}' gives the ORFs {} here, but {} were scored: this is \
                     not the chunk that was classified (another --chunk-size, or another \
                     input?); pass --chunks {}",
                    expected.ids[i],
                    frames(kept),
                    frames(scored[i]),
                    expected.hint
                );
            }
            Ok(())
        },
        |id, label| {
            // identified_nucleotide.fa holds ORFs (chunk id + frame), whose sequences are
            // slices of a chunk, not the chunk: refused by name rather than as "missing".
            if let Some(frame) = FRAMES.iter().find(|f| id.ends_with(*f)) {
                let chunk = &id[..id.len() - frame.len()];
                if expected.index.contains_key(chunk) {
                    bail!(
                        "{label} holds ORFs (record '{id}' is frame {frame} of chunk \
                         '{chunk}'), not chunks: pass --chunks translate's chunked.fa \
                         (translate --write-chunks; run writes it), not identified_nucleotide.fa"
                    );
                }
            }
            Ok(())
        },
    )
}

/// Stream `inputs`, write the viral records of `expected` to `name` in the set, and check that
/// every expected id was read exactly once. `check` sees each expected record (its index, its
/// sequence, the file's label); `unknown` each id the predictions do not hold.
fn copy_viral(
    set: &OutputSet,
    name: &str,
    inputs: &[PathBuf],
    kind: SeqKind,
    expected: &Expected,
    mut check: impl FnMut(usize, &[u8], &str) -> Result<()>,
    unknown: impl Fn(&str, &str) -> Result<()>,
) -> Result<ViralFasta> {
    let mut out = set.create(name)?;
    // Per expected id: 0 = not read yet, else 1 + the index of the file it was read from.
    let mut found = vec![0usize; expected.ids.len()];
    let (mut written, mut read, mut without_call) = (0usize, 0usize, 0usize);
    for (f, path) in inputs.iter().enumerate() {
        // An empty file is read as no records: the check below says what is missing.
        let Some(reader) = FastaReader::open_allow_empty(path)? else {
            continue;
        };
        let reader = reader.with_kind(kind);
        let label = reader.label().to_string();
        for rec in reader {
            let rec = rec?;
            read += 1;
            let Some(&i) = expected.index.get(rec.id.as_str()) else {
                unknown(&rec.id, &label)?;
                without_call += 1;
                continue;
            };
            if found[i] != 0 {
                let first = input_label(&inputs[found[i] - 1]);
                bail!(
                    "{label}: {} '{}' appears twice (also in {first}), so which copy was \
                     classified is unknown; ids must be unique, as translate requires",
                    expected.what,
                    rec.id
                );
            }
            found[i] = f + 1;
            check(i, &rec.seq, &label)?;
            if let Some(header) = &expected.headers[i] {
                write_record(&mut out, header, &rec.seq)
                    .with_context(|| format!("writing {}", out.path().display()))?;
                written += 1;
            }
        }
    }
    let n = expected.ids.len();
    let missing = found.iter().filter(|&&f| f == 0).count();
    if missing > 0 {
        let first = expected.ids[found.iter().position(|&f| f == 0).expect("one is missing")];
        let files = match inputs {
            [one] => input_label(one),
            [first, rest @ ..] => format!(
                "{} (and {} more {} files)",
                input_label(first),
                rest.len(),
                expected.flag
            ),
            [] => unreachable!("the flag takes at least one file"),
        };
        let (what, flag, hint) = (expected.what, expected.flag, expected.hint);
        if missing == n {
            bail!(
                "{files} holds none of the {n} {what}s in the predictions (the first is \
                 '{first}'): it is not this sample's; pass {flag} {hint}"
            );
        }
        bail!(
            "{files} lacks {missing} of the {n} {what}s in the predictions (the first is \
             '{first}'); pass {flag} {hint}"
        );
    }
    if without_call > 0 {
        tracing::info!(
            "{name}: {without_call} of the {read} records read have no call (no ORF was scored \
             in them) and are not copied"
        );
    }
    out.finish()?;
    Ok(ViralFasta {
        file: name.to_string(),
        from: inputs.iter().map(|p| input_label(p)).collect(),
        records: written,
        input_records: read,
    })
}

fn write_record(out: &mut impl Write, header: &str, seq: &[u8]) -> std::io::Result<()> {
    out.write_all(b">")?;
    out.write_all(header.as_bytes())?;
    out.write_all(b"\n")?;
    for line in seq.chunks(LINE_WIDTH) {
        out.write_all(line)?;
        out.write_all(b"\n")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::predict::report::{chunk_maxima, summarise};
    use std::path::Path;

    fn orf(id: &str, others: f32, virus: f32) -> OrfScore {
        OrfScore {
            id: id.into(),
            others,
            virus,
        }
    }

    /// Run `write` in an output set in `dir`, commit it, and return the file it wrote.
    fn written(
        dir: &Path,
        name: &str,
        write: impl FnOnce(&OutputSet) -> Result<ViralFasta>,
    ) -> Result<(ViralFasta, String)> {
        let set = OutputSet::begin(dir, "t.json", &[VIRAL_SEQUENCES_FILE, VIRAL_CHUNKS_FILE])?;
        let report = write(&set)?;
        set.commit(b"{}")?;
        Ok((report, std::fs::read_to_string(dir.join(name)).unwrap()))
    }

    fn sequences(dir: &Path, fasta: &[u8], scores: &[OrfScore]) -> Result<(ViralFasta, String)> {
        let input = dir.join("input.fa");
        std::fs::write(&input, fasta).unwrap();
        let seqs = summarise(scores, &chunk_maxima(scores), 0.5);
        written(dir, VIRAL_SEQUENCES_FILE, |set| {
            write_viral_sequences(set, &input, &seqs)
        })
    }

    fn err(r: Result<(ViralFasta, String)>) -> String {
        format!("{:#}", r.unwrap_err())
    }

    /// b: 2 of 3 chunks viral; d: 1 of 1; a: none; c: no ORF at all (no call).
    fn sample_scores() -> Vec<OrfScore> {
        vec![
            orf("d_chunk_1F1", 0.1, 0.9),
            orf("a_chunk_1F1", 0.7, 0.3),
            orf("b_chunk_1F1", 0.2, 0.8),
            orf("b_chunk_2F1", 0.9, 0.1),
            orf("b_chunk_3R1", 0.3, 0.7),
        ]
    }

    #[test]
    fn viral_sequences_are_copied_unchanged_in_input_order() {
        let dir = tempfile::tempdir().unwrap();
        let b: String = "ACGUacgun".repeat(15); // 135 letters: RNA, lower case, N kept
        let fasta = format!(">a x\nACGT\n>b some description\n{b}\n>c\nGG\n>d\nTTTT\nCC\n");
        let (report, text) = sequences(dir.path(), fasta.as_bytes(), &sample_scores()).unwrap();
        let want = format!(
            ">b call=virus viral_fraction=0.6667 chunks_viral=2/3 max_virus_score=0.8\n{}\n{}\n{}\n\
             >d call=virus viral_fraction=1.0000 chunks_viral=1/1 max_virus_score=0.9\nTTTTCC\n",
            &b[..60],
            &b[60..120],
            &b[120..]
        );
        assert_eq!(text, want);
        assert_eq!((report.records, report.input_records), (2, 4));
        assert_eq!(report.file, VIRAL_SEQUENCES_FILE);
    }

    #[test]
    fn compressed_input_gives_the_same_file() {
        use std::io::Write as _;
        let dir = tempfile::tempdir().unwrap();
        let fasta = b">a\nACGT\n>b\nAAAA\n>d\nTTTT\n";
        let (_, plain) = sequences(dir.path(), fasta, &sample_scores()).unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(fasta).unwrap();
        let (_, from_gz) = sequences(dir.path(), &gz.finish().unwrap(), &sample_scores()).unwrap();
        assert_eq!(plain, from_gz);
    }

    #[test]
    fn nothing_viral_writes_an_empty_file() {
        let dir = tempfile::tempdir().unwrap();
        let scores = [orf("a_chunk_1F1", 0.7, 0.3)];
        let (report, text) = sequences(dir.path(), b">a\nACGT\n", &scores).unwrap();
        assert_eq!((text.as_str(), report.records), ("", 0));
        // No call at all (a sample without ORFs): empty too, the input still read.
        let (report, text) = sequences(dir.path(), b">a\nAC\n", &[]).unwrap();
        assert_eq!((text.as_str(), report.input_records), ("", 1));
    }

    #[test]
    fn a_fasta_that_is_not_the_samples_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let scores = sample_scores();
        let e = err(sequences(dir.path(), b">a\nA\n>b\nA\n>c\nA\n", &scores));
        assert!(
            e.contains("input.fa lacks 1 of the 3 sequences") && e.contains("'d'"),
            "{e}"
        );
        let e = err(sequences(dir.path(), b">x\nA\n>y\nA\n", &scores));
        assert!(e.contains("input.fa holds none of the 3 sequences"), "{e}");
        let e = err(sequences(dir.path(), b"", &scores));
        assert!(e.contains("holds none"), "{e}");
        let e = err(sequences(
            dir.path(),
            b">a\nA\n>b\nA\n>d\nA\n>b\nC\n",
            &scores,
        ));
        assert!(e.contains("input.fa: sequence 'b' appears twice"), "{e}");
        let e = err(sequences(dir.path(), b">a\nA\n>b\n>d\nA\n", &scores));
        assert!(e.contains("sequence 'b' is empty here"), "{e}");
        // The reader's own checks name the file too.
        let e = err(sequences(dir.path(), b"@r\nACGT\n+\nIIII\n", &scores));
        assert!(e.contains("input.fa looks like FASTQ"), "{e}");
        // A refused copy leaves nothing behind.
        assert!(!dir.path().join(VIRAL_SEQUENCES_FILE).exists());
    }

    /// Chunks whose kept frames are known: each is scored on exactly the frames it gives.
    fn chunk_sample() -> (String, Vec<OrfScore>) {
        let seqs = [
            (
                "s_chunk_1",
                "ATGGCTAAAGGCTTTCCCGGGAAACCCTTTGGGAAACCCGGGTTTAAAC".repeat(2),
            ),
            (
                "s_chunk_2",
                "ATGCCCGGGAAATTTCCCGGGAAACCCTTTGGGAAACCCGGGTTTCCG".to_string(),
            ),
            (
                "t_chunk_1",
                "GCTGCTGCTGCTGCTGCTGCTGCTGCTGCTGCTGCTGCTGCTGCTGCTGCTGCTGCTGCTGCTGCTGCTGCT"
                    .to_string(),
            ),
        ];
        let mut fasta = String::new();
        let mut scores = Vec::new();
        for (k, (id, seq)) in seqs.iter().enumerate() {
            fasta.push_str(&format!(">{id}\n"));
            for line in seq.as_bytes().chunks(60) {
                fasta.push_str(std::str::from_utf8(line).unwrap());
                fasta.push('\n');
            }
            let mut orfs = Vec::new();
            six_frame_orfs(seq.as_bytes(), &mut OrfScratch::default(), &mut orfs);
            assert!(!orfs.is_empty(), "{id} keeps a frame");
            for o in orfs {
                // s_chunk_2 is the only chunk not called viral.
                let virus = if k == 1 {
                    0.2
                } else {
                    0.6 + o.frame as f32 / 100.0
                };
                scores.push(orf(&format!("{id}{}", FRAMES[o.frame]), 1.0 - virus, virus));
            }
        }
        (fasta, scores)
    }

    fn chunks(dir: &Path, fasta: &str, scores: &[OrfScore]) -> Result<(ViralFasta, String)> {
        let input = dir.join("chunked.fa");
        std::fs::write(&input, fasta).unwrap();
        let maxima = chunk_maxima(scores);
        written(dir, VIRAL_CHUNKS_FILE, |set| {
            write_viral_chunks(set, &[input.clone()], scores, &maxima)
        })
    }

    #[test]
    fn viral_chunks_are_copied_line_for_line_with_their_best_scores() {
        let dir = tempfile::tempdir().unwrap();
        let (fasta, scores) = chunk_sample();
        let (report, text) = chunks(dir.path(), &fasta, &scores).unwrap();
        let maxima = chunk_maxima(&scores);
        let mut want = String::new();
        for (header, body) in records(&fasta) {
            let best = maxima[header.as_str()];
            if best.is_virus() {
                want.push_str(&format!(
                    ">{header} call=virus max_virus_score={} max_others_score={}\n{body}",
                    format_f32(best.virus),
                    format_f32(best.others)
                ));
            }
        }
        assert_eq!(text, want);
        assert_eq!((report.records, report.input_records), (2, 3));
    }

    /// (header, body with its line ends) of each record.
    fn records(fasta: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for line in fasta.lines() {
            match line.strip_prefix('>') {
                Some(h) => out.push((h.to_string(), String::new())),
                None => out.last_mut().unwrap().1.push_str(&format!("{line}\n")),
            }
        }
        out
    }

    #[test]
    fn orfs_or_chunks_of_another_chunking_are_refused_as_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let (fasta, scores) = chunk_sample();
        // identified_nucleotide.fa: ORF records.
        let orfs: String = scores
            .iter()
            .map(|s| format!(">{}\nACGT\n", s.id))
            .collect();
        let e = err(chunks(dir.path(), &orfs, &scores));
        assert!(
            e.contains("chunked.fa holds ORFs (record 's_chunk_1F") && e.contains("not chunks"),
            "{e}"
        );
        // The same ids over other bases: the scored frames are not there (CTAG repeats stop
        // every frame of both strands).
        let mut other = records(&fasta);
        other[0].1 = format!("{}\n", "CTAG".repeat(25));
        let other: String = other.iter().map(|(h, b)| format!(">{h}\n{b}")).collect();
        let e = err(chunks(dir.path(), &other, &scores));
        assert!(
            e.contains("chunk 's_chunk_1' gives the ORFs none here"),
            "{e}"
        );
        assert!(e.contains("another --chunk-size"), "{e}");
        // A chunk missing.
        let first_two: String = records(&fasta)[..2]
            .iter()
            .map(|(h, b)| format!(">{h}\n{b}"))
            .collect();
        let e = err(chunks(dir.path(), &first_two, &scores));
        assert!(
            e.contains("lacks 1 of the 3 chunks") && e.contains("'t_chunk_1'"),
            "{e}"
        );
    }
}
