//! FASTA input as users really have it, and as an attacker could make it: RNA, every
//! compression, non-UTF-8 headers, and hostile files (truncated or corrupt streams,
//! decompression bombs, endless lines), each run through the binary under a hard memory limit
//! and a time bound. Protein FASTA as users write it (rare residues, lower case, whitespace,
//! stops, empty records) and the wrong kind of sequence given to `embed-protein` / `embed-dna`,
//! through the binary on the tiny models. Then property tests that mutate valid FASTA (DNA and
//! protein) and TOML config and call the parsers directly: never a panic, only records or a
//! clean one-line error.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::{Duration, Instant};

use crate::common::{assert_refused, fixtures, model_cases, run_bounded, stderr, Case};
use virnucpro::io::embeddings::EmbeddingSet;

/// Address space given to the binary in hostile runs: room for the program and its threads,
/// far less than any bomb here expands to.
const MEM_MIB: u64 = 1024;
/// Wall time given to one hostile run.
const SECS: u64 = 60;

#[derive(Clone, Copy, Debug)]
enum Format {
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

const FORMATS: [Format; 4] = [Format::Gzip, Format::Bzip2, Format::Xz, Format::Zstd];

impl Format {
    fn ext(self) -> &'static str {
        match self {
            Format::Gzip => "gz",
            Format::Bzip2 => "bz2",
            Format::Xz => "xz",
            Format::Zstd => "zst",
        }
    }

    /// One complete stream of `data` in this format.
    fn compress(self, data: &[u8]) -> Vec<u8> {
        match self {
            Format::Gzip => {
                let mut e =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Format::Bzip2 => {
                let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::default());
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Format::Xz => {
                let mut e = liblzma::write::XzEncoder::new(Vec::new(), 6);
                e.write_all(data).unwrap();
                e.finish().unwrap()
            }
            Format::Zstd => zstd::stream::encode_all(data, 3).unwrap(),
        }
    }
}

fn input_fa() -> Vec<u8> {
    fs::read(fixtures().join("e2e/input.fa")).unwrap()
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, bytes).unwrap();
    p
}

/// `translate INPUT --outdir OUT -c 300 --write-chunks`, under the hostile-input limits.
fn translate(input: &Path, out: &Path, stdin: Option<&[u8]>) -> Output {
    run_bounded(
        &[
            "translate",
            input.to_str().unwrap(),
            "--outdir",
            out.to_str().unwrap(),
            "-c",
            "300",
            "--write-chunks",
        ],
        stdin,
        MEM_MIB,
        SECS,
    )
}

/// What a finished translate leaves; none of it may exist after a refusal.
fn finished_outputs(out: &Path) -> Vec<PathBuf> {
    [
        "identified_nucleotide.fa",
        "identified_protein.faa",
        "chunked.fa",
        "translate.json",
    ]
    .iter()
    .map(|f| out.join(f))
    .collect()
}

/// Run `bytes` (written as `name`) through translate and assert a clean refusal: exit 1, one
/// `error:` line naming the file and every needle, no finished output.
fn assert_translate_refuses(name: &str, bytes: &[u8], needles: &[&str]) {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), name, bytes);
    let out = tmp.path().join("out");
    let started = Instant::now();
    let o = translate(&input, &out, None);
    let outputs = finished_outputs(&out);
    let outputs: Vec<&Path> = outputs.iter().map(PathBuf::as_path).collect();
    let mut needles = needles.to_vec();
    needles.push(name);
    assert_refused(&o, 1, &needles, &outputs);
    assert!(started.elapsed() < Duration::from_secs(SECS));
}

/// The three translate outputs of a successful run, as bytes.
fn outputs(out: &Path) -> [Vec<u8>; 3] {
    [
        "chunked.fa",
        "identified_nucleotide.fa",
        "identified_protein.faa",
    ]
    .map(|f| fs::read(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}")))
}

fn assert_success(o: &Output) {
    assert!(o.status.success(), "stderr:\n{}", stderr(o));
    assert!(!stderr(o).contains("error:"), "stderr:\n{}", stderr(o));
}

/// The translate outputs of the e2e fixture itself, the reference for equivalent inputs.
fn reference_outputs() -> [Vec<u8>; 3] {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = translate(&fixtures().join("e2e/input.fa"), &out, None);
    assert_success(&o);
    outputs(&out)
}

/// The fixture as RNA: every T/t of the sequence lines (not the headers) as U/u.
fn as_rna(fasta: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(fasta.len());
    for line in fasta.split_inclusive(|&b| b == b'\n') {
        if line.starts_with(b">") {
            out.extend_from_slice(line);
        } else {
            out.extend(line.iter().map(|&b| match b {
                b'T' => b'U',
                b't' => b'u',
                b => b,
            }));
        }
    }
    out
}

#[test]
fn rna_input_gives_the_same_outputs_as_dna_and_says_so_once() {
    let rna = as_rna(&input_fa());
    let sequence_lines = || rna.split(|&b| b == b'\n').filter(|l| !l.starts_with(b">"));
    assert!(sequence_lines().any(|l| l.contains(&b'U')));
    assert!(!sequence_lines().any(|l| l.contains(&b'T') || l.contains(&b't')));
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "input_rna.fa", &rna);
    let out = tmp.path().join("out");
    let o = translate(&input, &out, None);
    assert_success(&o);
    let err = stderr(&o);
    assert_eq!(
        err.matches("read U as T (RNA input").count(),
        1,
        "stderr:\n{err}"
    );
    assert!(err.contains("input_rna.fa"), "stderr:\n{err}");
    assert!(
        outputs(&out) == reference_outputs(),
        "RNA outputs differ from DNA outputs"
    );
}

#[test]
fn every_compression_gives_the_same_outputs_as_plain_text() {
    let plain = input_fa();
    let want = reference_outputs();
    for format in FORMATS {
        let tmp = tempfile::tempdir().unwrap();
        // Two concatenated streams (as `cat a.gz b.gz` or parallel compressors make), split in
        // the middle of a record.
        let cut = plain.len() / 2;
        let mut bytes = format.compress(&plain[..cut]);
        bytes.extend(format.compress(&plain[cut..]));
        // A misleading name: the format is read from the bytes.
        let input = write(tmp.path(), "input.fa", &bytes);
        let out = tmp.path().join("out");
        let o = translate(&input, &out, None);
        assert_success(&o);
        assert!(
            outputs(&out) == want,
            "{format:?}: outputs differ from plain input"
        );
    }
}

#[test]
fn compressed_stdin_is_read() {
    let bytes = Format::Zstd.compress(&input_fa());
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out");
    let o = translate(Path::new("-"), &out, Some(&bytes));
    assert_success(&o);
    assert!(outputs(&out) == reference_outputs());
}

#[test]
fn non_utf8_description_is_accepted() {
    let mut bytes = b">latin1_desc souche isol\xe9e \xff\xfe\n".to_vec();
    bytes.extend_from_slice(b"ATGGCCAAATTTGGGCCCAAATTTGGGCCCTAA\n");
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "latin1.fa", &bytes);
    let out = tmp.path().join("out");
    let o = translate(&input, &out, None);
    assert_success(&o);
    let protein = fs::read_to_string(out.join("identified_protein.faa")).unwrap();
    let headers: Vec<&str> = protein.lines().filter(|l| l.starts_with('>')).collect();
    assert!(!headers.is_empty(), "{protein}");
    assert!(
        headers
            .iter()
            .all(|h| h.starts_with(">latin1_desc_chunk_1")),
        "{protein}"
    );
}

#[test]
fn non_utf8_id_is_refused_by_record_number() {
    assert_translate_refuses(
        "bad_id.fa",
        b">ok\nACGT\n>caf\xe9 desc\nACGT\n",
        &["record #2", "not UTF-8", "0xe9"],
    );
}

#[test]
fn a_lone_header_mark_is_refused_not_read_as_the_end() {
    // Before, a '>' line without a sequence silently ended the file: records after it vanished.
    assert_translate_refuses(
        "lone_mark.fa",
        b">a\nACGT\n>\n>b\nACGT\n",
        &["record #2", "empty header"],
    );
}

#[test]
fn a_nul_byte_inside_a_sequence_is_refused() {
    // Past the first 8 KiB, where the binary-file sniff does not look.
    let mut bytes = b">a\n".to_vec();
    bytes.extend(std::iter::repeat_n(b'A', 10_000));
    bytes.extend_from_slice(b"\0CGT\n");
    assert_translate_refuses("nul.fa", &bytes, &["record 'a'", "0x00", "position 10001"]);
}

#[test]
fn a_zip_archive_is_refused_with_what_to_do() {
    assert_translate_refuses(
        "input.fa.zip",
        b"PK\x03\x04\x14\x00\x00\x00\x08\x00",
        &["zip archive", "unzip"],
    );
}

#[test]
fn duplicate_ids_are_still_refused() {
    // Ids are kept as hashes now; the message still names the id.
    assert_translate_refuses(
        "dups.fa",
        b">x desc\nACGT\n>y\nACGT\n>x other\nAC\n",
        &["duplicate record id 'x'"],
    );
}

/// The e2e input in `format`, cut short `cut` bytes before its end.
fn truncated(format: Format, cut: usize) -> Vec<u8> {
    let mut bytes = format.compress(&input_fa());
    bytes.truncate(bytes.len() - cut);
    bytes
}

#[test]
fn truncated_gzip_is_refused() {
    assert_translate_refuses(
        "cut.fa.gz",
        &truncated(Format::Gzip, 20),
        &["corrupt or truncated gzip", "gzip -t"],
    );
}

#[test]
fn truncated_bzip2_is_refused() {
    assert_translate_refuses(
        "cut.fa.bz2",
        &truncated(Format::Bzip2, 20),
        &["corrupt or truncated bzip2", "bzip2 -t"],
    );
}

#[test]
fn truncated_xz_is_refused() {
    assert_translate_refuses(
        "cut.fa.xz",
        &truncated(Format::Xz, 20),
        &["corrupt or truncated xz", "xz -t"],
    );
}

#[test]
fn truncated_zstd_is_refused() {
    assert_translate_refuses(
        "cut.fa.zst",
        &truncated(Format::Zstd, 20),
        &["corrupt or truncated zstd", "zstd -t"],
    );
}

#[test]
fn corrupt_gzip_is_refused() {
    let mut bytes = Format::Gzip.compress(&input_fa());
    let mid = bytes.len() / 2;
    for b in &mut bytes[mid..mid + 8] {
        *b ^= 0xa5;
    }
    assert_translate_refuses("corrupt.fa.gz", &bytes, &["gzip"]);
}

/// A decompression bomb: a header, then `gib` GiB of 'A' with no newline, as concatenated
/// streams of one small stream each (a few KB to a few MB on disk).
fn one_line_bomb(format: Format, gib: usize) -> Vec<u8> {
    let block = vec![b'A'; 64 << 20];
    let piece = format.compress(&block);
    let mut bytes = format.compress(b">bomb one endless line\n");
    for _ in 0..gib * 16 {
        bytes.extend_from_slice(&piece);
    }
    bytes
}

fn assert_bomb_refused(format: Format) {
    let name = format!("bomb.fa.{}", format.ext());
    let bytes = one_line_bomb(format, 4);
    assert!(
        bytes.len() < 64 << 20,
        "{format:?} bomb is {} bytes",
        bytes.len()
    );
    // Either limit may be met first: the record cap (half the memory limit) or an allocation
    // that fails; both are one line naming the record.
    assert_translate_refuses(&name, &bytes, &["record #1 ('bomb')", "memory"]);
}

#[test]
fn gzip_bomb_of_one_endless_line_is_refused_in_bounded_memory() {
    assert_bomb_refused(Format::Gzip);
}

#[test]
fn bzip2_bomb_of_one_endless_line_is_refused_in_bounded_memory() {
    assert_bomb_refused(Format::Bzip2);
}

#[test]
fn xz_bomb_of_one_endless_line_is_refused_in_bounded_memory() {
    assert_bomb_refused(Format::Xz);
}

#[test]
fn zstd_bomb_of_one_endless_line_is_refused_in_bounded_memory() {
    assert_bomb_refused(Format::Zstd);
}

#[test]
fn endless_header_line_is_refused() {
    let mut bytes = b">".to_vec();
    bytes.extend(std::iter::repeat_n(b'x', 3 << 20));
    assert_translate_refuses(
        "long_header.fa.zst",
        &Format::Zstd.compress(&bytes),
        &["record #1", "header line longer than 1 MiB"],
    );
}

#[test]
fn bomb_of_blank_lines_after_a_record_is_read_in_bounded_memory_and_time() {
    // 2 GiB of newlines: nothing accumulates, so it must simply finish, within the limits.
    let mut bytes = Format::Zstd.compress(b">a\nATGGCCTAA\n");
    let piece = Format::Zstd.compress(&vec![b'\n'; 64 << 20]);
    for _ in 0..32 {
        bytes.extend_from_slice(&piece);
    }
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "blank_bomb.fa.zst", &bytes);
    let out = tmp.path().join("out");
    let o = translate(&input, &out, None);
    assert_success(&o);
    let summary: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("translate.json")).unwrap()).unwrap();
    assert_eq!(summary["records"], 1);
}

// ---- protein FASTA through embed-protein, and the wrong kind of sequence ----

/// tests/models/esm2_parity.rs's tolerance on the fair-esm goldens (mean embeddings, max abs diff).
const ESM_TOL: f32 = 1e-4;

/// `CMD INPUT --model fixtures/MODEL --output OUT -d cpu`, under the time bound. No memory cap:
/// these are ordinary inputs, and a model needs more address space than a parser.
fn embed(cmd: &str, model: &str, input: &Path, out: &Path) -> Output {
    run_bounded(
        &[
            cmd,
            input.to_str().unwrap(),
            "--model",
            fixtures().join(model).to_str().unwrap(),
            "--output",
            out.to_str().unwrap(),
            "-d",
            "cpu",
        ],
        None,
        0,
        SECS,
    )
}

/// `embed-protein` over `fasta` with the tiny ESM-2, which must succeed: the rows by id, and
/// stderr.
fn embed_protein_rows(fasta: &str) -> (Vec<(String, Vec<f32>)>, String) {
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), "in.faa", fasta.as_bytes());
    let out = tmp.path().join("protein.safetensors");
    let o = embed("embed-protein", "esm2_tiny", &input, &out);
    assert_success(&o);
    let set = EmbeddingSet::read(&out).unwrap();
    let rows = (0..set.ids.len())
        .map(|i| (set.ids[i].clone(), set.row(i).to_vec()))
        .collect();
    (rows, stderr(&o))
}

/// Every row equals its fair-esm golden (`cases` in the order of the rows) within [`ESM_TOL`].
fn assert_goldens(rows: &[(String, Vec<f32>)], cases: &[Case], how: &str) {
    assert_eq!(rows.len(), cases.len(), "{how}: row count");
    for ((id, row), case) in rows.iter().zip(cases) {
        assert_eq!(id, &case.id, "{how}: order");
        let diff = row
            .iter()
            .zip(&case.embedding)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        assert!(
            diff <= ESM_TOL,
            "{how}: {} ({:?}) is {diff} from fair-esm's embedding",
            case.id,
            case.sequence
        );
    }
}

/// The esm2_tiny goldens as FASTA, each sequence written by `write_seq`.
fn golden_fasta(write_seq: impl Fn(&str) -> String) -> (String, Vec<Case>) {
    let cases = model_cases("esm2_tiny");
    let text = cases
        .iter()
        .map(|c| format!(">{} golden\n{}\n", c.id, write_seq(&c.sequence)))
        .collect();
    (text, cases)
}

#[test]
fn protein_goldens_with_rare_amino_acids_pass_through_embed_protein() {
    // p_rare holds U (selenocysteine) and O: read as RNA, U became T and the row moved by ~1.
    let (fasta, cases) = golden_fasta(str::to_string);
    assert!(cases.iter().any(|c| c.sequence.contains('U')));
    let (rows, err) = embed_protein_rows(&fasta);
    assert_goldens(&rows, &cases, "as written");
    assert!(!err.contains("read U as T"), "stderr:\n{err}");
}

#[test]
fn lower_case_protein_is_read_as_upper_case() {
    // Before: every lower-case letter was <unk>.
    let (fasta, cases) = golden_fasta(str::to_ascii_lowercase);
    let (rows, _) = embed_protein_rows(&fasta);
    assert_goldens(&rows, &cases, "lower case");
}

#[test]
fn whitespace_inside_protein_lines_is_ignored() {
    // Spaces and tabs inside lines, and lines of 7 with trailing spaces and CRLF ends (before:
    // each inner space or tab was an <unk>).
    let (fasta, cases) = golden_fasta(|seq| {
        let spaced: String = seq
            .chars()
            .enumerate()
            .map(|(i, c)| match i % 5 {
                2 => format!(" {c}"),
                4 => format!("\t{c}"),
                _ => c.to_string(),
            })
            .collect();
        let chars: Vec<char> = spaced.chars().collect();
        chars
            .chunks(7)
            .map(|l| format!("{} \r", l.iter().collect::<String>()))
            .collect::<Vec<_>>()
            .join("\n")
    });
    let (rows, _) = embed_protein_rows(&fasta);
    assert_goldens(&rows, &cases, "with whitespace");
}

#[test]
fn a_final_stop_is_dropped() {
    // Prodigal's `*`, on the last line or alone on a line of its own (before: one more <unk>).
    let (fasta, cases) = golden_fasta(|seq| {
        if seq.len() % 2 == 0 {
            format!("{seq}*")
        } else {
            format!("{seq}\n*")
        }
    });
    let (rows, _) = embed_protein_rows(&fasta);
    assert_goldens(&rows, &cases, "with a final *");
}

/// `CMD` on `bytes` (written as `name`) with the tiny model of its kind: refused with exit 1,
/// one `error:` line naming the file and every needle, no output file.
fn assert_embed_refuses(cmd: &str, name: &str, bytes: &[u8], needles: &[&str]) {
    let model = if cmd == "embed-dna" {
        "dnabert_s_tiny"
    } else {
        "esm2_tiny"
    };
    let tmp = tempfile::tempdir().unwrap();
    let input = write(tmp.path(), name, bytes);
    let out = tmp.path().join("out.safetensors");
    let o = embed(cmd, model, &input, &out);
    let mut needles = needles.to_vec();
    needles.push(name);
    assert_refused(&o, 1, &needles, &[&out]);
}

#[test]
fn digits_in_a_protein_are_refused_naming_the_record() {
    // A GenBank-style numbered line: the digits were <unk> tokens.
    assert_embed_refuses(
        "embed-protein",
        "numbered.faa",
        b">ok\nMKVLA\n>gb1 numbered\n        1 mkvla agivg\n",
        &[
            "record #2 ('gb1')",
            "'1' at position 9",
            "not an amino-acid letter",
        ],
    );
}

#[test]
fn a_stop_inside_a_protein_is_refused_naming_the_record() {
    assert_embed_refuses(
        "embed-protein",
        "stops.faa",
        b">a\nMKV*LLAG*\n",
        &[
            "record #1 ('a')",
            "stop '*' at position 4",
            "only a final '*'",
        ],
    );
}

#[test]
fn an_empty_protein_record_is_refused_naming_the_record() {
    // Before: embedded as a row of zeros.
    assert_embed_refuses(
        "embed-protein",
        "empty.faa",
        b">a\nMKV\n>nothing here\n>c\nMKV\n",
        &["record #2 ('nothing')", "no residues"],
    );
    // A stop alone is no protein either.
    assert_embed_refuses(
        "embed-protein",
        "stop_only.faa",
        b">a\nMKV\n>s\n*\n",
        &["record #2 ('s')", "no residues"],
    );
}

#[test]
fn a_letter_esm2_has_no_token_for_is_refused() {
    assert_embed_refuses(
        "embed-protein",
        "j.faa",
        b">a\nMKJLV\n",
        &["record #1 ('a')", "'J' at position 3", "X"],
    );
}

#[test]
fn nucleotides_among_proteins_are_refused_by_embed_protein() {
    // One contig among proteins: before, the file passed (the warning needed most records to
    // look like DNA) and the contig was embedded as a protein of A, C, G and T.
    let mut fasta = b">p1\nMKVLAAGIVGLLLAVACSSAQ\n>p2\nMSKGEELFTGVVPILVELDG\n".to_vec();
    fasta.extend_from_slice(
        b">contig_7 len=60\nATGGCCAAATTTGGGCCCAAATTTGGGCCCTAAATGGCCAAATTTGGGCCCAAATTTGGG\n",
    );
    fasta.extend_from_slice(b">p4\nMKV\n");
    assert_embed_refuses(
        "embed-protein",
        "mixed.faa",
        &fasta,
        &[
            "record #3 ('contig_7')",
            "looks like nucleotides, not a protein",
            "20 or more letters",
        ],
    );
}

#[test]
fn short_peptides_and_homopolymers_of_nucleotide_letters_are_still_proteins() {
    // Short A/C/G/T peptides, poly-Ala and poly-Asn tracts: real proteins, never refused.
    let fasta = ">pep1\nACGT\n>pep2\nGATTACAGATTACA\n>polyA\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n\
                 >polyN\nNNNNNNNNNNNNNNNNNNNNNNNNNNNN\n>ga\nGAGAGAGAGAGAGAGAGAGAGAGA\n";
    let (rows, _) = embed_protein_rows(fasta);
    assert_eq!(rows.len(), 5);
}

#[test]
fn translate_proteins_are_read_unchanged_and_accepted() {
    // identified_protein.faa of both goldens: every record read byte for byte as written, and
    // the whole file accepted by embed-protein (`run` on the e2e input: tests/pipeline/e2e.rs).
    for chunk in ["chunk300", "chunk500"] {
        let path = fixtures()
            .join("e2e")
            .join(chunk)
            .join("identified_protein.faa");
        let text = fs::read_to_string(&path).unwrap();
        let want = crate::common::records(&text);
        let reader = virnucpro::io::fasta::FastaReader::open(&path).unwrap();
        let got = virnucpro::seq::protein::read_proteins(reader).unwrap();
        assert_eq!(got.len(), want.len(), "{chunk}");
        for (g, (header, seq)) in got.iter().zip(&want) {
            assert_eq!(&g.id, header.split_whitespace().next().unwrap());
            assert_eq!(g.seq, seq.as_bytes(), "{chunk}: {}", g.id);
        }
        let (rows, _) = embed_protein_rows(&text);
        assert_eq!(rows.len(), want.len(), "{chunk}");
    }
}

#[test]
fn a_protein_after_record_1000_is_refused_by_embed_dna() {
    // Only the first 1000 records were checked: record 1001 was embedded as DNA.
    let mut fasta = String::new();
    for i in 1..=1000 {
        fasta.push_str(&format!(">d{i}\nATGGCCAAATTTGGGCCCTAA\n"));
    }
    fasta.push_str(">p1001 a protein\nMSKGEELFTGVVPILVELDGDVNGHKFSVSGEG\n");
    assert_embed_refuses(
        "embed-dna",
        "late_protein.fa",
        fasta.as_bytes(),
        &["record #1001 ('p1001')", "looks like a protein, not DNA"],
    );
}

mod fasta_properties {
    //! Mutated e2e input straight into the reader: records or one clean error, never a panic.

    use super::*;
    use proptest::prelude::*;
    use virnucpro::io::fasta::FastaReader;

    #[derive(Debug, Clone)]
    enum Mutation {
        Flip(usize, u8),
        Insert(usize, u8),
        Delete(usize),
        Truncate(usize),
    }

    /// Bytes that matter to a FASTA parser, and any byte.
    fn byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(b'>'),
            Just(b'\n'),
            Just(b'\r'),
            Just(0u8),
            Just(b' '),
            Just(b'U'),
            0x80u8..=0xff,
            any::<u8>(),
        ]
    }

    fn mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), byte()).prop_map(|(i, b)| Mutation::Flip(i, b)),
            (any::<usize>(), byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<usize>().prop_map(Mutation::Delete),
            any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
        if bytes.is_empty() {
            return;
        }
        match *m {
            Mutation::Flip(i, b) => {
                let i = i % bytes.len();
                bytes[i] = b;
            }
            Mutation::Insert(i, b) => bytes.insert(i % (bytes.len() + 1), b),
            Mutation::Delete(i) => {
                bytes.remove(i % bytes.len());
            }
            Mutation::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
        }
    }

    /// Read everything; check what every record must be whatever the input.
    fn read_checked(bytes: Vec<u8>) -> Result<usize, String> {
        let started = Instant::now();
        let reader = FastaReader::from_reader(Box::new(std::io::Cursor::new(bytes)), "p.fa".into())
            .map_err(|e| format!("{e:#}"))?;
        let mut n = 0;
        for rec in reader.into_iter().flatten() {
            let rec = rec.map_err(|e| format!("{e:#}"))?;
            assert!(!rec.id.is_empty(), "empty id");
            assert!(!rec.id.contains(char::is_whitespace), "id {:?}", rec.id);
            assert!(!rec.id.contains(char::is_control), "id {:?}", rec.id);
            assert!(!rec.seq.contains(&b'\n'), "newline in sequence");
            assert!(
                !rec.seq.contains(&b'U') && !rec.seq.contains(&b'u'),
                "U left in"
            );
            assert!(rec.seq.last().is_none_or(|b| !b.is_ascii_whitespace()));
            n += 1;
        }
        assert!(started.elapsed() < Duration::from_secs(10), "slow read");
        Ok(n)
    }

    fn assert_one_line(err: &str) {
        assert!(!err.contains('\n'), "multi-line error: {err}");
        assert!(
            err.starts_with("p.fa") || err.contains(" p.fa"),
            "unnamed: {err}"
        );
    }

    /// translate's proteins, with the letters users add: rare residues, lower case, a stop.
    fn protein_fa() -> Vec<u8> {
        let mut bytes = fs::read(fixtures().join("e2e/chunk300/identified_protein.faa")).unwrap();
        bytes.extend_from_slice(b">rare sel\nMKUOBZX.-\n>lower\nmkvlaag\nivg*\n");
        bytes
    }

    /// Bytes that matter to a protein reader.
    fn protein_byte() -> impl Strategy<Value = u8> {
        prop_oneof![
            Just(b'>'),
            Just(b'\n'),
            Just(b' '),
            Just(b'\t'),
            Just(b'*'),
            Just(b'U'),
            Just(b'J'),
            b'a'..=b'z',
            b'0'..=b'9',
            b'A'..=b'T',
            any::<u8>(),
        ]
    }

    fn protein_mutation() -> impl Strategy<Value = Mutation> {
        prop_oneof![
            (any::<usize>(), protein_byte()).prop_map(|(i, b)| Mutation::Flip(i, b)),
            (any::<usize>(), protein_byte()).prop_map(|(i, b)| Mutation::Insert(i, b)),
            any::<usize>().prop_map(Mutation::Delete),
            any::<usize>().prop_map(Mutation::Truncate),
        ]
    }

    /// embed-protein's reader path: every record a valid ESM-2 protein, or a one-line refusal
    /// naming the file and (for what is wrong inside the text) the record.
    fn read_proteins_checked(bytes: Vec<u8>) {
        let refused = |e: anyhow::Error| {
            let err = format!("{e:#}");
            assert_one_line(&err);
            err
        };
        let reader =
            match FastaReader::from_reader(Box::new(std::io::Cursor::new(bytes)), "p.fa".into()) {
                Ok(Some(r)) => r,
                Ok(None) => return,
                Err(e) => {
                    refused(e);
                    return;
                }
            };
        match virnucpro::seq::protein::read_proteins(reader) {
            Ok(records) => {
                let mut ids = std::collections::HashSet::new();
                for rec in records {
                    assert!(ids.insert(rec.id.clone()), "duplicate id {}", rec.id);
                    assert!(!rec.seq.is_empty(), "empty protein {}", rec.id);
                    assert!(
                        rec.seq
                            .iter()
                            .all(|&b| (b.is_ascii_uppercase() && b != b'J')
                                || b == b'.'
                                || b == b'-'),
                        "{}: {:?}",
                        rec.id,
                        String::from_utf8_lossy(&rec.seq)
                    );
                    assert!(!virnucpro::seq::protein::looks_like_nucleotide(&rec.seq));
                }
            }
            Err(e) => {
                let err = refused(e);
                assert!(err.contains("record"), "names no record: {err}");
            }
        }
    }

    fn cases() -> ProptestConfig {
        // PROPTEST_CASES overrides this for a longer run (proptest reads it for the default).
        let default = ProptestConfig::default().cases;
        let from_env = std::env::var("PROPTEST_CASES").is_ok();
        ProptestConfig::with_cases(if from_env { default } else { 64 })
    }

    proptest! {
        #![proptest_config(cases())]

        #[test]
        fn mutated_plain_fasta_reads_or_fails_cleanly(
            muts in proptest::collection::vec(mutation(), 1..8)
        ) {
            let mut bytes = input_fa();
            for m in &muts {
                apply(&mut bytes, m);
            }
            if let Err(e) = read_checked(bytes) {
                assert_one_line(&e);
            }
        }

        #[test]
        fn mutated_protein_fasta_reads_as_proteins_or_is_refused_by_record(
            muts in proptest::collection::vec(protein_mutation(), 1..8)
        ) {
            let mut bytes = protein_fa();
            for m in &muts {
                apply(&mut bytes, m);
            }
            read_proteins_checked(bytes);
        }

        #[test]
        fn mutated_fasta_in_a_compressed_wrapper_reads_or_fails_cleanly(
            muts in proptest::collection::vec(mutation(), 0..4),
            format in 0..4usize,
        ) {
            let mut bytes = input_fa();
            for m in &muts {
                apply(&mut bytes, m);
            }
            // The text mutated inside, then the compressed stream mutated too: decoders must
            // report damage, not panic or hang.
            let format = FORMATS[format];
            let mut packed = format.compress(&bytes);
            if let Some(m) = muts.first() {
                apply(&mut packed, m);
            }
            if let Err(e) = read_checked(packed) {
                assert_one_line(&e);
            }
        }
    }
}

mod config_properties {
    //! Mutated TOML config through `Config::load` and onto the real command line: a config
    //! or one clean error, never a panic.

    use super::*;
    use clap::CommandFactory;
    use proptest::prelude::*;
    use virnucpro::config::Config;

    fn example() -> String {
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/virnucpro.toml"))
            .unwrap()
    }

    /// Load `text` as a config file, and apply what loads to the real CLI.
    fn load_and_apply(text: &[u8]) {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("c.toml");
        fs::write(&path, text).unwrap();
        match Config::load(&path) {
            Ok(cfg) => {
                let cmd = cfg.apply(virnucpro::cli::Cli::command());
                // Parsing may fail (a configured value clap refuses); it must not panic.
                let _ = cmd.try_get_matches_from(["virnucpro", "translate", "in.fa", "-o", "o"]);
            }
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(!msg.contains('\n'), "multi-line error: {msg}");
                assert!(msg.contains("c.toml"), "unnamed: {msg}");
            }
        }
    }

    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            any::<i64>().prop_map(|n| n.to_string()),
            any::<f64>().prop_map(|f| format!("{f:?}")),
            Just("nan".to_string()),
            Just("-inf".to_string()),
            "[a-z0-9:,é ]{0,12}".prop_map(|s| format!("{s:?}")),
            Just("true".to_string()),
            Just("[1, 2]".to_string()),
            Just("{ a = 1 }".to_string()),
        ]
    }

    const KEYS: [(&str, &str); 12] = [
        ("translate", "chunk_size"),
        ("translate", "shard_size"),
        ("translate", "threads"),
        ("embed", "device"),
        ("embed", "precision"),
        ("embed", "batch_tokens"),
        ("embed", "threads"),
        ("embed", "checkpoint_secs"),
        ("embed", "checkpoint_dir"),
        ("predict", "min_viral_fraction"),
        ("predict", "plot_top"),
        ("models", "esm"),
    ];

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(
            if std::env::var("PROPTEST_CASES").is_ok() { ProptestConfig::default().cases } else { 64 }
        ))]

        #[test]
        fn mutated_example_config_loads_or_fails_cleanly(
            edits in proptest::collection::vec((any::<usize>(), any::<u8>(), any::<bool>()), 1..6)
        ) {
            let mut text = example().into_bytes();
            for (i, b, insert) in edits {
                let i = i % (text.len() + 1);
                if insert || i == text.len() {
                    text.insert(i, b);
                } else {
                    text[i] = b;
                }
            }
            load_and_apply(&text);
        }

        #[test]
        fn any_value_for_any_key_loads_or_fails_cleanly(
            entries in proptest::collection::vec((0..KEYS.len(), value()), 1..6)
        ) {
            // One table each, as a person writes it (a repeated key is still possible).
            let mut tables = std::collections::BTreeMap::<&str, String>::new();
            for (k, v) in entries {
                let (table, key) = KEYS[k];
                tables.entry(table).or_default().push_str(&format!("{key} = {v}\n"));
            }
            let text: String = tables
                .iter()
                .map(|(table, body)| format!("[{table}]\n{body}"))
                .collect();
            load_and_apply(text.as_bytes());
        }
    }
}
