//! The largest |x − mean| the LayerNorms of ESM-2 see, per layer, for a model directory at a
//! real shape (a measurement run by hand; it decides whether a half-precision LayerNorm could
//! overflow: `(x − mean)²` passes f16's 65504 once |x − mean| > 256). The norms run in f32
//! whatever the model's dtype, so this is a figure for the README, not a guard.
//!
//! `VIRNUCPRO_PROFILE_ESM=DIR cargo test --release --test models -- esm2_activations:: --ignored
//! --nocapture`, DIR from e.g. `bench/gpu/make_models.py OUT --esm-layers 6` (the 3B model's
//! width, heads and feed-forward with random weights; the real checkpoint is the real answer).

use burn::backend::flex::FlexDevice;
use burn::backend::Flex;
use burn::tensor::Tensor;
use virnucpro::models::esm2::Esm2;
use virnucpro::tokenize::esm::EsmTokenizer;

/// Per layer, over real tokens: max over tokens of max |x − mean(x)| across the hidden dims.
fn largest_deviation(state: Tensor<Flex, 3>, lengths: &[usize]) -> f32 {
    let [_, len, dim] = state.dims();
    let centred = state.clone() - state.mean_dim(2);
    let values = centred
        .abs()
        .into_data()
        .convert::<f32>()
        .to_vec::<f32>()
        .unwrap();
    let mut worst = 0f32;
    for (b, &n) in lengths.iter().enumerate() {
        for v in &values[b * len * dim..(b * len + n) * dim] {
            worst = worst.max(*v);
        }
    }
    worst
}

#[test]
#[ignore = "a measurement at a real model's shape; needs VIRNUCPRO_PROFILE_ESM"]
fn esm2_largest_deviation_per_layer() {
    let Some(dir) = std::env::var_os("VIRNUCPRO_PROFILE_ESM") else {
        eprintln!("set VIRNUCPRO_PROFILE_ESM to an ESM-2 model directory");
        return;
    };
    let (model, config) = Esm2::<Flex>::load(std::path::Path::new(&dir), &FlexDevice).unwrap();
    // Real proteins' lengths (sop7's ORFs are ~60-400 residues), residues from a fixed seed.
    let tok = EsmTokenizer::new();
    let mut rng = crate::common::parity::Lcg(7);
    let batch: Vec<Vec<u32>> = [310usize, 120]
        .iter()
        .map(|&n| tok.encode(&rng.protein(n)))
        .collect();
    let lengths: Vec<usize> = batch.iter().map(Vec::len).collect();
    let states = model.layer_states(&batch);
    let mut worst = 0f32;
    for (layer, s) in states.into_iter().enumerate() {
        let d = largest_deviation(s, &lengths);
        let what = if layer < config.num_layers {
            format!("entering layer {layer}")
        } else {
            "after the last layer".to_string()
        };
        eprintln!(
            "ESM-2 ({} x {}): {what}: max |x - mean| {d:.1}",
            config.num_layers, config.hidden
        );
        worst = worst.max(d);
    }
    eprintln!(
        "largest |x - mean| {worst:.1} ({}; f16 squares overflow past 256)",
        if worst > 256.0 {
            "would overflow"
        } else {
            "below"
        }
    );
    assert!(worst.is_finite() && worst > 0.0);
}
