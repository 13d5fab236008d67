//! The ESM-2 protein alphabet and tokeniser (fair-esm `Alphabet.from_architecture("ESM-1b")`).
//!
//! A sequence becomes `<cls>`, one token per residue, `<eos>`. fair-esm splits its input on
//! every alphabet token, and all residue tokens are single characters, so this is a per-character
//! lookup. What reaches it from `embed-protein` has already been read by
//! [`crate::seq::protein::read_protein`] (upper case, no whitespace, no `*`, no character
//! without a token), so there no residue becomes `<unk>`.

/// The 33 tokens in id order (the index is the token id), as in fair-esm and HF `vocab.txt`.
pub const ALPHABET: [&str; 33] = [
    "<cls>", "<pad>", "<eos>", "<unk>", "L", "A", "G", "V", "S", "E", "R", "T", "I", "D", "P", "K",
    "Q", "N", "F", "Y", "M", "H", "W", "C", "X", "B", "U", "Z", "O", ".", "-", "<null_1>",
    "<mask>",
];

const CLS: u32 = 0;
const PAD: u32 = 1;
const EOS: u32 = 2;
const UNK: u32 = 3;
const MASK: u32 = 32;

/// Maps protein strings to ESM-2 token ids.
#[derive(Debug, Clone)]
pub struct EsmTokenizer {
    /// Token id of every ASCII byte that is a one-character token; `<unk>` elsewhere.
    by_byte: [u32; 128],
}

impl Default for EsmTokenizer {
    fn default() -> Self {
        Self::new()
    }
}

impl EsmTokenizer {
    pub fn new() -> Self {
        let mut by_byte = [UNK; 128];
        for (id, tok) in ALPHABET.iter().enumerate() {
            if let [b] = tok.as_bytes() {
                by_byte[*b as usize] = id as u32;
            }
        }
        Self { by_byte }
    }

    /// `<cls>` + one token per character + `<eos>`. Upper-case residue letters, `.` and `-`
    /// map to their tokens; any other character (lower case, `*`, non-ASCII) becomes `<unk>`.
    /// Callers upper-case sequences first if they want lower case read as residues.
    pub fn encode(&self, protein: &str) -> Vec<u32> {
        let mut ids = Vec::with_capacity(protein.len() + 2);
        ids.push(CLS);
        ids.extend(protein.chars().map(|c| {
            if c.is_ascii() {
                self.by_byte[c as usize]
            } else {
                UNK
            }
        }));
        ids.push(EOS);
        ids
    }

    pub fn vocab_size(&self) -> usize {
        ALPHABET.len()
    }

    pub fn pad_id(&self) -> u32 {
        PAD
    }

    pub fn mask_id(&self) -> u32 {
        MASK
    }

    pub fn cls_id(&self) -> u32 {
        CLS
    }

    pub fn eos_id(&self) -> u32 {
        EOS
    }

    pub fn unk_id(&self) -> u32 {
        UNK
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_match_fair_esm() {
        let t = EsmTokenizer::new();
        assert_eq!(t.encode("MKV"), vec![0, 20, 15, 7, 2]);
        assert_eq!(
            t.encode("MXBZUOLLKKX"),
            vec![0, 20, 24, 25, 27, 26, 28, 4, 4, 15, 15, 24, 2]
        );
        assert_eq!(t.encode(""), vec![0, 2]);
        assert_eq!(t.encode("a*J.-"), vec![0, 3, 3, 3, 29, 30, 2]);
        assert_eq!(ALPHABET[t.mask_id() as usize], "<mask>");
        assert_eq!(ALPHABET[t.pad_id() as usize], "<pad>");
    }
}
