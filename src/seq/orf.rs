//! Six-frame translation and ORF selection exactly as the original (REFERENCE.md §3).
//!
//! A frame is kept only when its protein has no stop and is not empty, so translation stops at
//! the first stop codon: in real sequence most frames of a 300–500 bp chunk hit one within a
//! few dozen codons, which is where most of `translate`'s speed comes from.

/// Standard genetic code, indexed by `16*b1 + 4*b2 + b3` with T=0, C=1, A=2, G=3.
const CODE: &[u8; 64] = b"FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG";

/// Base -> 2-bit code in the table's order, 4 for anything that is not A/C/G/T (upper case).
const fn base_codes() -> [u8; 256] {
    let mut t = [4u8; 256];
    t[b'T' as usize] = 0;
    t[b'C' as usize] = 1;
    t[b'A' as usize] = 2;
    t[b'G' as usize] = 3;
    t
}
static BASE: [u8; 256] = base_codes();

/// Complement as the original: A<->T, C<->G, every other byte kept as it is.
const fn complements() -> [u8; 256] {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        t[i] = i as u8;
        i += 1;
    }
    t[b'A' as usize] = b'T';
    t[b'T' as usize] = b'A';
    t[b'C' as usize] = b'G';
    t[b'G' as usize] = b'C';
    t
}
static COMPLEMENT: [u8; 256] = complements();

/// The six frames in output order.
pub const FRAMES: [&str; 6] = ["F1", "F2", "F3", "R1", "R2", "R3"];

/// A kept frame: which one, its protein and the nucleotide slice the original writes with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Orf {
    /// Index into [`FRAMES`].
    pub frame: usize,
    pub nucleotide: Vec<u8>,
    pub protein: Vec<u8>,
}

/// Translate `seq` from `offset`, dropping codons with non-ACGT bytes. Returns `None` as soon as
/// a stop appears (the frame cannot be kept), else the protein (possibly empty).
pub fn translate_frame(seq: &[u8], offset: usize, protein: &mut Vec<u8>) -> bool {
    protein.clear();
    if seq.len() < offset + 3 {
        return true;
    }
    for codon in seq[offset..].chunks_exact(3) {
        let (a, b, c) = (BASE[codon[0] as usize], BASE[codon[1] as usize], BASE[codon[2] as usize]);
        if (a | b | c) & 4 != 0 {
            continue; // ambiguous codon: translates to nothing in the original
        }
        let aa = CODE[(a as usize) << 4 | (b as usize) << 2 | c as usize];
        if aa == b'*' {
            return false;
        }
        protein.push(aa);
    }
    true
}

/// Upper-case ASCII in place into `out` (the original upper-cases each chunk before translating).
pub fn upper_into(chunk: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend(chunk.iter().map(|b| b.to_ascii_uppercase()));
}

/// Reverse complement into `out`.
pub fn reverse_complement_into(seq: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.extend(seq.iter().rev().map(|&b| COMPLEMENT[b as usize]));
}

/// Reusable buffers for [`six_frame_orfs`], so a worker translating millions of chunks does not
/// allocate per chunk.
#[derive(Default)]
pub struct OrfScratch {
    upper: Vec<u8>,
    revcomp: Vec<u8>,
    protein: Vec<u8>,
}

/// The kept frames of one chunk, in the order F1, F2, F3, R1, R2, R3.
pub fn six_frame_orfs(chunk: &[u8], scratch: &mut OrfScratch, out: &mut Vec<Orf>) {
    upper_into(chunk, &mut scratch.upper);
    let mut revcomp_done = false;
    for (frame, _) in FRAMES.iter().enumerate() {
        let offset = frame % 3;
        let seq: &[u8] = if frame < 3 {
            &scratch.upper
        } else {
            if !revcomp_done {
                reverse_complement_into(&scratch.upper, &mut scratch.revcomp);
                revcomp_done = true;
            }
            &scratch.revcomp
        };
        if !translate_frame(seq, offset, &mut scratch.protein) || scratch.protein.is_empty() {
            continue;
        }
        // The original keeps seq[f-1 : f+3p] (Python slice, end clamped): 3p+1 bases where
        // they exist, one more than the codons. The classifier was trained on that.
        let end = (offset + 1 + 3 * scratch.protein.len()).min(seq.len());
        out.push(Orf {
            frame,
            nucleotide: seq[offset..end].to_vec(),
            protein: scratch.protein.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn orfs(s: &str) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        six_frame_orfs(s.as_bytes(), &mut OrfScratch::default(), &mut out);
        out.into_iter()
            .map(|o| {
                (
                    FRAMES[o.frame].to_string(),
                    String::from_utf8(o.nucleotide).unwrap(),
                    String::from_utf8(o.protein).unwrap(),
                )
            })
            .collect()
    }

    #[test]
    fn genetic_code_spot_checks() {
        let mut p = Vec::new();
        assert!(translate_frame(b"ATGTGGTTTAAAGGGCCC", 0, &mut p));
        assert_eq!(p, b"MWFKGP");
        assert!(!translate_frame(b"ATGTAA", 0, &mut p));
        assert!(!translate_frame(b"TAG", 0, &mut p));
        assert!(!translate_frame(b"TGA", 0, &mut p));
    }

    #[test]
    fn ambiguous_codons_are_dropped_not_x() {
        let mut p = Vec::new();
        // ATG NNN GCR TGG: NNN and GCR (R = A/G) contain non-ACGT bytes and vanish.
        assert!(translate_frame(b"ATGNNNGCRTGG", 0, &mut p));
        assert_eq!(p, b"MW");
        // A gap inside a codon drops it too.
        assert!(translate_frame(b"AT-GCA", 0, &mut p));
        assert_eq!(p, b"A");
        // A protein of only ambiguous codons is empty.
        assert!(translate_frame(b"NNNRYK", 0, &mut p));
        assert!(p.is_empty());
    }

    #[test]
    fn nucleotide_keeps_one_extra_base_and_uses_protein_length() {
        // F1 of "ATGNNNGCA" + "T": protein "MA" (NNN dropped), so the kept slice is
        // seq[0 .. 1 + 3*2] = 7 bases, not the 9 the codons covered.
        let got = orfs("ATGNNNGCAT");
        let f1 = got.iter().find(|o| o.0 == "F1").unwrap();
        assert_eq!(f1.2, "MA");
        assert_eq!(f1.1, "ATGNNNG");
    }

    #[test]
    fn tiny_record_matches_golden() {
        // From the fixtures: tiny_seq "ATGAA" keeps F1 (M), F3 (E), R1 (F), R2 (S), R3 (H).
        let got = orfs("ATGAA");
        let want = [
            ("F1", "ATGA", "M"),
            ("F3", "GAA", "E"),
            ("R1", "TTCA", "F"),
            ("R2", "TCAT", "S"),
            ("R3", "CAT", "H"),
        ];
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want) {
            assert_eq!((g.0.as_str(), g.1.as_str(), g.2.as_str()), w);
        }
    }

    #[test]
    fn lower_case_is_upper_cased_and_complement_keeps_iupac() {
        let mut out = Vec::new();
        reverse_complement_into(b"ACGTNRY-", &mut out);
        assert_eq!(out, b"-YRNACGT");
        let got = orfs("atggcc");
        assert_eq!(got[0], ("F1".into(), "ATGGCC".into(), "MA".into()));
    }

    #[test]
    fn too_short_for_a_codon_keeps_nothing() {
        assert!(orfs("AT").is_empty());
        assert!(orfs("").is_empty());
    }
}
