//! What counts as a nucleotide sequence: IUPAC codes (either case) and gap characters.
//! Anything else (a protein file, a stray digit, a space inside a line) is an error that names
//! the record, the character and its position, because silently translating it would give
//! answers that look fine and are not.

const fn allowed_table() -> [bool; 256] {
    let mut t = [false; 256];
    let codes = b"ACGTURYSWKMBDHVNacgturyswkmbdhvn-.";
    let mut i = 0;
    while i < codes.len() {
        t[codes[i] as usize] = true;
        i += 1;
    }
    t
}
static ALLOWED: [bool; 256] = allowed_table();

/// The first byte that is not an IUPAC nucleotide code or gap, with its 0-based position.
pub fn first_invalid_nucleotide(seq: &[u8]) -> Option<(usize, u8)> {
    seq.iter()
        .position(|&b| !ALLOWED[b as usize])
        .map(|i| (i, seq[i]))
}

/// How to show a byte in an error message.
pub fn show_byte(b: u8) -> String {
    match b {
        b' ' => "' ' (space)".to_string(),
        b'\t' => "'\\t' (tab)".to_string(),
        b'\r' => "'\\r' (carriage return)".to_string(),
        33..=126 => format!("'{}'", b as char),
        _ => format!("byte 0x{b:02x}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iupac_and_gaps_are_fine() {
        assert_eq!(first_invalid_nucleotide(b"ACGTURYSWKMBDHVN-.acgtn"), None);
    }

    #[test]
    fn protein_letters_and_digits_are_not() {
        assert_eq!(first_invalid_nucleotide(b"ACGTE"), Some((4, b'E')));
        assert_eq!(first_invalid_nucleotide(b"AC1"), Some((2, b'1')));
        assert_eq!(first_invalid_nucleotide(b"AC GT"), Some((2, b' ')));
        assert_eq!(show_byte(b' '), "' ' (space)");
    }
}
