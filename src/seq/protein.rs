//! What `embed-protein` reads as a protein: the protein alphabet as users write it, and the
//! records that are not proteins at all. Every choice refuses rather than guesses, because a
//! residue read wrong is embedded without a word and gives a score that looks fine and is not.
//!
//! A protein record is read as follows (fair-esm's `BatchConverter`, which the original uses,
//! for comparison):
//!
//! - **Upper case.** Lower-case letters are read as upper case, as `embed-dna` reads DNA.
//!   fair-esm has no lower-case tokens and fails on them (`KeyError`).
//! - **Whitespace** (spaces, tabs, `\r` anywhere in a line) is ignored, as fair-esm does.
//! - **Letters.** `A`–`Z` except `J`, `.` and `-` are ESM-2 tokens and kept as they are: `U`
//!   (selenocysteine) and `O` (pyrrolysine) included, never read as RNA. `J` (Leu or Ile) has
//!   no token: refused with the advice to write `X`, as fair-esm refuses it.
//! - **A final `*`** (the stop that Prodigal and most gene callers write) is dropped. fair-esm
//!   refuses it; dropping it gives the embedding of the protein the caller meant, while
//!   fair-esm's only other choice, `<unk>`, would move it.
//! - **Refused, naming the record**: a `*` before the end (a stop inside the protein: which
//!   part is meant?), digits (numbered GenBank-style lines), any other byte, and a record with
//!   no residues (its embedding would be a mean over nothing, written as zeros). fair-esm
//!   refuses these too, except the empty record, which it embeds from `<cls>`/`<eos>` alone.
//!   fair-esm also reads `<mask>`-style tokens inside a sequence; here `<` is refused.
//!
//! Translate's own proteins (`identified_protein.faa`) are upper-case standard residues
//! without stops and never empty, so they are read unchanged.
//!
//! A record that looks like nucleotides ([`looks_like_nucleotide`]) is refused by name: a DNA
//! file given by mistake would otherwise be embedded as a protein of Ala, Cys, Gly and Thr.

use anyhow::{anyhow, bail, Result};

use crate::io::fasta::{collect_unique, FastaReader, FastaRecord, SeqKind};
use crate::seq::validate::show_byte;

/// A record shorter than this is never called nucleotides: short peptides made of `A`, `C`,
/// `G` and `T` residues are plausible, a 20-residue one that also passes the rest of
/// [`looks_like_nucleotide`] is not.
pub const NUCLEOTIDE_MIN_LETTERS: usize = 20;

/// [`looks_like_nucleotide`] in words, for the error message.
pub const NUCLEOTIDE_RULE: &str = "20 or more letters, all IUPAC nucleotide codes, at least 90% \
     of them A, C, G, T, U or N, with each of A, C, G and T/U present";

/// Read `seq` (a protein record's sequence lines, joined) as a protein, in place: upper case,
/// whitespace removed, a final `*` dropped. `Err` is the reason, worded to follow
/// "record 'x' ". Positions in messages are 1-based in the joined lines as written.
pub fn read_protein(seq: &mut Vec<u8>) -> Result<(), String> {
    // The final stop is the last byte that is not whitespace, if it is a '*'.
    let final_stop = seq
        .iter()
        .rposition(|b| !b.is_ascii_whitespace())
        .filter(|&i| seq[i] == b'*');
    let mut kept = 0;
    for i in 0..seq.len() {
        let b = seq[i].to_ascii_uppercase();
        match b {
            b if b.is_ascii_whitespace() => continue,
            b'*' if Some(i) == final_stop => continue,
            b'*' => {
                return Err(format!(
                    "has a stop '*' at position {} before its end; only a final '*' is dropped: \
                     cut the protein at its stop or remove the record",
                    i + 1
                ))
            }
            b'J' => {
                return Err(format!(
                    "has 'J' at position {}, which ESM-2 has no token for; write X for an \
                     unknown residue",
                    i + 1
                ))
            }
            b'A'..=b'Z' | b'.' | b'-' => {
                seq[kept] = b;
                kept += 1;
            }
            other => {
                return Err(format!(
                    "has {} at position {}, which is not an amino-acid letter; protein FASTA may \
                     hold the letters A-Z but J (either case), '.', '-', whitespace and a final \
                     '*': fix or remove the record",
                    show_byte(other),
                    i + 1
                ))
            }
        }
    }
    seq.truncate(kept);
    if seq.is_empty() {
        return Err(
            "has no residues (an empty protein has no embedding); remove the record".to_string(),
        );
    }
    Ok(())
}

/// Whether a protein record (already read by [`read_protein`]: upper case) looks like
/// nucleotides instead: [`NUCLEOTIDE_RULE`]. Real proteins fail it: A, C, G and T make about a
/// fifth of their residues, cysteine alone ~1.4%, so 90% of 20 from them with all four present
/// does not happen outside designed peptides or translated tandem repeats; and requiring all
/// four keeps poly-Ala, poly-Gly and poly-Asn tracts (real, and common in some proteomes)
/// accepted. DNA passes it: 20 or more bases lack one of the four only in low-complexity
/// stretches.
pub fn looks_like_nucleotide(seq: &[u8]) -> bool {
    let (mut letters, mut acgtun) = (0usize, 0usize);
    let mut seen = [false; 4];
    for &b in seq {
        if !b.is_ascii_alphabetic() {
            continue;
        }
        letters += 1;
        match b.to_ascii_uppercase() {
            b'A' => seen[0] = true,
            b'C' => seen[1] = true,
            b'G' => seen[2] = true,
            b'T' | b'U' => seen[3] = true,
            b'N' => {}
            b'R' | b'Y' | b'S' | b'W' | b'K' | b'M' | b'B' | b'D' | b'H' | b'V' => continue,
            _ => return false,
        }
        acgtun += 1;
    }
    letters >= NUCLEOTIDE_MIN_LETTERS && acgtun * 10 >= letters * 9 && seen.iter().all(|&s| s)
}

/// embed-protein's reader path: every record of `reader` read as a protein ([`read_protein`]),
/// ids unique, and none that looks like nucleotides. The first record refused is named in a
/// one-line error. The reader keeps the letters as written (its nucleotide reading would turn
/// selenocysteine's `U` into `T`); each record is read as a protein as it comes, so the first
/// bad record is the one reported whatever is wrong with it.
pub fn read_proteins(reader: FastaReader) -> Result<Vec<FastaRecord>> {
    let label = reader.label().to_string();
    // The reader stops at its first error, so the n-th record it yields is record #n.
    let proteins = reader
        .with_kind(SeqKind::Verbatim)
        .enumerate()
        .map(|(i, rec)| {
            let mut rec = rec?;
            read_protein(&mut rec.seq)
                .map_err(|why| anyhow!("{label}: record #{} ('{}') {why}", i + 1, rec.id))?;
            Ok(rec)
        });
    let records = collect_unique(&label, proteins)?;
    if let Some((i, rec)) = records
        .iter()
        .enumerate()
        .find(|(_, r)| looks_like_nucleotide(&r.seq))
    {
        bail!(
            "{label}: record #{} ('{}') looks like nucleotides, not a protein ({NUCLEOTIDE_RULE}); \
             embed-protein expects protein FASTA such as translate's identified_protein.faa (the \
             nucleotides, identified_nucleotide.fa, go to embed-dna)",
            i + 1,
            rec.id
        );
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The records of `bytes` as [`read_proteins`] reads them, or its one-line error.
    fn read_file(bytes: &[u8]) -> Result<Vec<(String, String)>, String> {
        let reader = FastaReader::from_reader(
            Box::new(std::io::Cursor::new(bytes.to_vec())),
            "t.fa".into(),
        )
        .map_err(|e| format!("{e:#}"))?
        .expect("records");
        let records = read_proteins(reader).map_err(|e| format!("{e:#}"))?;
        Ok(records
            .into_iter()
            .map(|r| (r.id, String::from_utf8(r.seq).unwrap()))
            .collect())
    }

    #[test]
    fn proteins_keep_u_and_o_and_are_read_as_proteins() {
        // Selenocysteine and pyrrolysine are residues, not RNA: no U becomes T, and no warning.
        let got = read_file(b">p\nMKU OV\nuo*\n>q\nACGU\n").unwrap();
        let want = [("p", "MKUOVUO"), ("q", "ACGU")].map(|(i, s)| (i.into(), s.into()));
        assert_eq!(got, want);
    }

    #[test]
    fn an_unreadable_protein_is_refused_naming_file_and_record() {
        let err = read_file(b">a\nMKV\n>b x\nMK1V\n").unwrap_err();
        assert!(
            err.starts_with("t.fa: record #2 ('b') has '1' at position 3"),
            "{err}"
        );
        let err = read_file(b">a\nMKV\n>e\n>c\nM\n").unwrap_err();
        assert!(err.contains("record #2 ('e') has no residues"), "{err}");
        // A bad protein before a bad header is the one reported.
        let err = read_file(b">a\nMK1\n>\nM\n").unwrap_err();
        assert!(err.contains("record #1 ('a') has '1'"), "{err}");
        let err = read_file(b">a\nM\n>a\nMK\n").unwrap_err();
        assert!(err.contains("duplicate record id 'a'"), "{err}");
    }

    fn read(s: &str) -> Result<String, String> {
        let mut v = s.as_bytes().to_vec();
        read_protein(&mut v).map(|()| String::from_utf8(v).unwrap())
    }

    #[test]
    fn rare_letters_are_kept_and_never_read_as_rna() {
        assert_eq!(read("MXBZUOLLKKX").unwrap(), "MXBZUOLLKKX");
        assert_eq!(read("MK.-V").unwrap(), "MK.-V");
    }

    #[test]
    fn lower_case_whitespace_and_a_final_stop_are_read_as_meant() {
        assert_eq!(read("mkvU o").unwrap(), "MKVUO");
        assert_eq!(read("MK V\tL\rA*").unwrap(), "MKVLA");
        assert_eq!(read("MKV * ").unwrap(), "MKV");
    }

    #[test]
    fn what_cannot_be_read_is_refused_with_its_position() {
        let err = read("MKV1L").unwrap_err();
        assert!(err.contains("'1' at position 4"), "{err}");
        let err = read("MK*VL*").unwrap_err();
        assert!(err.contains("stop '*' at position 3"), "{err}");
        let err = read("MKJ").unwrap_err();
        assert!(
            err.contains("'J' at position 3") && err.contains("X"),
            "{err}"
        );
        let err = read("MK\u{e9}").unwrap_err();
        assert!(err.contains("byte 0xc3 at position 3"), "{err}");
        assert!(read("MK<mask>").is_err());
        assert!(read("MKV**").unwrap_err().contains("position 4"));
        for empty in ["", "*", " * "] {
            assert!(
                read(empty).unwrap_err().contains("no residues"),
                "{empty:?}"
            );
        }
    }

    #[test]
    fn nucleotide_detection() {
        assert!(looks_like_nucleotide(b"ACGTACGTACGTACGTACGTN"));
        assert!(looks_like_nucleotide(b"ACGUACGUACGUACGUACGU"));
        // IUPAC ambiguity codes in a mostly ACGT record.
        assert!(looks_like_nucleotide(b"ACGTACGTACGTRCGTACGTACGTACGTAYGT"));
        // Short peptides of A/C/G/T residues are plausible proteins.
        assert!(!looks_like_nucleotide(b"ACGTACGTACGTACGTACG"));
        // Homopolymer tracts, real in proteins, lack some of the four.
        assert!(!looks_like_nucleotide(b"AAAAAAAAAAAAAAAAAAAAAAAAGGGGGGGGG"));
        assert!(!looks_like_nucleotide(b"NNNNNNNNNNNNNNNNNNNNNNNNNNNNNNN"));
        assert!(!looks_like_nucleotide(b"MKVLAAGIVGLLLAVACSSAQ"));
        assert!(!looks_like_nucleotide(b"ACDEFGHIKLMNPQRSTVWY"));
        // 87% ACGTN: below the 90% bar.
        assert!(!looks_like_nucleotide(b"ACGTACGTACGTACGTACGTRRR"));
    }
}
