//! The parity harness of the two encoders (ESM-2 and DNABERT-S) against their goldens, on any
//! backend: embeddings as host rows, the largest absolute difference, the golden, batching
//! and half-precision checks, and the fixed-seed sequences the long-input tests embed. Used by
//! tests/models (the CPU and CUDA backends) and tests/wgpu_parity.rs (wgpu).

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor};
use virnucpro::models::dnabert_s::DnabertS;
use virnucpro::models::esm2::Esm2;
use virnucpro::models::ops::ModelOps;

use super::Case;

/// The two encoders behind one interface, loaded on any backend.
pub trait Embed<B: Backend> {
    /// Mean embeddings `[batch, hidden]` of a batch of token id sequences.
    fn embed(&self, batch: &[Vec<u32>]) -> Tensor<B, 2>;
}

impl<B: ModelOps> Embed<B> for Esm2<B> {
    fn embed(&self, batch: &[Vec<u32>]) -> Tensor<B, 2> {
        Esm2::embed(self, batch)
    }
}

impl<B: ModelOps> Embed<B> for DnabertS<B> {
    fn embed(&self, batch: &[Vec<u32>]) -> Tensor<B, 2> {
        DnabertS::embed(self, batch)
    }
}

/// The rows of a `[n, dim]` f32 tensor (any other dtype fails: embeddings come back as f32).
pub fn rows<B: Backend>(t: Tensor<B, 2>) -> Vec<Vec<f32>> {
    let [_, dim] = t.dims();
    let values = t.into_data().to_vec::<f32>().unwrap();
    values.chunks(dim).map(<[f32]>::to_vec).collect()
}

/// The largest |a[i] − b[i]|; the lengths must agree.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// The largest |a[r][i] − b[r][i]| over rows of equal number and lengths.
pub fn max_abs_diff_rows(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| max_abs_diff(x, y))
        .fold(0.0, f32::max)
}

/// The cases' token ids as one batch, in order.
pub fn batch_of(cases: &[Case]) -> Vec<Vec<u32>> {
    cases.iter().map(|c| c.token_ids.clone()).collect()
}

/// One sequence embedded alone.
pub fn embed_one<B: Backend>(model: &impl Embed<B>, ids: &[u32]) -> Vec<f32> {
    rows(model.embed(&[ids.to_vec()])).remove(0)
}

/// Every case, one sequence per forward, against its golden embedding within `tol`; returns
/// the rows (in the cases' order) and the largest difference to the goldens.
pub fn check_goldens<B: Backend>(
    model: &impl Embed<B>,
    cases: &[Case],
    what: &str,
    tol: f32,
) -> (Vec<Vec<f32>>, f32) {
    let mut worst = 0f32;
    let mut single = Vec::with_capacity(cases.len());
    for case in cases {
        let got = embed_one(model, &case.token_ids);
        let diff = max_abs_diff(&got, &case.embedding);
        assert!(diff <= tol, "{what} {}: max abs diff {diff}", case.id);
        worst = worst.max(diff);
        single.push(got);
    }
    eprintln!("{what}: max abs diff vs goldens {worst:e}");
    (single, worst)
}

/// All cases in one padded batch against their goldens within `tol`; returns the rows and the
/// largest difference to the goldens.
pub fn check_batched_goldens<B: Backend>(
    model: &impl Embed<B>,
    cases: &[Case],
    what: &str,
    tol: f32,
) -> (Vec<Vec<f32>>, f32) {
    let batched = rows(model.embed(&batch_of(cases)));
    assert_eq!(batched.len(), cases.len(), "{what}: one row per sequence");
    let mut worst = 0f32;
    for (case, got) in cases.iter().zip(&batched) {
        let diff = max_abs_diff(got, &case.embedding);
        assert!(
            diff <= tol,
            "{what} batched {}: max abs diff {diff}",
            case.id
        );
        worst = worst.max(diff);
    }
    eprintln!("{what}: batched max abs diff vs goldens {worst:e}");
    (batched, worst)
}

/// Each row of `got` within `tol` of the same row of `want`, rows named by the cases; returns
/// the largest difference.
pub fn check_rows_agree(
    got: &[Vec<f32>],
    want: &[Vec<f32>],
    cases: &[Case],
    what: &str,
    tol: f32,
) -> f32 {
    assert_eq!(got.len(), want.len(), "{what}: row count");
    let mut worst = 0f32;
    for (case, (x, y)) in cases.iter().zip(got.iter().zip(want)) {
        let diff = max_abs_diff(x, y);
        assert!(diff <= tol, "{}: {what} {diff}", case.id);
        worst = worst.max(diff);
    }
    eprintln!("{what}: max abs diff {worst:e}");
    worst
}

/// Two models (the same weights on two code paths) on all cases in one padded batch: each
/// row of `a` within `tol` of the same row of `b`; returns the largest difference.
pub fn check_paths_agree<B: Backend>(
    a: &impl Embed<B>,
    b: &impl Embed<B>,
    cases: &[Case],
    what: &str,
    tol: f32,
) -> f32 {
    let batch = batch_of(cases);
    check_rows_agree(
        &rows(a.embed(&batch)),
        &rows(b.embed(&batch)),
        cases,
        what,
        tol,
    )
}

/// Batching, order and padding do not change results: every case alone, then all in one
/// padded batch (each row within `batch_tol` of its single row and `tol` of its golden), then
/// the batch reordered by `order` (duplicates allowed), each row following its sequence.
/// Returns the rows of the cases embedded alone.
pub fn check_batching_and_order<B: Backend>(
    model: &impl Embed<B>,
    cases: &[Case],
    order: &[usize],
    tol: f32,
    batch_tol: f32,
) -> Vec<Vec<f32>> {
    let single: Vec<Vec<f32>> = cases
        .iter()
        .map(|c| embed_one(model, &c.token_ids))
        .collect();

    let batch = batch_of(cases);
    let batched = rows(model.embed(&batch));
    assert_eq!(batched.len(), cases.len());
    let mut worst = 0f32;
    for ((case, one), many) in cases.iter().zip(&single).zip(&batched) {
        let diff = max_abs_diff(one, many);
        assert!(diff <= batch_tol, "{}: batched vs single {diff}", case.id);
        assert!(
            max_abs_diff(many, &case.embedding) <= tol,
            "batched {} vs golden",
            case.id
        );
        worst = worst.max(diff);
    }
    eprintln!("batched vs single: max abs diff {worst:e}");

    let shuffled: Vec<Vec<u32>> = order.iter().map(|&i| batch[i].clone()).collect();
    let got = rows(model.embed(&shuffled));
    assert_eq!(got.len(), order.len());
    for (row, &i) in got.iter().zip(order) {
        let diff = max_abs_diff(row, &single[i]);
        assert!(diff <= batch_tol, "{} (shuffled): {diff}", cases[i].id);
    }
    single
}

/// A half-precision forward's embeddings `got` (of the cases, in order) against the f32
/// goldens: they come back as f32, and each is within cosine `min_cosine` of its golden.
/// Logs the smallest cosine as `{what}: min cosine vs the f32 goldens …`.
pub fn check_cosines<B: Backend>(got: Tensor<B, 2>, cases: &[Case], what: &str, min_cosine: f64) {
    assert_eq!(got.dtype(), DType::F32, "embeddings come back as f32");
    let got = rows(got);
    assert_eq!(got.len(), cases.len(), "{what}: one row per sequence");
    let mut worst = 1f64;
    for (case, row) in cases.iter().zip(&got) {
        let cos = super::cosine(row, &case.embedding);
        assert!(cos >= min_cosine, "{what} {}: cosine {cos}", case.id);
        worst = worst.min(cos);
    }
    eprintln!("{what}: min cosine vs the f32 goldens {worst:.6}");
}

/// Reduced products on the CPU for one encoder (`--precision bf16` or `int8`, `matmul`):
/// `generic` (the composition with reduced operands — bf16-rounded, or int8-quantised and
/// scaled back —, what the AMX products compute up to the order of f32 additions) within
/// `min_cosine` of the f32 goldens, and where the CPU runs the AMX kernels for `matmul`,
/// `fused` (the backend's kernels, products on AMX tiles) too and within `tol` of `generic`
/// (not bit-equal: where the two paths' f32 activations differ in the last bit, an operand can
/// round to a neighbouring bf16 or int8 value).
pub fn check_reduced_products<B: Backend>(
    fused: &impl Embed<B>,
    generic: &impl Embed<B>,
    cases: &[Case],
    matmul: virnucpro::models::ops::Matmul,
    min_cosine: f64,
    tol: f32,
) {
    let batch = batch_of(cases);
    check_cosines(
        generic.embed(&batch),
        cases,
        &format!("{matmul:?} products, composition"),
        min_cosine,
    );
    if !virnucpro::models::reduced::available(matmul) {
        eprintln!("this CPU has no AMX kernels for {matmul:?}: they are not checked here");
        return;
    }
    check_cosines(
        fused.embed(&batch),
        cases,
        &format!("{matmul:?} products, AMX"),
        min_cosine,
    );
    check_paths_agree(
        fused,
        generic,
        cases,
        &format!("{matmul:?} AMX vs composition"),
        tol,
    );
}

/// `a` and `b` embed the cases, batched, to the same bits (`what` names the pair).
pub fn check_same_bits<B: Backend>(
    a: &impl Embed<B>,
    b: &impl Embed<B>,
    cases: &[Case],
    what: &str,
) {
    let batch = batch_of(cases);
    let (a, b) = (rows(a.embed(&batch)), rows(b.embed(&batch)));
    for ((x, y), case) in a.iter().zip(&b).zip(cases) {
        let same = x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
        assert!(
            same,
            "{what}: {} differs (max {})",
            case.id,
            max_abs_diff(x, y)
        );
    }
}

/// A small deterministic generator (a 64-bit LCG, Knuth's MMIX constants; no dependency), for
/// inputs that must be the same on every run.
pub struct Lcg(pub u64);

impl Lcg {
    /// The next state.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0
    }

    /// Uniform in [-1, 1).
    pub fn next_f32(&mut self) -> f32 {
        ((self.next_u64() >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }

    /// A protein of `len` residues over the 20 standard amino acids.
    pub fn protein(&mut self, len: usize) -> String {
        const AA: &[u8] = b"ACDEFGHIKLMNPQRSTVWY";
        (0..len)
            .map(|_| AA[(self.next_u64() >> 33) as usize % AA.len()] as char)
            .collect()
    }

    /// A DNA string of `len` bases over ACGT.
    pub fn dna(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| b"ACGT"[(self.next_u64() >> 62) as usize] as char)
            .collect()
    }
}

/// A protein of `len` residues from the fixed seed `seed`.
pub fn random_protein(len: usize, seed: u64) -> String {
    Lcg(seed).protein(len)
}

/// A DNA string of `len` bases from the fixed seed `seed`.
pub fn random_dna(len: usize, seed: u64) -> String {
    Lcg(seed).dna(len)
}
