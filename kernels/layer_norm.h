// LayerNorm / RMSNorm over the last dimension, with the affine transform and
// an optional activation fused in: y = act(normalize(x) * weight + bias). One
// dispatch point: the fused CUDA kernel (kernels/cuda/layer_norm.cu) for CUDA
// tensors when it was compiled, else the ATen reference.
#pragma once

#include <torch/torch.h>

namespace moetrain::kernels {

enum class NormActivation { None, ReLU, GELU, SiLU };  // GELU: exact erf form, as torch::gelu

const char* norm_activation_name(NormActivation act);

// x [..., D] (float32, bfloat16 or float16 on CUDA; any float dtype on CPU),
// weight [D], bias [D] or undefined (no bias; RMSNorm normally has none).
// normalize is LayerNorm ((x - mean) * rstd) or, with rms = true, RMSNorm
// (x * rsqrt(mean(x^2) + eps)). Statistics and arithmetic in fp32; y has x's
// shape and dtype. Differentiable in x, weight and bias; weight and bias may
// be of any float dtype (normally fp32 or x's dtype) and their gradients have
// their dtype. Rows wider than the CUDA kernel takes (16384) run the
// reference. Throws std::invalid_argument on bad shapes or dtypes.
torch::Tensor layer_norm_activation(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                    double eps, NormActivation act = NormActivation::None, bool rms = false);

// The ATen reference (autograd by ATen): x and the parameters cast to fp32,
// torch::layer_norm or the RMSNorm formula, the activation, then the cast back
// to x's dtype.
torch::Tensor layer_norm_activation_reference(const torch::Tensor& x, const torch::Tensor& weight,
                                              const torch::Tensor& bias, double eps,
                                              NormActivation act = NormActivation::None, bool rms = false);

}  // namespace moetrain::kernels
