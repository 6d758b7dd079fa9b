// kernels::layer_norm_activation: the ATen reference against a hand formula in
// double (values and gradients), the closed-form backward the CUDA kernel uses
// against autograd, argument checks (CPU); the fused CUDA kernel against the
// reference for every dtype, width, activation and norm (skipped without a
// device).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/layer_norm.h"
#include "tests/unit/kernels/kernel_test_support.h"

namespace moetrain::kernels {
namespace {

const std::vector<NormActivation> kActivations = {NormActivation::None, NormActivation::ReLU, NormActivation::GELU,
                                                  NormActivation::SiLU};

std::string describe(NormActivation act, bool rms, torch::ScalarType dtype, int64_t dim) {
  return std::string(rms ? "rms" : "layer") + " norm, " + norm_activation_name(act) + ", " +
         std::string(c10::toString(dtype)) + ", D=" + std::to_string(dim);
}

// max |actual - expected| / max(max |expected|, 1e-6): the error relative to
// the scale of the tensor.
double scaled_error(const torch::Tensor& actual, const torch::Tensor& expected) {
  const torch::Tensor a = actual.detach().to(torch::kDouble).cpu();
  const torch::Tensor e = expected.detach().to(torch::kDouble).cpu();
  if (e.numel() == 0) return 0.0;
  const double scale = std::max(e.abs().max().item<double>(), 1e-6);
  return (a - e).abs().max().item<double>() / scale;
}

::testing::AssertionResult close(const torch::Tensor& actual, const torch::Tensor& expected, double tol,
                                 const std::string& what) {
  if (!actual.defined() || !expected.defined()) {
    if (actual.defined() == expected.defined()) return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << what << ": one side is undefined";
  }
  if (actual.sizes() != expected.sizes()) {
    return ::testing::AssertionFailure() << what << ": shape " << actual.sizes() << " vs " << expected.sizes();
  }
  const double err = scaled_error(actual, expected);
  if (err <= tol) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << what << ": scaled error " << err << " > " << tol;
}

// The forward pass written out in double: mean and variance by their
// definitions, then the affine transform and the activation.
torch::Tensor hand_formula(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, double eps,
                           NormActivation act, bool rms) {
  torch::Tensor xhat;
  if (rms) {
    xhat = x / torch::sqrt((x * x).mean(-1, /*keepdim=*/true) + eps);
  } else {
    const torch::Tensor mean = x.sum(-1, /*keepdim=*/true) / static_cast<double>(x.size(-1));
    const torch::Tensor var = (x - mean).pow(2).sum(-1, /*keepdim=*/true) / static_cast<double>(x.size(-1));
    xhat = (x - mean) / torch::sqrt(var + eps);
  }
  torch::Tensor z = xhat * weight;
  if (bias.defined()) z = z + bias;
  switch (act) {
    case NormActivation::None: return z;
    case NormActivation::ReLU: return torch::where(z > 0, z, torch::zeros_like(z));
    case NormActivation::GELU: return 0.5 * z * (1.0 + torch::erf(z / std::sqrt(2.0)));
    case NormActivation::SiLU: return z / (1.0 + torch::exp(-z));
  }
  return z;
}

struct Gradients {
  torch::Tensor dx, dweight, dbias;
};

// The closed-form backward of the CUDA kernel, in double: g = dy * act'(z),
// dxhat = g * w, dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
// (no mean(dxhat) term for RMSNorm), dweight = sum g * xhat, dbias = sum g.
Gradients closed_form_backward(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                               const torch::Tensor& dy, double eps, NormActivation act, bool rms) {
  const torch::Tensor mean = rms ? torch::zeros_like(x.select(-1, 0)).unsqueeze(-1) : x.mean(-1, true);
  const torch::Tensor rstd = 1.0 / torch::sqrt((x - mean).pow(2).mean(-1, true) + eps);
  const torch::Tensor xhat = (x - mean) * rstd;
  const torch::Tensor z = xhat * weight + (bias.defined() ? bias : torch::zeros_like(weight));
  torch::Tensor d = torch::ones_like(z);
  if (act == NormActivation::ReLU) d = (z > 0).to(z.scalar_type());
  if (act == NormActivation::GELU) {
    const torch::Tensor cdf = 0.5 * (1.0 + torch::erf(z / std::sqrt(2.0)));
    const torch::Tensor pdf = torch::exp(-0.5 * z * z) / std::sqrt(2.0 * 3.14159265358979323846);
    d = cdf + z * pdf;
  }
  if (act == NormActivation::SiLU) {
    const torch::Tensor s = torch::sigmoid(z);
    d = s * (1.0 + z * (1.0 - s));
  }
  const torch::Tensor g = dy * d;
  const torch::Tensor dxhat = g * weight;
  torch::Tensor inner = dxhat - xhat * (dxhat * xhat).mean(-1, true);
  if (!rms) inner = inner - dxhat.mean(-1, true);
  const torch::Tensor g_rows = g.reshape({-1, x.size(-1)});
  const torch::Tensor xhat_rows = xhat.reshape({-1, x.size(-1)});
  Gradients out;
  out.dx = rstd * inner;
  out.dweight = (g_rows * xhat_rows).sum(0);
  if (bias.defined()) out.dbias = g_rows.sum(0);
  return out;
}

// An upstream gradient in x's dtype. For ReLU it is zero where the
// pre-activation is within 1e-3 of the kink, where two correct computations
// may round z to different sides of 0.
torch::Tensor upstream_gradient(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                double eps, NormActivation act, bool rms) {
  torch::Tensor dy = torch::randn(x.sizes(), x.options().dtype(torch::kFloat));
  if (act == NormActivation::ReLU) {
    const torch::NoGradGuard no_grad;
    const torch::Tensor z =
        layer_norm_activation_reference(x.to(torch::kFloat), weight, bias, eps, NormActivation::None, rms);
    dy = dy.masked_fill(z.abs() < 1e-3, 0.0);
  }
  return dy.to(x.scalar_type());
}

using NormFn = torch::Tensor (*)(const torch::Tensor&, const torch::Tensor&, const torch::Tensor&, double,
                                 NormActivation, bool);

struct NormRun {
  torch::Tensor y;
  Gradients grads;
};

// y = fn(x, weight, bias) on fresh leaves, then y.backward(dy).
NormRun run_with_grads(NormFn fn, const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                       const torch::Tensor& dy, double eps, NormActivation act, bool rms) {
  const torch::Tensor xg = x.detach().clone().requires_grad_(true);
  const torch::Tensor wg = weight.detach().clone().requires_grad_(true);
  const torch::Tensor bg = bias.defined() ? bias.detach().clone().requires_grad_(true) : torch::Tensor();
  NormRun run;
  run.y = fn(xg, wg, bg, eps, act, rms);
  run.y.backward(dy);
  run.y = run.y.detach();
  run.grads.dx = xg.grad();
  run.grads.dweight = wg.grad();
  if (bg.defined()) run.grads.dbias = bg.grad();
  return run;
}

struct Inputs {
  torch::Tensor x, weight, bias;
};

// x = randn * 2 + 0.5 (a mean to remove), weight = 1 + randn / 2, bias =
// randn / 5 (when wanted), all from `seed`; x in `dtype`, parameters fp32.
Inputs make_inputs(std::vector<int64_t> shape, torch::ScalarType dtype, bool with_bias, torch::Device device,
                   uint64_t seed) {
  torch::manual_seed(seed);
  const auto opts = torch::TensorOptions().device(device).dtype(torch::kFloat);
  const int64_t dim = shape.back();
  Inputs in;
  in.x = (torch::randn(shape, opts) * 2.0 + 0.5).to(dtype);
  in.weight = 1.0 + 0.5 * torch::randn({dim}, opts);
  if (with_bias) in.bias = 0.2 * torch::randn({dim}, opts);
  return in;
}

// ---------------------------------------------------------------- CPU ----

TEST(LayerNormReference, MatchesDoubleFormula) {
  const double eps = 1e-5;
  for (const bool rms : {false, true}) {
    for (const NormActivation act : kActivations) {
      for (const torch::ScalarType dtype : {torch::kFloat, torch::kBFloat16}) {
        for (const bool with_bias : {false, true}) {
          const Inputs in = make_inputs({4, 7, 48}, dtype, with_bias, torch::kCPU, 101);
          const std::string what = describe(act, rms, dtype, 48) + (with_bias ? ", bias" : ", no bias");
          const torch::Tensor y = layer_norm_activation_reference(in.x, in.weight, in.bias, eps, act, rms);
          EXPECT_EQ(y.scalar_type(), dtype) << what;
          EXPECT_EQ(y.sizes(), in.x.sizes()) << what;
          const torch::Tensor expected =
              hand_formula(in.x.to(torch::kDouble), in.weight.to(torch::kDouble),
                           with_bias ? in.bias.to(torch::kDouble) : torch::Tensor(), eps, act, rms);
          EXPECT_TRUE(close(y, expected, dtype == torch::kFloat ? 2e-6 : 8e-3, what));
        }
      }
    }
  }
}

TEST(LayerNormReference, NoActivationIsWhatNormComputed) {
  // LayerNorm: x and the parameters to fp32, torch::layer_norm, back to x's
  // dtype; RMSNorm: x * rsqrt(mean(x^2) + eps) * weight in fp32.
  for (const torch::ScalarType dtype : {torch::kFloat, torch::kBFloat16}) {
    const Inputs in = make_inputs({3, 5, 40}, dtype, true, torch::kCPU, 102);
    const torch::Tensor w = in.weight.to(dtype);
    const torch::Tensor b = in.bias.to(dtype);
    const torch::Tensor x32 = in.x.to(torch::kFloat);
    const torch::Tensor ln = torch::layer_norm(x32, {40}, w.to(torch::kFloat), b.to(torch::kFloat), 1e-5).to(dtype);
    EXPECT_TRUE(layer_norm_activation_reference(in.x, w, b, 1e-5).equal(ln));
    const torch::Tensor rms =
        (x32 * torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + 1e-6) * w.to(torch::kFloat)).to(dtype);
    EXPECT_TRUE(layer_norm_activation_reference(in.x, w, torch::Tensor(), 1e-6, NormActivation::None, true).equal(rms));
  }
}

TEST(LayerNormReference, GradientsMatchDoubleFormula) {
  const double eps = 1e-5;
  for (const bool rms : {false, true}) {
    for (const NormActivation act : kActivations) {
      const Inputs in = make_inputs({6, 33}, torch::kFloat, /*with_bias=*/true, torch::kCPU, 103);
      const torch::Tensor dy = upstream_gradient(in.x, in.weight, in.bias, eps, act, rms);
      const std::string what = describe(act, rms, torch::kFloat, 33);
      const NormRun ref = run_with_grads(&layer_norm_activation_reference, in.x, in.weight, in.bias, dy, eps, act, rms);
      const NormRun exact = run_with_grads(&hand_formula, in.x.to(torch::kDouble), in.weight.to(torch::kDouble),
                                           in.bias.to(torch::kDouble), dy.to(torch::kDouble), eps, act, rms);
      EXPECT_TRUE(close(ref.grads.dx, exact.grads.dx, 1e-5, what + " dx"));
      EXPECT_TRUE(close(ref.grads.dweight, exact.grads.dweight, 1e-5, what + " dweight"));
      EXPECT_TRUE(close(ref.grads.dbias, exact.grads.dbias, 1e-5, what + " dbias"));
    }
  }
}

TEST(LayerNormReference, ClosedFormBackwardMatchesAutograd) {
  // The formulas the CUDA backward kernel implements, checked in double.
  const double eps = 1e-5;
  for (const bool rms : {false, true}) {
    for (const bool with_bias : {false, true}) {
      for (const NormActivation act : kActivations) {
        const Inputs in = make_inputs({2, 5, 37}, torch::kFloat, with_bias, torch::kCPU, 104);
        const torch::Tensor x = in.x.to(torch::kDouble);
        const torch::Tensor w = in.weight.to(torch::kDouble);
        const torch::Tensor b = with_bias ? in.bias.to(torch::kDouble) : torch::Tensor();
        const torch::Tensor dy = upstream_gradient(x, w, b, eps, act, rms);
        const std::string what = describe(act, rms, torch::kDouble, 37) + (with_bias ? ", bias" : ", no bias");
        const NormRun autograd = run_with_grads(&hand_formula, x, w, b, dy, eps, act, rms);
        const Gradients closed = closed_form_backward(x, w, b, dy, eps, act, rms);
        EXPECT_TRUE(close(closed.dx, autograd.grads.dx, 1e-10, what + " dx"));
        EXPECT_TRUE(close(closed.dweight, autograd.grads.dweight, 1e-10, what + " dweight"));
        EXPECT_TRUE(close(closed.dbias, autograd.grads.dbias, 1e-10, what + " dbias"));
      }
    }
  }
}

TEST(LayerNormReference, GradientsHaveTheParametersDtypes) {
  const Inputs in = make_inputs({4, 24}, torch::kBFloat16, true, torch::kCPU, 105);
  const torch::Tensor dy = torch::randn({4, 24}).to(torch::kBFloat16);
  // fp32 parameters with a bf16 input, and everything in bf16.
  for (const torch::ScalarType param_dtype : {torch::kFloat, torch::kBFloat16}) {
    const NormRun run = run_with_grads(&layer_norm_activation, in.x, in.weight.to(param_dtype), in.bias.to(param_dtype),
                                       dy, 1e-5, NormActivation::GELU, false);
    EXPECT_EQ(run.y.scalar_type(), torch::kBFloat16);
    EXPECT_EQ(run.grads.dx.scalar_type(), torch::kBFloat16);
    EXPECT_EQ(run.grads.dweight.scalar_type(), param_dtype);
    EXPECT_EQ(run.grads.dbias.scalar_type(), param_dtype);
    const NormRun exact = run_with_grads(
        &hand_formula, in.x.to(torch::kDouble), in.weight.to(param_dtype).to(torch::kDouble),
        in.bias.to(param_dtype).to(torch::kDouble), dy.to(torch::kDouble), 1e-5, NormActivation::GELU, false);
    EXPECT_TRUE(close(run.grads.dx, exact.grads.dx, 2e-2, "dx"));
    EXPECT_TRUE(close(run.grads.dweight, exact.grads.dweight, 2e-2, "dweight"));
    EXPECT_TRUE(close(run.grads.dbias, exact.grads.dbias, 2e-2, "dbias"));
  }
}

TEST(LayerNormDispatch, CpuRunsTheReference) {
  const double eps = 1e-5;
  for (const bool rms : {false, true}) {
    for (const NormActivation act : kActivations) {
      const Inputs in = make_inputs({3, 4, 20}, torch::kBFloat16, !rms, torch::kCPU, 106);
      const torch::Tensor dy = upstream_gradient(in.x, in.weight, in.bias, eps, act, rms);
      const NormRun fused = run_with_grads(&layer_norm_activation, in.x, in.weight, in.bias, dy, eps, act, rms);
      const NormRun ref = run_with_grads(&layer_norm_activation_reference, in.x, in.weight, in.bias, dy, eps, act, rms);
      const std::string what = describe(act, rms, torch::kBFloat16, 20);
      EXPECT_TRUE(fused.y.equal(ref.y)) << what;
      EXPECT_TRUE(fused.grads.dx.equal(ref.grads.dx)) << what;
      EXPECT_TRUE(fused.grads.dweight.equal(ref.grads.dweight)) << what;
      if (!rms) {
        EXPECT_TRUE(fused.grads.dbias.equal(ref.grads.dbias)) << what;
      }
    }
  }
}

TEST(LayerNormDispatch, BadArgumentsThrow) {
  const torch::Tensor x = torch::randn({4, 8});
  const torch::Tensor w = torch::ones({8});
  const torch::Tensor b = torch::zeros({8});
  for (const NormFn fn : {NormFn(&layer_norm_activation), NormFn(&layer_norm_activation_reference)}) {
    EXPECT_THROW(fn(torch::randn({}), torch::ones({1}), b, 1e-5, NormActivation::None, false), std::invalid_argument);
    EXPECT_THROW(fn(torch::randn({4, 0}), torch::ones({0}), torch::Tensor(), 1e-5, NormActivation::None, false),
                 std::invalid_argument);
    EXPECT_THROW(fn(torch::Tensor(), w, b, 1e-5, NormActivation::None, false), std::invalid_argument);
    EXPECT_THROW(fn(torch::ones({4, 8}, torch::kLong), w, b, 1e-5, NormActivation::None, false), std::invalid_argument);
    EXPECT_THROW(fn(x, torch::Tensor(), b, 1e-5, NormActivation::None, false), std::invalid_argument);
    EXPECT_THROW(fn(x, torch::ones({9}), b, 1e-5, NormActivation::None, false), std::invalid_argument);
    EXPECT_THROW(fn(x, torch::ones({1, 8}), b, 1e-5, NormActivation::None, false), std::invalid_argument);
    EXPECT_THROW(fn(x, torch::ones({8}, torch::kLong), b, 1e-5, NormActivation::None, false), std::invalid_argument);
    EXPECT_THROW(fn(x, w, torch::zeros({7}), 1e-5, NormActivation::None, false), std::invalid_argument);
    EXPECT_THROW(fn(x, w, torch::zeros({8}, torch::kInt), 1e-5, NormActivation::None, true), std::invalid_argument);
    EXPECT_THROW(fn(x, w, b, -1.0, NormActivation::None, false), std::invalid_argument);
    EXPECT_THROW(fn(x, w, b, 1e-5, static_cast<NormActivation>(17), false), std::invalid_argument);
    EXPECT_NO_THROW(fn(x, w, torch::Tensor(), 1e-5, NormActivation::SiLU, true));
  }
  try {
    layer_norm_activation(x, torch::ones({9}), b, 1e-5);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string message = e.what();
    EXPECT_NE(message.find("layer_norm_activation"), std::string::npos) << message;
    EXPECT_NE(message.find("weight"), std::string::npos) << message;
    EXPECT_EQ(message.find('\n'), std::string::npos) << message;
  }
}

// --------------------------------------------------------------- CUDA ----

double tolerance(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kBFloat16: return 2e-2;
    case torch::kHalf: return 2e-3;
    default: return 1e-5;
  }
}

// The fused op against the reference in the same dtype, forward and backward;
// failures are reported with `what`. Gradient sums over rows run in another
// order than the reference's, so fp32 gradients get twice the fp32 tolerance.
void expect_fused_matches_reference(const Inputs& in, double eps, NormActivation act, bool rms,
                                    const std::string& what) {
  const torch::Tensor dy = upstream_gradient(in.x, in.weight, in.bias, eps, act, rms);
  const NormRun fused = run_with_grads(&layer_norm_activation, in.x, in.weight, in.bias, dy, eps, act, rms);
  const NormRun ref = run_with_grads(&layer_norm_activation_reference, in.x, in.weight, in.bias, dy, eps, act, rms);
  const double tol = tolerance(in.x.scalar_type());
  const double grad_tol = in.x.scalar_type() == torch::kFloat ? 2 * tol : tol;
  EXPECT_EQ(fused.y.scalar_type(), in.x.scalar_type()) << what;
  EXPECT_EQ(fused.y.sizes(), in.x.sizes()) << what;
  EXPECT_TRUE(close(fused.y, ref.y, tol, what + " y"));
  EXPECT_TRUE(close(fused.grads.dx, ref.grads.dx, grad_tol, what + " dx"));
  EXPECT_TRUE(close(fused.grads.dweight, ref.grads.dweight, grad_tol, what + " dweight"));
  EXPECT_TRUE(close(fused.grads.dbias, ref.grads.dbias, grad_tol, what + " dbias"));
}

TEST(LayerNormCuda, MatchesReferenceForEveryDtypeWidthAndActivation) {
  SKIP_WITHOUT_CUDA_KERNELS();
  const BackendGuard fused(KernelBackend::Fused);
  const double eps = 1e-5;
  uint64_t seed = 200;
  for (const torch::ScalarType dtype : {torch::kFloat, torch::kBFloat16, torch::kHalf}) {
    for (const int64_t dim : {64, 1000, 1024, 4096}) {
      for (const bool rms : {false, true}) {
        // LayerNorm with a bias; RMSNorm without, except at D = 1000.
        const bool with_bias = !rms || dim == 1000;
        for (const NormActivation act : kActivations) {
          const Inputs in = make_inputs({3, 111, dim}, dtype, with_bias, torch::kCUDA, ++seed);
          expect_fused_matches_reference(in, eps, act, rms, describe(act, rms, dtype, dim));
        }
      }
    }
  }
}

TEST(LayerNormCuda, EveryRowLayout) {
  // Widths that take each kernel instance: one warp per row with 1, 2, 4 and 8
  // elements per thread, one block per row with 4, 8 and 16, and the edges.
  SKIP_WITHOUT_CUDA_KERNELS();
  const BackendGuard fused(KernelBackend::Fused);
  uint64_t seed = 300;
  for (const int64_t dim : {1, 7, 32, 33, 100, 200, 256, 257, 2048, 3000, 8192, 9000, 16384}) {
    for (const torch::ScalarType dtype : {torch::kFloat, torch::kBFloat16}) {
      for (const bool rms : {false, true}) {
        const Inputs in = make_inputs({37, dim}, dtype, !rms, torch::kCUDA, ++seed);
        expect_fused_matches_reference(in, 1e-5, NormActivation::GELU, rms,
                                       describe(NormActivation::GELU, rms, dtype, dim));
      }
    }
  }
}

TEST(LayerNormCuda, ManyRowsParametersInTheInputDtypeAndNonContiguousInput) {
  SKIP_WITHOUT_CUDA_KERNELS();
  const BackendGuard fused(KernelBackend::Fused);
  // 70000 rows: the weight and bias gradients are split over 256 partial sums.
  const Inputs many = make_inputs({70000, 64}, torch::kBFloat16, true, torch::kCUDA, 401);
  expect_fused_matches_reference(many, 1e-5, NormActivation::SiLU, false, "70000 rows");
  // bf16 weight and bias: their gradients in bf16.
  Inputs low = make_inputs({333, 1000}, torch::kBFloat16, true, torch::kCUDA, 402);
  low.weight = low.weight.to(torch::kBFloat16);
  low.bias = low.bias.to(torch::kBFloat16);
  expect_fused_matches_reference(low, 1e-5, NormActivation::ReLU, false, "bf16 parameters");
  const torch::Tensor dy = torch::randn({333, 1000}, low.x.options());
  const NormRun run =
      run_with_grads(&layer_norm_activation, low.x, low.weight, low.bias, dy, 1e-5, NormActivation::None, false);
  EXPECT_EQ(run.grads.dweight.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(run.grads.dbias.scalar_type(), torch::kBFloat16);
  // A transposed (non-contiguous) input.
  Inputs strided = make_inputs({512, 512}, torch::kFloat, true, torch::kCUDA, 403);
  strided.x = strided.x.t();
  ASSERT_FALSE(strided.x.is_contiguous());
  expect_fused_matches_reference(strided, 1e-5, NormActivation::GELU, false, "transposed input");
}

TEST(LayerNormCuda, DeterministicEmptyAndFallbacks) {
  SKIP_WITHOUT_CUDA_KERNELS();
  const BackendGuard fused(KernelBackend::Fused);
  const Inputs in = make_inputs({333, 1024}, torch::kBFloat16, true, torch::kCUDA, 501);
  const torch::Tensor dy = torch::randn({333, 1024}, in.x.options());
  const NormRun first =
      run_with_grads(&layer_norm_activation, in.x, in.weight, in.bias, dy, 1e-5, NormActivation::GELU, false);
  const NormRun second =
      run_with_grads(&layer_norm_activation, in.x, in.weight, in.bias, dy, 1e-5, NormActivation::GELU, false);
  EXPECT_TRUE(first.y.equal(second.y));
  EXPECT_TRUE(first.grads.dx.equal(second.grads.dx));
  EXPECT_TRUE(first.grads.dweight.equal(second.grads.dweight));
  EXPECT_TRUE(first.grads.dbias.equal(second.grads.dbias));

  // No rows: empty output, zero parameter gradients.
  const Inputs none = make_inputs({0, 64}, torch::kFloat, true, torch::kCUDA, 502);
  const NormRun no_rows = run_with_grads(&layer_norm_activation, none.x, none.weight, none.bias,
                                         torch::randn({0, 64}, none.x.options()), 1e-5, NormActivation::None, false);
  EXPECT_EQ(no_rows.y.sizes(), torch::IntArrayRef({0, 64}));
  EXPECT_TRUE(no_rows.grads.dweight.equal(torch::zeros_like(none.weight)));
  EXPECT_TRUE(no_rows.grads.dbias.equal(torch::zeros_like(none.bias)));

  // Rows wider than the kernel takes, and the reference backend, run the reference.
  const Inputs wide = make_inputs({3, 20000}, torch::kFloat, true, torch::kCUDA, 503);
  EXPECT_TRUE(layer_norm_activation(wide.x, wide.weight, wide.bias, 1e-5)
                  .equal(layer_norm_activation_reference(wide.x, wide.weight, wide.bias, 1e-5)));
  {
    const BackendGuard reference(KernelBackend::Reference);
    EXPECT_TRUE(layer_norm_activation(in.x, in.weight, in.bias, 1e-5, NormActivation::SiLU)
                    .equal(layer_norm_activation_reference(in.x, in.weight, in.bias, 1e-5, NormActivation::SiLU)));
  }

  // float64 is not a kernel dtype; parameters on another device are refused.
  EXPECT_THROW(layer_norm_activation(in.x.to(torch::kDouble), in.weight, in.bias, 1e-5), std::invalid_argument);
  EXPECT_THROW(layer_norm_activation(in.x, in.weight.cpu(), in.bias, 1e-5), std::invalid_argument);
}

}  // namespace
}  // namespace moetrain::kernels
