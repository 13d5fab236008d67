//! Cutting translate's work so memory stays bounded whatever the input's shape: the chunks
//! of a batch are formatted a window at a time (one 200 Mbp record is 670,000 chunks of 300 bp,
//! whose output held at once took 600 MB), and ids are remembered as hashes for the
//! duplicate check (millions of short records).

use std::collections::hash_map::RandomState;
use std::collections::HashSet;
use std::hash::BuildHasher;

use crate::io::fasta::FastaRecord;
use crate::seq::chunk::chunk_ranges;

/// Bases of chunks translated and formatted at once; their output (about three times the
/// bases) is written before the next window starts, however long the record.
pub const WINDOW_BASES: usize = 4 << 20;

/// Ids seen so far, kept as 128-bit hashes (16 bytes a record, whatever the id's length); two
/// different ids collide with odds of about n²/2¹²⁹, nil for any real input.
#[derive(Default)]
pub struct IdSet {
    hashes: HashSet<u128>,
    keys: [RandomState; 2],
}

impl IdSet {
    /// `false` when `id` was seen before.
    pub fn insert(&mut self, id: &str) -> bool {
        let [a, b] = &self.keys;
        let half = |keys: &RandomState| keys.hash_one(id);
        self.hashes
            .insert((u128::from(half(a)) << 64) | u128::from(half(b)))
    }
}

/// One chunk to translate: the record's index in its batch, the chunk's index in the record
/// and its bases.
pub type Work = (usize, usize, std::ops::Range<usize>);

/// Every chunk of a batch, in input order.
pub fn chunk_work(batch: &[FastaRecord], chunk_size: usize) -> Vec<Work> {
    batch
        .iter()
        .enumerate()
        .flat_map(|(r, rec)| {
            chunk_ranges(rec.seq.len(), chunk_size)
                .into_iter()
                .enumerate()
                .map(move |(j, range)| (r, j, range))
        })
        .collect()
}

/// Consecutive runs of `work` of about [`WINDOW_BASES`] bases each.
pub fn windows(work: &[Work]) -> impl Iterator<Item = &[Work]> {
    let mut rest = work;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut bases = 0;
        let n = rest
            .iter()
            .take_while(|(_, _, range)| {
                let take = bases < WINDOW_BASES;
                bases += range.len();
                take
            })
            .count();
        let (window, tail) = rest.split_at(n);
        rest = tail;
        Some(window)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_cover_the_work_in_order_and_stay_near_the_size() {
        let work: Vec<Work> = (0..1000).map(|j| (0, j, 0..300_000)).collect();
        let seen: Vec<&[Work]> = windows(&work).collect();
        assert_eq!(seen.concat(), work);
        let per_window = WINDOW_BASES.div_ceil(300_000);
        assert!(seen[..seen.len() - 1].iter().all(|w| w.len() == per_window));
        // A chunk larger than a window is a window of its own.
        let big: Vec<Work> = vec![(0, 0, 0..WINDOW_BASES * 3), (1, 0, 0..5)];
        assert_eq!(windows(&big).count(), 2);
        assert_eq!(windows(&[]).count(), 0);
    }

    #[test]
    fn id_set_tells_repeats() {
        let mut ids = IdSet::default();
        assert!(ids.insert("a") && ids.insert("b") && ids.insert("ab"));
        assert!(!ids.insert("a") && !ids.insert("ab"));
    }
}
