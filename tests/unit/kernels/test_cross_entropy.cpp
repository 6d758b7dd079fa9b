// kernels::softmax_cross_entropy: the ATen reference against torch's own cross
// entropy and a hand formula in double (CPU), and the fused CUDA kernel against
// the reference, its gradients, and its memory use (skipped without a device).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cross_entropy.h"
#include "kernels/dispatch.h"

#ifdef MOETRAIN_CUDA_KERNELS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace moetrain::kernels {
namespace {

namespace F = torch::nn::functional;

struct Batch {
  torch::Tensor logits;   // [N, V] in the requested dtype
  torch::Tensor targets;  // [N] int64; masked rows hold ids outside [0, V)
  torch::Tensor mask;     // [N] bool; row 0 counts, the last row (N > 1) does not
};

// Fresh logits randn * 3 (not zeros: a wrong max or sum shows), random
// targets, about one row in five masked out with padding ids -100 or V + 7.
Batch make_batch(int64_t rows, int64_t vocab, torch::Device device, torch::ScalarType dtype, uint64_t seed) {
  torch::manual_seed(seed);
  const auto opts = torch::TensorOptions().device(device);
  Batch b;
  b.logits = (torch::randn({rows, vocab}, opts.dtype(torch::kFloat32)) * 3.0).to(dtype);
  b.targets = torch::randint(0, vocab, {rows}, opts.dtype(torch::kInt64));
  b.mask = torch::rand({rows}, opts.dtype(torch::kFloat32)) > 0.2;
  if (rows > 0) b.mask.index_put_({0}, true);
  if (rows > 1) b.mask.index_put_({rows - 1}, false);
  const auto index = torch::arange(rows, opts.dtype(torch::kInt64));
  const auto padding =
      torch::where(index.remainder(2) == 0, torch::full_like(index, -100), torch::full_like(index, vocab + 7));
  b.targets = torch::where(b.mask, b.targets, padding);
  return b;
}

double rel_diff(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

double max_abs(const torch::Tensor& t) { return t.numel() == 0 ? 0.0 : t.abs().max().item<double>(); }

// The loss written out by hand in double, one row at a time.
double hand_loss(const Batch& b, double ls) {
  const auto z = b.logits.to(torch::kFloat64).contiguous();
  const auto za = z.accessor<double, 2>();
  const auto ta = b.targets.accessor<int64_t, 1>();
  const auto ma = b.mask.accessor<bool, 1>();
  const int64_t vocab = z.size(1);
  double total = 0.0;
  for (int64_t i = 0; i < z.size(0); ++i) {
    if (!ma[i]) continue;
    double mx = -std::numeric_limits<double>::infinity();
    for (int64_t j = 0; j < vocab; ++j) mx = std::max(mx, za[i][j]);
    double sum_exp = 0.0, sum = 0.0;
    for (int64_t j = 0; j < vocab; ++j) {
      sum_exp += std::exp(za[i][j] - mx);
      sum += za[i][j];
    }
    const double lse = mx + std::log(sum_exp);
    total += (1.0 - ls) * (lse - za[i][ta[i]]) + ls * (lse - sum / static_cast<double>(vocab));
  }
  return total;
}

// ---------------------------------------------------------------- CPU ----

class CrossEntropyReference : public ::testing::TestWithParam<double> {};

TEST_P(CrossEntropyReference, MatchesTorchCrossEntropy) {
  const double ls = GetParam();
  const auto b = make_batch(37, 101, torch::kCPU, torch::kFloat32, 1);
  const auto r = softmax_cross_entropy_reference(b.logits, b.targets, b.mask, ls);
  const auto rows = b.mask.nonzero().squeeze(1);
  const auto expected = F::cross_entropy(b.logits.index_select(0, rows), b.targets.index_select(0, rows),
                                         F::CrossEntropyFuncOptions().reduction(torch::kSum).label_smoothing(ls));
  EXPECT_EQ(r.num_tokens, rows.size(0));
  EXPECT_EQ(r.loss_sum.scalar_type(), torch::kFloat32);
  EXPECT_EQ(r.loss_sum.dim(), 0);
  EXPECT_LT(rel_diff(r.loss_sum.item<double>(), expected.item<double>()), 1e-5);
}

TEST_P(CrossEntropyReference, MatchesHandFormulaInDouble) {
  const double ls = GetParam();
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    const auto b = make_batch(29, 257, torch::kCPU, dtype, 2);
    const auto r = softmax_cross_entropy_reference(b.logits, b.targets, b.mask, ls);
    EXPECT_LT(rel_diff(r.loss_sum.item<double>(), hand_loss(b, ls)), 1e-5) << c10::toString(dtype);
  }
}

TEST_P(CrossEntropyReference, MaskedRowsAreIgnored) {
  const double ls = GetParam();
  const auto b = make_batch(40, 64, torch::kCPU, torch::kFloat32, 3);
  const auto r = softmax_cross_entropy_reference(b.logits, b.targets, b.mask, ls);
  // Other logits and other (wild) targets on the masked rows change nothing.
  const auto masked = b.mask.logical_not().unsqueeze(1);
  const auto logits2 = torch::where(masked, torch::full_like(b.logits, 1e4), b.logits).requires_grad_();
  const auto targets2 = torch::where(b.mask, b.targets, torch::full_like(b.targets, 1 << 30));
  const auto r2 = softmax_cross_entropy_reference(logits2, targets2, b.mask, ls);
  EXPECT_EQ(r2.num_tokens, r.num_tokens);
  EXPECT_EQ(r2.loss_sum.item<float>(), r.loss_sum.item<float>());
  r2.loss_sum.backward();
  EXPECT_EQ(max_abs(logits2.grad().index_select(0, b.mask.logical_not().nonzero().squeeze(1))), 0.0);
}

// The reference's autograd against autograd of the hand formula in double,
// and against the closed form the fused backward writes:
//   g_ij = s * mask_i * (softmax_ij - (1 - ls) [j == t_i] - ls / V).
TEST_P(CrossEntropyReference, GradientsMatchHandFormula) {
  const double ls = GetParam();
  const double scale = 0.37;
  const auto b = make_batch(23, 97, torch::kCPU, torch::kFloat32, 4);
  const auto logits = b.logits.detach().requires_grad_();
  (softmax_cross_entropy_reference(logits, b.targets, b.mask, ls).loss_sum * scale).backward();

  const auto z = b.logits.to(torch::kFloat64).detach().requires_grad_();
  const auto safe_targets = torch::where(b.mask, b.targets, torch::zeros_like(b.targets));
  const auto lse = torch::logsumexp(z, -1);
  const auto z_target = z.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1);
  const auto per_row = (1.0 - ls) * (lse - z_target) + ls * (lse - z.mean(-1));
  ((per_row * b.mask.to(torch::kFloat64)).sum() * scale).backward();
  EXPECT_LT(max_abs(logits.grad().to(torch::kFloat64) - z.grad()), 1e-6);

  const int64_t vocab = b.logits.size(1);
  const auto onehot = torch::one_hot(safe_targets, vocab).to(torch::kFloat64);
  const auto closed =
      scale * b.mask.to(torch::kFloat64).unsqueeze(1) *
      (torch::softmax(b.logits.to(torch::kFloat64), -1) - (1.0 - ls) * onehot - ls / static_cast<double>(vocab));
  EXPECT_LT(max_abs(logits.grad().to(torch::kFloat64) - closed), 1e-6);
}

TEST_P(CrossEntropyReference, DispatchOnCpuIsTheReference) {
  const double ls = GetParam();
  const auto b = make_batch(31, 50, torch::kCPU, torch::kBFloat16, 5);
  const auto a = b.logits.detach().requires_grad_();
  const auto c = b.logits.detach().requires_grad_();
  const auto r1 = softmax_cross_entropy(a, b.targets, b.mask, ls);
  const auto r2 = softmax_cross_entropy_reference(c, b.targets, b.mask, ls);
  EXPECT_TRUE(torch::equal(r1.loss_sum, r2.loss_sum));
  EXPECT_EQ(r1.num_tokens, r2.num_tokens);
  r1.loss_sum.backward();
  r2.loss_sum.backward();
  EXPECT_TRUE(torch::equal(a.grad(), c.grad()));
}

INSTANTIATE_TEST_SUITE_P(LabelSmoothing, CrossEntropyReference, ::testing::Values(0.0, 0.1),
                         [](const ::testing::TestParamInfo<double>& info) {
                           return info.param == 0.0 ? std::string("ls0") : std::string("ls0p1");
                         });

TEST(CrossEntropyArguments, BadShapesThrow) {
  const auto logits = torch::randn({4, 10});
  const auto targets = torch::zeros({4}, torch::kInt64);
  const auto mask = torch::ones({4}, torch::kBool);
  EXPECT_THROW(softmax_cross_entropy(torch::randn({10}), targets, mask), std::invalid_argument);
  EXPECT_THROW(softmax_cross_entropy(torch::randn({2, 2, 10}), targets, mask), std::invalid_argument);
  EXPECT_THROW(softmax_cross_entropy(logits, torch::zeros({5}, torch::kInt64), mask), std::invalid_argument);
  EXPECT_THROW(softmax_cross_entropy(logits, torch::zeros({4, 1}, torch::kInt64), mask), std::invalid_argument);
  EXPECT_THROW(softmax_cross_entropy(logits, targets, torch::ones({3}, torch::kBool)), std::invalid_argument);
  EXPECT_NO_THROW(softmax_cross_entropy(logits, targets, mask));
}

TEST(CrossEntropyArguments, LabelSmoothingOutsideRangeThrows) {
  const auto logits = torch::randn({4, 10});
  const auto targets = torch::zeros({4}, torch::kInt64);
  const auto mask = torch::ones({4}, torch::kBool);
  for (const double ls : {-0.1, 1.0, 1.5, std::numeric_limits<double>::quiet_NaN()}) {
    EXPECT_THROW(softmax_cross_entropy(logits, targets, mask, ls), std::invalid_argument) << ls;
  }
  EXPECT_NO_THROW(softmax_cross_entropy(logits, targets, mask, 0.0));
  EXPECT_NO_THROW(softmax_cross_entropy(logits, targets, mask, 0.999));
}

// --------------------------------------------------------------- CUDA ----

// Runs the CUDA tests with the fused backend, whatever MOETRAIN_KERNELS says.
class FusedCrossEntropyBase {
 protected:
  static bool skip_reason(std::string* why) {
    if (!torch::cuda::is_available()) {
      *why = "no CUDA device: the fused cross-entropy kernel cannot run here";
      return true;
    }
    if (!cuda_kernels_compiled()) {
      *why = "CUDA kernels not compiled (MOETRAIN_WITH_CUDA_KERNELS=OFF)";
      return true;
    }
    return false;
  }
  void use_fused() {
    saved_ = kernel_backend();
    set_kernel_backend(KernelBackend::Fused);
  }
  void restore() { set_kernel_backend(saved_); }

 private:
  KernelBackend saved_ = KernelBackend::Fused;
};

#define MOETRAIN_SKIP_WITHOUT_FUSED_CE()        \
  do {                                          \
    std::string why;                            \
    if (skip_reason(&why)) GTEST_SKIP() << why; \
  } while (0)

class FusedCrossEntropyCase : public FusedCrossEntropyBase, public ::testing::Test {
 protected:
  void SetUp() override { use_fused(); }
  void TearDown() override { restore(); }
};

struct Comparison {
  double loss_rel = 0.0;     // |fused - reference| / |reference| of loss_sum
  double grad_err = 0.0;     // max |fused - reference| over the gradient, in fp32
  double grad_max = 0.0;     // max |reference gradient|
  double masked_grad = 0.0;  // max |fused gradient| over rows that do not count
  int64_t tokens = 0, ref_tokens = 0;
};

// Fused (through the dispatch point) and reference on the same logits, with
// an upstream gradient of `scale` on loss_sum.
Comparison compare(const torch::Tensor& logits, const torch::Tensor& targets, const torch::Tensor& mask, double ls,
                   double scale = 0.37) {
  const auto fused_in = logits.detach().requires_grad_();
  const auto ref_in = logits.detach().requires_grad_();
  Comparison c;
  {
    const auto fused = softmax_cross_entropy(fused_in, targets, mask, ls);
    const auto ref = softmax_cross_entropy_reference(ref_in, targets, mask, ls);
    EXPECT_EQ(fused.loss_sum.scalar_type(), torch::kFloat32);
    EXPECT_EQ(fused.loss_sum.dim(), 0);
    c.loss_rel = rel_diff(fused.loss_sum.item<double>(), ref.loss_sum.item<double>());
    c.tokens = fused.num_tokens;
    c.ref_tokens = ref.num_tokens;
    (fused.loss_sum * scale).backward();
    (ref.loss_sum * scale).backward();
  }
  const auto g = fused_in.grad();
  EXPECT_EQ(g.scalar_type(), logits.scalar_type());
  EXPECT_EQ(g.sizes(), logits.sizes());
  const auto g32 = g.to(torch::kFloat32);
  const auto ref32 = ref_in.grad().to(torch::kFloat32);
  c.grad_err = max_abs(g32 - ref32);
  c.grad_max = max_abs(ref32);
  const auto masked_rows = mask.logical_not().nonzero().squeeze(1);
  c.masked_grad = max_abs(g32.index_select(0, masked_rows));
  return c;
}

// Loss tolerance (relative) and gradient tolerance (times max |g|) per dtype:
// the reference upcasts the same low-precision logits exactly, so the losses
// differ only by fp32 rounding; the gradients by one rounding to the dtype.
double loss_tolerance(torch::ScalarType dtype) { return dtype == torch::kFloat32 ? 1e-5 : 1e-4; }
double grad_tolerance(torch::ScalarType dtype) {
  if (dtype == torch::kBFloat16) return 1e-2;
  if (dtype == torch::kFloat16) return 2e-3;
  return 1e-5;
}

using SizeCase = std::tuple<torch::ScalarType, int64_t, int64_t, double>;  // dtype, V, N, label smoothing

class FusedCrossEntropySizes : public FusedCrossEntropyBase, public ::testing::TestWithParam<SizeCase> {
 protected:
  void SetUp() override { use_fused(); }
  void TearDown() override { restore(); }
};

TEST_P(FusedCrossEntropySizes, MatchesReference) {
  MOETRAIN_SKIP_WITHOUT_FUSED_CE();
  const auto [dtype, vocab, rows, ls] = GetParam();
  const auto b = make_batch(rows, vocab, torch::kCUDA, dtype, 1000 + static_cast<uint64_t>(vocab + rows));
  const auto c = compare(b.logits, b.targets, b.mask, ls);
  EXPECT_EQ(c.tokens, c.ref_tokens);
  EXPECT_LE(c.loss_rel, loss_tolerance(dtype));
  EXPECT_LE(c.grad_err, grad_tolerance(dtype) * c.grad_max) << "max |g| " << c.grad_max;
  EXPECT_EQ(c.masked_grad, 0.0);
}

std::string dtype_label(torch::ScalarType dtype) {
  if (dtype == torch::kBFloat16) return "bf16";
  if (dtype == torch::kFloat16) return "fp16";
  return "fp32";
}

INSTANTIATE_TEST_SUITE_P(Grid, FusedCrossEntropySizes,
                         ::testing::Combine(::testing::Values(torch::kFloat32, torch::kBFloat16, torch::kFloat16),
                                            ::testing::Values<int64_t>(1000, 32003, 131072),
                                            ::testing::Values<int64_t>(1, 257, 4096), ::testing::Values(0.0, 0.1)),
                         [](const ::testing::TestParamInfo<SizeCase>& info) {
                           return dtype_label(std::get<0>(info.param)) + "_V" +
                                  std::to_string(std::get<1>(info.param)) + "_N" +
                                  std::to_string(std::get<2>(info.param)) +
                                  (std::get<3>(info.param) == 0.0 ? "_ls0" : "_ls0p1");
                         });

TEST_F(FusedCrossEntropyCase, DispatchPointUsesTheKernel) {
  MOETRAIN_SKIP_WITHOUT_FUSED_CE();
  const auto b = make_batch(8, 300, torch::kCUDA, torch::kBFloat16, 7);
  const auto logits = b.logits.detach().requires_grad_();
  const auto r = softmax_cross_entropy(logits, b.targets, b.mask, 0.0);
  ASSERT_TRUE(r.loss_sum.grad_fn());
  bool fused_node = false;
  for (const auto& edge : r.loss_sum.grad_fn()->next_edges()) {
    if (edge.function && edge.function->name().find("FusedSoftmaxCrossEntropy") != std::string::npos) {
      fused_node = true;
    }
  }
  EXPECT_TRUE(fused_node) << r.loss_sum.grad_fn()->name();
}

// A base pointer 2 bytes off a 16-byte boundary (bf16 view at storage offset
// 1): the forward splits every row itself; the backward, whose fresh gradient
// is aligned, takes the scalar path. A transposed (non-contiguous) input too.
TEST_F(FusedCrossEntropyCase, MisalignedAndNonContiguousLogits) {
  MOETRAIN_SKIP_WITHOUT_FUSED_CE();
  for (const double ls : {0.0, 0.1}) {
    const auto b = make_batch(64, 4096, torch::kCUDA, torch::kBFloat16, 8);
    const auto storage = torch::empty({64 * 4096 + 1}, b.logits.options());
    storage.narrow(0, 1, 64 * 4096).copy_(b.logits.reshape({-1}));
    const auto shifted = storage.narrow(0, 1, 64 * 4096).view({64, 4096});
    ASSERT_NE(reinterpret_cast<uintptr_t>(shifted.data_ptr()) % 16, 0u);
    auto c = compare(shifted, b.targets, b.mask, ls);
    EXPECT_LE(c.loss_rel, 1e-4);
    EXPECT_LE(c.grad_err, 1e-2 * c.grad_max);
    EXPECT_EQ(c.masked_grad, 0.0);

    const auto transposed = b.logits.t().contiguous().t();
    ASSERT_FALSE(transposed.is_contiguous());
    c = compare(transposed, b.targets, b.mask, ls);
    EXPECT_LE(c.loss_rel, 1e-4);
    EXPECT_LE(c.grad_err, 1e-2 * c.grad_max);
  }
}

// Padded vocabulary columns at -inf: they get probability 0 and no NaN.
TEST_F(FusedCrossEntropyCase, MinusInfinityLogits) {
  MOETRAIN_SKIP_WITHOUT_FUSED_CE();
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    auto b = make_batch(33, 1031, torch::kCUDA, dtype, 9);
    b.logits.narrow(1, 1000, 31).fill_(-std::numeric_limits<float>::infinity());
    b.targets = torch::where(b.mask, b.targets.remainder(1000), b.targets);
    const auto c = compare(b.logits, b.targets, b.mask, 0.0);
    EXPECT_TRUE(std::isfinite(c.grad_max));
    EXPECT_LE(c.loss_rel, loss_tolerance(dtype));
    EXPECT_LE(c.grad_err, grad_tolerance(dtype) * c.grad_max);
  }
}

TEST_F(FusedCrossEntropyCase, EmptyAndFullyMaskedBatches) {
  MOETRAIN_SKIP_WITHOUT_FUSED_CE();
  {
    const auto logits = torch::randn({0, 500}, torch::kCUDA).requires_grad_();
    const auto r =
        softmax_cross_entropy(logits, torch::zeros({0}, torch::TensorOptions(torch::kCUDA).dtype(torch::kInt64)),
                              torch::zeros({0}, torch::TensorOptions(torch::kCUDA).dtype(torch::kBool)), 0.1);
    EXPECT_EQ(r.num_tokens, 0);
    EXPECT_EQ(r.loss_sum.item<float>(), 0.0f);
    r.loss_sum.backward();
    EXPECT_EQ(logits.grad().sizes(), logits.sizes());
  }
  {
    const auto b = make_batch(16, 500, torch::kCUDA, torch::kFloat16, 10);
    const auto logits = b.logits.detach().requires_grad_();
    const auto mask = torch::zeros_like(b.mask);
    const auto targets = torch::full_like(b.targets, -1);
    const auto r = softmax_cross_entropy(logits, targets, mask, 0.1);
    EXPECT_EQ(r.num_tokens, 0);
    EXPECT_EQ(r.loss_sum.item<float>(), 0.0f);
    r.loss_sum.backward();
    EXPECT_EQ(max_abs(logits.grad().to(torch::kFloat32)), 0.0);
  }
}

// A counted token with a target outside [0, V) is reported, the device stays
// usable, and evaluation without autograd gives the same loss.
TEST_F(FusedCrossEntropyCase, BadTargetThrowsAndNoGradWorks) {
  MOETRAIN_SKIP_WITHOUT_FUSED_CE();
  const auto b = make_batch(12, 700, torch::kCUDA, torch::kFloat32, 11);
  for (const int64_t bad : {int64_t{700}, int64_t{-1}}) {
    auto targets = b.targets.clone();
    targets.index_put_({0}, bad);  // row 0 always counts
    EXPECT_THROW(softmax_cross_entropy(b.logits, targets, b.mask, 0.0), std::invalid_argument) << bad;
  }
  torch::cuda::synchronize();
  const auto ref = softmax_cross_entropy_reference(b.logits, b.targets, b.mask, 0.1);
  torch::NoGradGuard no_grad;
  const auto r = softmax_cross_entropy(b.logits, b.targets, b.mask, 0.1);
  EXPECT_EQ(r.num_tokens, ref.num_tokens);
  EXPECT_LE(rel_diff(r.loss_sum.item<double>(), ref.loss_sum.item<double>()), 1e-5);
}

// Forward + backward at N = 4096, V = 131072 in bf16 allocates nothing of
// [N, V] fp32: the peak stays below 2.5x the logits (logits + their gradient
// is 2x; one fp32 copy would add 2x more). The reference, which upcasts,
// goes over the same bound, so the measurement can tell.
TEST_F(FusedCrossEntropyCase, NoFp32CopyOfTheLogits) {
  MOETRAIN_SKIP_WITHOUT_FUSED_CE();
#ifdef MOETRAIN_CUDA_KERNELS
  namespace alloc = c10::cuda::CUDACachingAllocator;
  const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  const auto b = make_batch(4096, 131072, torch::kCUDA, torch::kBFloat16, 12);
  const double logits_bytes = static_cast<double>(b.logits.numel() * b.logits.element_size());
  const auto device = b.logits.device().index();

  const auto peak_of = [&](bool fused) {
    const auto logits = b.logits.detach().requires_grad_();
    torch::cuda::synchronize();
    alloc::resetPeakStats(device);
    {
      const auto r = fused ? softmax_cross_entropy(logits, b.targets, b.mask, 0.1)
                           : softmax_cross_entropy_reference(logits, b.targets, b.mask, 0.1);
      r.loss_sum.backward();
    }
    torch::cuda::synchronize();
    EXPECT_EQ(logits.grad().scalar_type(), torch::kBFloat16);
    return static_cast<double>(alloc::getDeviceStats(device).allocated_bytes[aggregate].peak);
  };
  const double fused_peak = peak_of(true);
  EXPECT_LT(fused_peak, 2.5 * logits_bytes) << "peak " << fused_peak / logits_bytes << "x the logits";
  const double reference_peak = peak_of(false);
  EXPECT_GT(reference_peak, 2.5 * logits_bytes) << "peak " << reference_peak / logits_bytes << "x the logits";
#endif
}

}  // namespace
}  // namespace moetrain::kernels
