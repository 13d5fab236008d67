//! The original VirNucPro chunker (docs/method.md, "Chunking"), quirks included: the overlap needed to
//! cover a record with `ceil(L/c)` windows is spread by a shift list that can make the last
//! chunk shorter than `c` (e.g. `L = c+1` gives chunks of `c` and `c/2+1`). The trained
//! classifiers saw exactly these chunks, so we reproduce them rather than "fix" them.

use std::ops::Range;

/// The byte ranges of the chunks of a record of length `len` with chunk size `c`.
/// Empty when `len == 0` (the original divides by zero there; callers skip such records).
pub fn chunk_ranges(len: usize, c: usize) -> Vec<Range<usize>> {
    assert!(c > 0, "chunk size must be positive");
    if len == 0 {
        return Vec::new();
    }
    let n = len.div_ceil(c);
    let overlap = n * c - len;
    let lower = overlap / n;
    let upper = lower + 1;
    let k = overlap - lower * (n - 1);
    // k copies of upper, then max(0, n-1-k) of lower, then 0: only the first n are used.
    let shift = |j: usize| -> usize {
        if j < k {
            upper
        } else if j < k + (n - 1).saturating_sub(k) {
            lower
        } else {
            0
        }
    };
    let mut moved = 0usize;
    let mut out = Vec::with_capacity(n);
    for (j, a) in (0..len).step_by(c).enumerate() {
        let start = a - moved;
        out.push(start..(start + c).min(len));
        moved += shift(j);
    }
    out
}

/// The id the original gives chunk `j` (0-based here, 1-based in the id).
pub fn chunk_id(record_id: &str, j: usize) -> String {
    format!("{record_id}_chunk_{}", j + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lens(len: usize, c: usize) -> Vec<usize> {
        chunk_ranges(len, c).iter().map(|r| r.len()).collect()
    }

    #[test]
    fn shorter_than_chunk_is_one_chunk() {
        assert_eq!(chunk_ranges(120, 300), vec![0..120]);
    }

    #[test]
    fn exactly_one_chunk() {
        assert_eq!(chunk_ranges(300, 300), vec![0..300]);
    }

    #[test]
    fn one_base_over_gives_half_chunk() {
        // n = 2, overlap 299, lower 149, k 150: both shifts 150; second chunk 150..301.
        assert_eq!(chunk_ranges(301, 300), vec![0..300, 150..301]);
        assert_eq!(lens(501, 500), vec![500, 251]);
    }

    #[test]
    fn two_chunks_and_a_bit() {
        // L = 2c + 234 = 834: n = 3, overlap 66, lower 22, upper 23, k = 66 - 44 = 22.
        // shifts (first 3): 23, 23, 23 -> starts 0, 277, 554.
        assert_eq!(chunk_ranges(834, 300), vec![0..300, 277..577, 554..834]);
    }

    #[test]
    fn multiple_of_chunk_has_no_overlap() {
        assert_eq!(chunk_ranges(900, 300), vec![0..300, 300..600, 600..900]);
    }

    #[test]
    fn empty_record_has_no_chunks() {
        assert!(chunk_ranges(0, 300).is_empty());
    }

    #[test]
    fn chunks_cover_the_record_and_stay_in_bounds() {
        for c in [3usize, 7, 300, 500] {
            for len in 1..2000 {
                let r = chunk_ranges(len, c);
                assert_eq!(r.len(), len.div_ceil(c));
                assert_eq!(r[0].start, 0);
                assert_eq!(r.last().unwrap().end, len);
                for w in r.windows(2) {
                    assert!(w[1].start <= w[0].end, "gap at len {len} c {c}");
                }
                assert!(r
                    .iter()
                    .all(|x| x.end <= len && !x.is_empty() && x.len() <= c));
            }
        }
    }

    #[test]
    fn ids_are_one_based() {
        assert_eq!(chunk_id("seq1", 0), "seq1_chunk_1");
    }
}
