//! Six-frame translation and ORF selection exactly as the original (docs/method.md, "Six-frame
//! translation and ORF filter").
//!
//! A frame is kept only when its protein has no stop and is not empty, so translation stops at
//! the first stop codon: in real sequence most frames of a 300–500 bp chunk hit one within a
//! few dozen codons, which is where most of `translate`'s speed comes from.

/// Standard genetic code, indexed by `16*b1 + 4*b2 + b3` with T=0, C=1, A=2, G=3.
const CODE: &[u8; 64] = b"FFLLSSSSYY**CC*WLLLLPPPPHHQQRRRRIIIMTTTTNNKKSSRRVVVVAAAADDEEGGGG";

/// Base -> code in the table's order, either case (the original upper-cases each chunk before
/// translating): T=0, C=1, A=2, G=3, and 4 for anything else.
const fn base_codes() -> [u8; 256] {
    let mut t = [4u8; 256];
    t[b'T' as usize] = 0;
    t[b'C' as usize] = 1;
    t[b'A' as usize] = 2;
    t[b'G' as usize] = 3;
    t[b't' as usize] = 0;
    t[b'c' as usize] = 1;
    t[b'a' as usize] = 2;
    t[b'g' as usize] = 3;
    t
}
static BASE: [u8; 256] = base_codes();

/// The genetic code over 5-symbol codes, indexed by `25a + 5b + c`: one lookup per codon, and
/// 0 where a codon holds a non-ACGT symbol (the original drops such codons).
const fn codon_table() -> [u8; 125] {
    let mut t = [0u8; 125];
    let mut i = 0;
    while i < 125 {
        let (a, b, c) = (i / 25, (i / 5) % 5, i % 5);
        if a < 4 && b < 4 && c < 4 {
            t[i] = CODE[a * 16 + b * 4 + c];
        }
        i += 1;
    }
    t
}
static CODON: [u8; 125] = codon_table();

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

/// Translate base codes (see [`BASE`]) from `offset`, dropping codons with non-ACGT symbols.
/// Returns `false` as soon as a stop appears (the frame cannot be kept), else `true` with the
/// protein (possibly empty) in `protein`.
fn translate_codes(codes: &[u8], offset: usize, protein: &mut Vec<u8>) -> bool {
    protein.clear();
    let mut i = offset;
    while i + 3 <= codes.len() {
        let aa = CODON[codes[i] as usize * 25 + codes[i + 1] as usize * 5 + codes[i + 2] as usize];
        i += 3;
        if aa == b'*' {
            return false;
        }
        if aa != 0 {
            protein.push(aa);
        }
    }
    true
}

/// Reusable buffers for [`six_frame_orfs`], so a worker translating millions of chunks does not
/// allocate per chunk.
#[derive(Default)]
pub struct OrfScratch {
    forward: Vec<u8>,
    reverse: Vec<u8>,
    protein: Vec<u8>,
}

/// The kept frames of one chunk, in the order F1, F2, F3, R1, R2, R3.
///
/// The chunk is encoded once per strand into codon-table codes; the upper-cased (and for
/// reverse frames complemented) bases are only materialised for the frames that are kept.
pub fn six_frame_orfs(chunk: &[u8], scratch: &mut OrfScratch, out: &mut Vec<Orf>) {
    let n = chunk.len();
    scratch.forward.clear();
    scratch
        .forward
        .extend(chunk.iter().map(|&b| BASE[b as usize]));
    // Complement of a code: T(0)<->A(2), C(1)<->G(3) is `c ^ 2`; 4 (other) stays 4.
    scratch.reverse.clear();
    scratch.reverse.extend(
        scratch
            .forward
            .iter()
            .rev()
            .map(|&c| if c < 4 { c ^ 2 } else { c }),
    );
    for frame in 0..FRAMES.len() {
        let offset = frame % 3;
        let codes = if frame < 3 {
            &scratch.forward
        } else {
            &scratch.reverse
        };
        if !translate_codes(codes, offset, &mut scratch.protein) || scratch.protein.is_empty() {
            continue;
        }
        // The original keeps seq[f-1 : f+3p] (Python slice, end clamped): 3p+1 bases where
        // they exist, one more than the codons. The classifier was trained on that.
        let end = (offset + 1 + 3 * scratch.protein.len()).min(n);
        let nucleotide: Vec<u8> = if frame < 3 {
            chunk[offset..end]
                .iter()
                .map(|b| b.to_ascii_uppercase())
                .collect()
        } else {
            (offset..end)
                .map(|j| COMPLEMENT[chunk[n - 1 - j].to_ascii_uppercase() as usize])
                .collect()
        };
        out.push(Orf {
            frame,
            nucleotide,
            protein: scratch.protein.clone(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One frame of `seq` (either case) from `offset`; `false` when it holds a stop.
    fn translate_frame(seq: &[u8], offset: usize, protein: &mut Vec<u8>) -> bool {
        let codes: Vec<u8> = seq.iter().map(|&b| BASE[b as usize]).collect();
        translate_codes(&codes, offset, protein)
    }

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
        // "ggcraat": reverse complement "ATTRGCC" keeps the R; R1 = ATT (I), RGC dropped, so
        // the kept slice is the first 3·1+1 bases, "ATTR".
        let got = orfs("ggcraat");
        let r1 = got.iter().find(|o| o.0 == "R1").unwrap();
        assert_eq!((r1.1.as_str(), r1.2.as_str()), ("ATTR", "I"));
        let got = orfs("atggcc");
        assert_eq!(got[0], ("F1".into(), "ATGGCC".into(), "MA".into()));
    }

    #[test]
    fn too_short_for_a_codon_keeps_nothing() {
        assert!(orfs("AT").is_empty());
        assert!(orfs("").is_empty());
    }
}
