//! The building blocks both encoders share, loaded from PyTorch checkpoints: a `Linear` applied
//! as one GEMM over every token of a batch, and a LayerNorm on the backend's fused kernel.

use burn::module::{Module, Param};
use burn::tensor::backend::Backend;
use burn::tensor::module::linear;
use burn::tensor::{Tensor, TensorPrimitive};

/// A PyTorch `Linear` as an `[in, out]` weight and an optional bias.
#[derive(Module, Debug)]
pub struct Dense<B: Backend> {
    weight: Param<Tensor<B, 2>>,
    bias: Option<Param<Tensor<B, 1>>>,
}

impl<B: Backend> Dense<B> {
    /// `weight` is `[in, out]` (a checkpoint's `[out, in]` transposed); `bias` is `[out]`.
    pub fn new(weight: Tensor<B, 2>, bias: Option<Tensor<B, 1>>) -> Self {
        Self {
            weight: Param::from_tensor(weight),
            bias: bias.map(Param::from_tensor),
        }
    }

    /// `[batch, len, in]` -> `[batch, len, out]`.
    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        let [batch, len, dim] = x.dims();
        // One [b·l, in] × [in, out] GEMM instead of b broadcast ones: the weight is read once.
        let y = linear(
            x.reshape([batch * len, dim]),
            self.weight.val(),
            self.bias.as_ref().map(Param::val),
        );
        let out = y.dims()[1];
        y.reshape([batch, len, out])
    }

    /// The output features `range` of a bias-free layer, as a layer of its own.
    pub fn slice_cols(&self, range: std::ops::Range<usize>) -> Self {
        assert!(self.bias.is_none(), "slice_cols is for bias-free layers");
        Self::new(self.weight.val().slice_dim(1, range), None)
    }
}

/// LayerNorm over the last dimension with a checkpoint's gamma/beta.
#[derive(Module, Debug)]
pub struct Norm<B: Backend> {
    gamma: Param<Tensor<B, 1>>,
    beta: Param<Tensor<B, 1>>,
    #[module(skip)]
    eps: f64,
}

impl<B: Backend> Norm<B> {
    pub fn new(gamma: Tensor<B, 1>, beta: Tensor<B, 1>, eps: f64) -> Self {
        Self {
            gamma: Param::from_tensor(gamma),
            beta: Param::from_tensor(beta),
            eps,
        }
    }

    pub fn forward(&self, x: Tensor<B, 3>) -> Tensor<B, 3> {
        Tensor::from_primitive(TensorPrimitive::Float(B::layer_norm(
            x.into_primitive().tensor(),
            self.gamma.val().into_primitive().tensor(),
            Some(self.beta.val().into_primitive().tensor()),
            self.eps,
        )))
    }
}
