//! Token-budget batching: sequences sorted by length, grouped so that a batch's padded size
//! (`longest × count`) stays within the budget. Sorting keeps padding (wasted compute) small;
//! the budget, not a sequence count, bounds device memory (the approach of text-embeddings-
//! inference and of the original ESM script, which used 2048 tokens).

use crate::models::shape::ModelShape;

/// Indices of `lengths` grouped into batches, longest first (so an out-of-memory shows up on the
/// first batch, not after an hour). A sequence longer than the budget gets a batch of its own.
pub fn token_budget_batches(lengths: &[usize], budget: usize) -> Vec<Vec<usize>> {
    let (order, sorted) = longest_first(lengths);
    let mut batches = Vec::new();
    let mut start = 0;
    for end in batch_ends(&sorted, budget) {
        batches.push(order[start..end].to_vec());
        start = end;
    }
    batches
}

/// Indices of `lengths`, longest first, and their lengths in that order; stable, so equal
/// lengths keep input order and batching is deterministic.
fn longest_first(lengths: &[usize]) -> (Vec<usize>, Vec<usize>) {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by(|&a, &b| lengths[b].cmp(&lengths[a]));
    let sorted = order.iter().map(|&i| lengths[i]).collect();
    (order, sorted)
}

/// Where each batch of `sorted` (lengths, longest first) ends: a batch grows while its padded
/// size (`longest × count`) stays within `budget`; a sequence longer than the budget is alone.
fn batch_ends(sorted: &[usize], budget: usize) -> Vec<usize> {
    let mut ends = Vec::new();
    let (mut count, mut longest) = (0usize, 0usize);
    for (i, &len) in sorted.iter().enumerate() {
        let len = len.max(1);
        let new_longest = longest.max(len);
        if count > 0 && new_longest * (count + 1) > budget {
            ends.push(i);
            (count, longest) = (0, len);
        } else {
            longest = new_longest;
        }
        count += 1;
    }
    if count > 0 {
        ends.push(sorted.len());
    }
    ends
}

/// The CPU's largest batch: the original ESM script's 2048 tokens.
pub const CPU_BATCH_TOKENS: usize = 2048;

/// The token budget for `workers` CPU workers (one thread each) of a model of `shape`: at most
/// [`CPU_BATCH_TOKENS`]; less when a batch's feed-forward activation (`intermediate` f32 per
/// token) would not fit in the worker's share of the last-level `cache` (`None`: unknown, no
/// such limit); and less when the input is so small that full batches would leave workers idle
/// (a few proteins through the 3B model are one batch: one core busy, the others waiting), then
/// about an equal share of the tokens per worker; with several workers, no larger than needed
/// for batches of about equal size in a number that is a multiple of the workers ([`balanced`]).
/// Never below the longest sequence.
///
/// Why the cache: measured on a 2-core Zen 5 with 32 MB of L3 (16 MB per worker), compute
/// tokens/s by `--batch-tokens`, 168-token proteins and ~113-token DNA chunks: ESM-2 3B
/// (40 KB per token) 168 → 61, 336 → 69, 504 → 66, 1008 → 65, 2016 → ~59; 650M (20 KB)
/// 336 → 264, 672 → 272, 1344 → 273, 2016 → 243; DNABERT-S (gated, 24 KB) 682 → 1,582,
/// 1024 → 1,592, 2048 → 1,392; 150M and 35M, whose 2048-token activations nearly fit, within
/// noise. Smaller batches than the cache allows lose more to re-reading the weights than
/// they gain.
pub fn cpu_budget(
    lengths: &[usize],
    workers: usize,
    shape: ModelShape,
    cache: Option<crate::device::cpu_cache::CacheInfo>,
) -> usize {
    let longest = lengths.iter().copied().max().unwrap_or(1).max(1);
    let mut budget = CPU_BATCH_TOKENS;
    if let Some(cache) = cache {
        let per_token = 4 * shape.intermediate.max(1) as u64;
        let fits = cache.per_worker(workers) / per_token;
        budget = budget.min(fits as usize);
    }
    if workers > 1 {
        let total: usize = lengths.iter().sum();
        budget = budget.min(total.div_ceil(workers)).max(longest);
        budget = balanced(lengths, workers, budget, longest);
    }
    budget.max(longest)
}

/// The smallest budget up to `budget` that needs no more batches than `budget` rounded up to a
/// multiple of `workers`: batches of about equal size, so the workers finish together. Without
/// it the last round leaves workers idle: 40 proteins of 168 tokens in 2048-token batches are
/// 12 + 12 + 12 + 4, and on two workers one waits a quarter of the run (ESM-2 650M in bf16 on
/// two cores: busy 18.4 of 24.8 s); 10 + 10 + 10 + 10 keeps both busy.
fn balanced(lengths: &[usize], workers: usize, budget: usize, longest: usize) -> usize {
    let (_, sorted) = longest_first(lengths);
    let count = |b: usize| batch_ends(&sorted, b).len();
    let target = count(budget).div_ceil(workers) * workers;
    // Not below two of the longest sequences where the budget held two: a batch of one runs
    // ~12% slower per token (3B on the Zen 5 above), more than evening out the last round
    // gains. Binary search; `hi` always needs at most `target` batches (the count is not
    // strictly monotonic in the budget, but whatever this returns keeps that property).
    let (mut lo, mut hi) = ((2 * longest).min(budget), budget);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if count(mid) <= target {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    hi
}

/// Past ~128k tokens a batch no longer makes a GPU busier, it only delays the first result.
pub const MAX_BATCH_TOKENS: usize = 128 * 1024;

/// Token budget for a GPU from the memory left free once the model is loaded. Per padded
/// token a forward pass keeps a few hidden-size activations, the feed-forward activations and
/// one row of attention scores per head (`longest` wide); 60% of the free memory is used, the
/// rest is headroom for the allocator's pools. Out-of-memory batches are still split and
/// retried, so this only needs to be about right.
pub fn budget_from_memory(
    free_bytes: u64,
    shape: ModelShape,
    dtype_bytes: usize,
    longest: usize,
) -> usize {
    let per_token = dtype_bytes
        * (8 * shape.hidden + 2 * shape.intermediate + 2 * shape.heads * longest.max(1));
    let usable = free_bytes as f64 * 0.6;
    let budget = (usable / per_token as f64) as usize;
    // Not `clamp`: a sequence longer than the cap must still get a batch (alone), not a panic.
    budget.min(MAX_BATCH_TOKENS).max(1024.max(longest))
}

/// Token budget under which no single tensor of a batch exceeds `limit_bytes`: wgpu refuses a
/// buffer larger than the adapter's binding limit, and CubeCL's CUDA memory pools fail on one
/// larger than about a quarter of the device memory. The largest tensors per padded token are
/// the attention scores (`heads × longest`, kept in f32 for the softmax) and the feed-forward
/// activations (`intermediate`, at most f32). At least one longest sequence: alone, it runs or
/// fails on its own.
pub fn largest_tensor_budget(limit_bytes: u64, shape: ModelShape, longest: usize) -> usize {
    let per_token = 4
        * (shape.heads * longest.max(1))
            .max(shape.intermediate)
            .max(1);
    let budget = (limit_bytes / per_token as u64) as usize;
    budget.min(MAX_BATCH_TOKENS).max(longest.max(1))
}

/// Token budget on a CUDA device: from the free memory after loading the model when known,
/// else `default`; either way no single tensor of a batch above a quarter of the memory
/// (CubeCL's CUDA pools fail on one larger than about a quarter of the device; the free memory,
/// below the total, keeps this on the safe side, and the total bounds it when the free memory
/// could not be read).
pub fn cuda_budget(
    free_bytes: Option<u64>,
    total_bytes: Option<u64>,
    default: usize,
    shape: ModelShape,
    dtype_bytes: usize,
    longest: usize,
) -> usize {
    match (free_bytes, total_bytes) {
        (Some(free), _) => budget_from_memory(free, shape, dtype_bytes, longest)
            .min(largest_tensor_budget(free / 4, shape, longest)),
        (None, Some(total)) => {
            default
                .max(longest.max(1))
                .min(largest_tensor_budget(total / 4, shape, longest))
        }
        (None, None) => default.max(longest.max(1)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_budget_scales_and_is_bounded() {
        let esm3b = ModelShape {
            hidden: 2560,
            intermediate: 10240,
            heads: 40,
            layers: 36,
        };
        // 60 GiB free in f16 on ~170-residue proteins: the upper bound.
        assert_eq!(budget_from_memory(60 << 30, esm3b, 2, 170), 128 * 1024);
        // 4 GiB free: 0.6 * 4 GiB / (2 * (20480 + 20480 + 13600)) bytes.
        assert_eq!(budget_from_memory(4 << 30, esm3b, 2, 170), 23_616);
        // Almost nothing free: still at least one longest sequence.
        assert_eq!(budget_from_memory(1 << 20, esm3b, 4, 5000), 5000);
    }

    #[test]
    fn sequence_longer_than_the_cap_gets_a_budget_not_a_panic() {
        let esm3b = ModelShape {
            hidden: 2560,
            intermediate: 10240,
            heads: 40,
            layers: 36,
        };
        let long = MAX_BATCH_TOKENS + 1000;
        assert_eq!(budget_from_memory(60 << 30, esm3b, 2, long), long);
        assert_eq!(budget_from_memory(1 << 20, esm3b, 2, long), long);
        assert_eq!(largest_tensor_budget(1 << 20, esm3b, long), long);
    }

    #[test]
    fn largest_tensor_stays_under_the_limit() {
        let esm3b = ModelShape {
            hidden: 2560,
            intermediate: 10240,
            heads: 40,
            layers: 36,
        };
        // 127 sequences at L=1026 with 40 heads: ~21 GB of f32 scores in one tensor; an 8 GiB
        // limit (a quarter of a 32 GiB device) holds 52 of them (53,500 padded tokens).
        let limit = 8u64 << 30;
        let b = largest_tensor_budget(limit, esm3b, 1026);
        assert_eq!(b, (limit / (4 * 40 * 1026)) as usize);
        let n = b / 1026;
        assert!((n * 40 * 1026 * 1026 * 4) as u64 <= limit);
        // Short sequences: the feed-forward activations bound it.
        assert_eq!(
            largest_tensor_budget(1 << 30, esm3b, 100),
            (1usize << 30) / (4 * 10240)
        );
    }

    /// The largest single tensor of a batch of `budget` padded tokens at `longest`: the f32
    /// attention scores `[n, heads, longest, longest]` or the feed-forward activations.
    fn largest_tensor_bytes(budget: usize, shape: ModelShape, longest: usize) -> u64 {
        let n = (budget / longest).max(1) as u64;
        let scores = n * shape.heads as u64 * (longest as u64).pow(2) * 4;
        let ffn = n * longest as u64 * shape.intermediate as u64 * 4;
        scores.max(ffn)
    }

    #[test]
    fn no_cuda_batch_has_a_tensor_above_a_quarter_of_the_memory() {
        let esm3b = ModelShape {
            hidden: 2560,
            intermediate: 10240,
            heads: 40,
            layers: 36,
        };
        // The case: L=1026, 40 heads; free memory of a 16, 40, 80 and 141 GiB device
        // after loading the 3B model in f16 (~5.6 GiB), and the total when free is unknown.
        for total_gib in [16u64, 40, 80, 141] {
            let total = total_gib << 30;
            let free = total - (5600 << 20);
            for longest in [50, 170, 512, 1026, 4000] {
                for (f, t, bytes) in [
                    (Some(free), Some(total), 2),
                    (Some(free), None, 4),
                    (None, Some(total), 2),
                ] {
                    let b = cuda_budget(f, t, 32 * 1024, esm3b, bytes, longest);
                    let largest = largest_tensor_bytes(b, esm3b, longest);
                    assert!(
                        largest <= total / 4 || b == longest,
                        "{total_gib} GiB, L={longest}: budget {b} makes a {largest}-byte tensor"
                    );
                    assert!(b >= longest, "one longest sequence always fits");
                }
            }
        }
        // 127 sequences at L=1026 (~21 GB of scores) are never one batch on an 80 GiB device.
        let b = cuda_budget(Some(74 << 30), None, 32 * 1024, esm3b, 2, 1026);
        assert!(b / 1026 < 127, "{b}");
        // Unknown memory: the engine's default, at least one sequence.
        assert_eq!(
            cuda_budget(None, None, 32 * 1024, esm3b, 2, 1026),
            32 * 1024
        );
        assert_eq!(cuda_budget(None, None, 1024, esm3b, 2, 5000), 5000);
    }

    #[test]
    fn every_index_once_and_within_budget() {
        let lengths: Vec<usize> = (0..500).map(|i| (i * 37) % 301 + 3).collect();
        let batches = token_budget_batches(&lengths, 2048);
        let mut seen: Vec<usize> = batches.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..500).collect::<Vec<_>>());
        for b in &batches {
            let longest = b.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(longest * b.len() <= 2048 || b.len() == 1);
        }
    }

    #[test]
    fn oversized_sequence_gets_its_own_batch() {
        let batches = token_budget_batches(&[10, 5000, 10], 100);
        assert_eq!(batches, vec![vec![1], vec![0, 2]]);
    }

    const ESM2_3B: ModelShape = ModelShape {
        hidden: 2560,
        intermediate: 10240,
        heads: 40,
        layers: 36,
    };

    #[test]
    fn a_small_input_is_split_so_every_cpu_worker_has_work() {
        // Four 3B-run proteins: one 2048-token batch would keep one of two cores busy.
        let lengths = [175, 170, 168, 167];
        let budget = cpu_budget(&lengths, 2, ESM2_3B, None);
        assert_eq!(budget, 340);
        assert!(token_budget_batches(&lengths, budget).len() >= 2);
        // A large input keeps the full 2048-token batches' sizes; one worker never splits.
        let large = [300; 1000];
        assert_eq!(
            token_budget_batches(&large, cpu_budget(&large, 2, ESM2_3B, None)),
            token_budget_batches(&large, CPU_BATCH_TOKENS)
        );
        assert_eq!(cpu_budget(&lengths, 1, ESM2_3B, None), CPU_BATCH_TOKENS);
        // Never below the longest sequence, never 0.
        assert_eq!(cpu_budget(&[1000, 10], 4, ESM2_3B, None), 1000);
        assert_eq!(cpu_budget(&[], 2, ESM2_3B, None), 1);
    }

    #[test]
    fn cpu_batches_are_even_so_the_workers_finish_together() {
        // 40 proteins: 12 + 12 + 12 + 4 in 2048 tokens; even, two rounds of two workers.
        let forty = [168; 40];
        let b = cpu_budget(&forty, 2, ESM2_3B, None);
        let sizes: Vec<usize> = token_budget_batches(&forty, b)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes, vec![10; 4]);
        // Three workers: four full batches would be two rounds, the second one third busy;
        // six (greedy: 7 7 7 7 7 5) are two nearly full rounds.
        let b = cpu_budget(&forty, 3, ESM2_3B, None);
        let sizes: Vec<usize> = token_budget_batches(&forty, b)
            .iter()
            .map(Vec::len)
            .collect();
        assert_eq!(sizes.len(), 6);
        assert!(sizes.iter().all(|&n| (5..=7).contains(&n)), "{sizes:?}");
        // Mixed lengths: the count a multiple of the workers, every batch within the budget.
        let mixed: Vec<usize> = (0..300).map(|i| 60 + (i * 37) % 400).collect();
        for workers in [2, 3, 4] {
            let b = cpu_budget(&mixed, workers, ESM2_3B, None);
            let batches = token_budget_batches(&mixed, b);
            assert_eq!(
                batches.len() % workers,
                0,
                "{workers} workers: {}",
                batches.len()
            );
            assert!(b <= CPU_BATCH_TOKENS);
        }
    }

    #[test]
    fn cpu_batches_keep_the_feed_forward_activation_in_the_cache() {
        use crate::device::cpu_cache::CacheInfo;
        let l3 = Some(CacheInfo {
            bytes: 32 << 20,
            shared_by: 2,
        });
        let many = [168; 1000];
        // 3B: 40 KB per token, 16 MB per worker -> two 168-token proteins per batch.
        let b = cpu_budget(&many, 2, ESM2_3B, l3);
        assert!((336..=409).contains(&b), "{b}");
        assert_eq!(token_budget_batches(&many, b)[0].len(), 2);
        // 650M: four proteins; 8M (5 KB per token): the full 2048 tokens.
        let m650 = ModelShape {
            hidden: 1280,
            intermediate: 5120,
            heads: 20,
            layers: 33,
        };
        assert_eq!(
            token_budget_batches(&many, cpu_budget(&many, 2, m650, l3))[0].len(),
            4
        );
        let m8 = ModelShape {
            hidden: 320,
            intermediate: 1280,
            heads: 20,
            layers: 6,
        };
        let full = token_budget_batches(&many, CPU_BATCH_TOKENS);
        assert_eq!(
            token_budget_batches(&many, cpu_budget(&many, 2, m8, l3)),
            full
        );
        // One worker has the whole cache; a tiny cache never goes below the longest sequence.
        assert_eq!(cpu_budget(&many, 1, ESM2_3B, l3), 819);
        let tiny = Some(CacheInfo {
            bytes: 1 << 20,
            shared_by: 1,
        });
        assert_eq!(cpu_budget(&many, 2, ESM2_3B, tiny), 168);
        // A zero-width model (a corrupt config) does not divide by zero.
        let zero = ModelShape {
            intermediate: 0,
            ..m8
        };
        assert_eq!(
            token_budget_batches(&many, cpu_budget(&many, 2, zero, l3)),
            full
        );
    }

    #[test]
    fn empty_input_has_no_batches() {
        assert!(token_budget_batches(&[], 100).is_empty());
    }
}
