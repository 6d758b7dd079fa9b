// permute_rows / unpermute_rows: the ATen references against naive loops and
// hand-written gradients, the dispatch point and argument checks on the CPU,
// and the fused CUDA kernels against the references on a GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cstdint>
#include <stdexcept>
#include <tuple>
#include <vector>

#include "kernels/dispatch.h"
#include "kernels/moe_permute.h"
#include "tests/unit/kernels/kernel_test_support.h"

namespace moetrain::kernels {
namespace {

// Rows in expert order, as models/moe_layer.cpp lays them out: every token
// picks top_k distinct experts, each assignment is kept with probability
// `keep`, and kept (token, choice) pairs are stably sorted by expert.
// Tokens [0, 8) keep none and [8, 16) keep only their first choice, so
// tokens with zero and with one row are always present.
torch::Tensor expert_order_token_index(int64_t num_tokens, int64_t top_k, int64_t num_experts, double keep,
                                       const torch::Device& device = torch::kCPU) {
  const torch::Tensor experts = std::get<1>(torch::randn({num_tokens, num_experts}).topk(top_k, -1));
  torch::Tensor kept = torch::rand({num_tokens, top_k}) < keep;
  kept.narrow(0, 0, 8).fill_(false);
  kept.narrow(0, 8, 8).fill_(false);
  kept.narrow(0, 8, 8).select(1, 0).fill_(true);
  const torch::Tensor token = torch::arange(num_tokens).unsqueeze(1).expand({num_tokens, top_k}).reshape({-1});
  const torch::Tensor selected = kept.reshape({-1}).nonzero().squeeze(1);
  const torch::Tensor expert = experts.reshape({-1}).index_select(0, selected);
  const torch::Tensor order = std::get<1>(expert.sort(/*stable=*/true, /*dim=*/0, /*descending=*/false));
  return token.index_select(0, selected.index_select(0, order)).to(device);
}

// A small index with repeated tokens and tokens 4 and 5 receiving no row.
torch::Tensor small_token_index() { return torch::tensor({3, 0, 3, 6, 1, 2, 0, 3}, torch::kLong); }

TEST(PermuteRowsReference, CopiesEachRowOfItsToken) {
  torch::manual_seed(1);
  const torch::Tensor x = torch::randn({7, 5});
  const torch::Tensor index = small_token_index();
  const torch::Tensor out = permute_rows_reference(x, index);
  ASSERT_EQ(out.sizes(), torch::IntArrayRef({8, 5}));
  const auto xa = x.accessor<float, 2>();
  const auto oa = out.accessor<float, 2>();
  const auto ia = index.accessor<int64_t, 1>();
  for (int64_t r = 0; r < 8; ++r) {
    for (int64_t d = 0; d < 5; ++d) EXPECT_EQ(oa[r][d], xa[ia[r]][d]) << "row " << r << " col " << d;
  }
}

TEST(UnpermuteRowsReference, SumsGateWeightedRowsPerToken) {
  torch::manual_seed(2);
  const torch::Tensor index = small_token_index();
  const int64_t n = 7, m = index.size(0), dim = 6;
  for (const auto dtype : {torch::kFloat, torch::kBFloat16, torch::kDouble}) {
    const torch::Tensor eo = torch::randn({m, dim}).to(dtype);
    const torch::Tensor gates = torch::rand({m});
    const torch::Tensor y = unpermute_rows_reference(eo, gates, index, n);
    ASSERT_EQ(y.sizes(), torch::IntArrayRef({n, dim}));
    ASSERT_EQ(y.scalar_type(), dtype);
    const torch::Tensor eod = eo.to(torch::kDouble);
    const auto ea = eod.accessor<double, 2>();
    const auto ga = gates.accessor<float, 1>();
    const auto ia = index.accessor<int64_t, 1>();
    const torch::Tensor yd = y.to(torch::kDouble);
    const auto ya = yd.accessor<double, 2>();
    const double tol = dtype == torch::kBFloat16 ? 1e-2 : 1e-6;
    for (int64_t t = 0; t < n; ++t) {
      for (int64_t d = 0; d < dim; ++d) {
        double expected = 0.0;
        for (int64_t r = 0; r < m; ++r) {
          if (ia[r] == t) expected += static_cast<double>(ga[r]) * ea[r][d];
        }
        EXPECT_NEAR(ya[t][d], expected, tol * (1.0 + std::abs(expected)))
            << c10::toString(dtype) << " token " << t << " col " << d;
      }
    }
    // Tokens 4 and 5 received no row.
    EXPECT_EQ(y[4].abs().sum().item<double>(), 0.0);
    EXPECT_EQ(y[5].abs().sum().item<double>(), 0.0);
  }
}

TEST(PermuteRowsReference, GradientSumsTheRowsOfEachToken) {
  torch::manual_seed(3);
  const torch::Tensor index = small_token_index();
  const torch::Tensor x = torch::randn({7, 4}, torch::kDouble).requires_grad_();
  const torch::Tensor w = torch::randn({8, 4}, torch::kDouble);
  (permute_rows_reference(x, index) * w).sum().backward();
  torch::Tensor expected = torch::zeros({7, 4}, torch::kDouble);
  for (int64_t r = 0; r < 8; ++r) expected[index[r].item<int64_t>()] += w[r];
  EXPECT_TRUE(torch::allclose(x.grad(), expected, 1e-12, 1e-12));
}

TEST(UnpermuteRowsReference, GradientsOfExpertOutputAndGates) {
  torch::manual_seed(4);
  const torch::Tensor index = small_token_index();
  const int64_t n = 7, m = index.size(0), dim = 5;
  const torch::Tensor eo = torch::randn({m, dim}, torch::kDouble).requires_grad_();
  const torch::Tensor gates = torch::rand({m}).requires_grad_();
  const torch::Tensor w = torch::randn({n, dim}, torch::kDouble);
  (unpermute_rows_reference(eo, gates, index, n) * w).sum().backward();
  for (int64_t r = 0; r < m; ++r) {
    const torch::Tensor wt = w[index[r].item<int64_t>()];
    const torch::Tensor expected_eo = gates[r].to(torch::kDouble).detach() * wt;
    EXPECT_TRUE(torch::allclose(eo.grad()[r], expected_eo, 1e-6, 1e-6)) << "row " << r;
    const double expected_gate = (eo[r].detach() * wt).sum().item<double>();
    EXPECT_NEAR(gates.grad()[r].item<double>(), expected_gate, 1e-5 * (1.0 + std::abs(expected_gate))) << "row " << r;
  }
}

TEST(MoePermuteDispatch, CpuUsesTheReference) {
  torch::manual_seed(5);
  const torch::Tensor index = expert_order_token_index(64, 2, 8, 0.9);
  const int64_t m = index.size(0);
  const torch::Tensor x = torch::randn({64, 16}).requires_grad_();
  const torch::Tensor x_ref = x.detach().clone().requires_grad_();
  const torch::Tensor eo = torch::randn({m, 16}).requires_grad_();
  const torch::Tensor eo_ref = eo.detach().clone().requires_grad_();
  const torch::Tensor gates = torch::rand({m}).requires_grad_();
  const torch::Tensor gates_ref = gates.detach().clone().requires_grad_();

  const torch::Tensor p = permute_rows(x, index);
  const torch::Tensor p_ref = permute_rows_reference(x_ref, index);
  EXPECT_TRUE(p.equal(p_ref));
  const torch::Tensor y = unpermute_rows(eo, gates, index, 64);
  const torch::Tensor y_ref = unpermute_rows_reference(eo_ref, gates_ref, index, 64);
  EXPECT_TRUE(y.equal(y_ref));

  const torch::Tensor w = torch::randn({m, 16});
  (p * w).sum().backward();
  (p_ref * w).sum().backward();
  EXPECT_TRUE(x.grad().equal(x_ref.grad()));
  const torch::Tensor v = torch::randn({64, 16});
  (y * v).sum().backward();
  (y_ref * v).sum().backward();
  EXPECT_TRUE(eo.grad().equal(eo_ref.grad()));
  EXPECT_TRUE(gates.grad().equal(gates_ref.grad()));
}

TEST(MoePermuteDispatch, NoRowsGivesEmptyAndZeroOutputs) {
  const torch::Tensor index = torch::empty({0}, torch::kLong);
  EXPECT_EQ(permute_rows(torch::randn({5, 3}), index).sizes(), torch::IntArrayRef({0, 3}));
  const torch::Tensor y = unpermute_rows(torch::empty({0, 3}), torch::empty({0}), index, 5);
  EXPECT_TRUE(y.equal(torch::zeros({5, 3})));
}

TEST(MoePermuteDispatch, BadArgumentsThrow) {
  const torch::Tensor x = torch::randn({5, 3});
  const torch::Tensor index = torch::tensor({0, 4, 2}, torch::kLong);
  const torch::Tensor eo = torch::randn({3, 3});
  const torch::Tensor gates = torch::rand({3});
  EXPECT_THROW(permute_rows(torch::randn({5}), index), std::invalid_argument);
  EXPECT_THROW(permute_rows(x, index.to(torch::kInt)), std::invalid_argument);
  EXPECT_THROW(permute_rows(x, index.view({3, 1})), std::invalid_argument);
  EXPECT_THROW(permute_rows(torch::ones({5, 3}, torch::kLong), index), std::invalid_argument);
  EXPECT_THROW(unpermute_rows(torch::randn({3}), gates, index, 5), std::invalid_argument);
  EXPECT_THROW(unpermute_rows(torch::randn({4, 3}), gates, index, 5), std::invalid_argument);
  EXPECT_THROW(unpermute_rows(eo, torch::rand({4}), index, 5), std::invalid_argument);
  EXPECT_THROW(unpermute_rows(eo, gates.to(torch::kDouble), index, 5), std::invalid_argument);
  EXPECT_THROW(unpermute_rows(eo, gates, index.to(torch::kInt), 5), std::invalid_argument);
  EXPECT_THROW(unpermute_rows(eo, gates, index, -1), std::invalid_argument);
  EXPECT_THROW(permute_rows_reference(torch::randn({5}), index), std::invalid_argument);
  EXPECT_THROW(unpermute_rows_reference(eo, torch::rand({4}), index, 5), std::invalid_argument);
  try {
    permute_rows(torch::randn({5}), index);
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("permute_rows"), std::string::npos) << e.what();
  }
  // An index outside [0, N) is an error, not a silent read.
  EXPECT_ANY_THROW(permute_rows(x, torch::tensor({0, 5}, torch::kLong)));
  EXPECT_ANY_THROW(unpermute_rows(torch::randn({2, 3}), torch::rand({2}), torch::tensor({0, 5}, torch::kLong), 5));
}

// ---------------------------------------------------------------------------
// CUDA: the fused kernels against the references.

struct Tolerance {
  double rtol, atol;
};

Tolerance tolerance_for(torch::ScalarType dtype) {
  switch (dtype) {
    case torch::kBFloat16: return {1e-2, 1e-2};
    case torch::kHalf: return {1e-3, 1e-3};
    default: return {1e-5, 1e-5};
  }
}

::testing::AssertionResult close(const torch::Tensor& actual, const torch::Tensor& expected, Tolerance tol) {
  if (actual.sizes() != expected.sizes() || actual.scalar_type() != expected.scalar_type()) {
    return ::testing::AssertionFailure() << "shape/dtype " << actual.sizes() << " " << actual.scalar_type() << " vs "
                                         << expected.sizes() << " " << expected.scalar_type();
  }
  const torch::Tensor a = actual.to(torch::kDouble);
  const torch::Tensor e = expected.to(torch::kDouble);
  if (torch::allclose(a, e, tol.rtol, tol.atol)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max abs diff " << (a - e).abs().max().item<double>() << " (rtol " << tol.rtol
                                       << ", atol " << tol.atol << ")";
}

class MoePermuteCuda : public ::testing::TestWithParam<std::tuple<torch::ScalarType, int64_t>> {};

TEST_P(MoePermuteCuda, FusedMatchesReferenceForwardAndBackward) {
  SKIP_WITHOUT_CUDA_KERNELS();
  const BackendGuard fused(KernelBackend::Fused);
  const auto [dtype, dim] = GetParam();
  const Tolerance tol = tolerance_for(dtype);
  const torch::Device dev(torch::kCUDA, 0);
  torch::manual_seed(11);
  const int64_t n = 4096;
  const torch::Tensor index = expert_order_token_index(n, 2, 8, 0.9, dev);
  const int64_t m = index.size(0);
  const auto opts = torch::TensorOptions().dtype(dtype).device(dev);

  // permute: forward is an exact copy; backward sums each token's rows.
  const torch::Tensor x = torch::randn({n, dim}, opts).requires_grad_();
  const torch::Tensor x_ref = x.detach().clone().requires_grad_();
  const torch::Tensor p = permute_rows(x, index);
  const torch::Tensor p_ref = permute_rows_reference(x_ref, index);
  ASSERT_NE(p.grad_fn(), nullptr);
  EXPECT_TRUE(p.equal(p_ref));
  const torch::Tensor grad_p = torch::randn({m, dim}, opts);
  p.backward(grad_p);
  p_ref.backward(grad_p);
  EXPECT_TRUE(close(x.grad(), x_ref.grad(), tol)) << "permute backward";
  EXPECT_EQ(x.grad()[0].abs().sum().item<double>(), 0.0) << "token 0 has no row";

  // unpermute: forward and both gradients.
  const torch::Tensor eo = torch::randn({m, dim}, opts).requires_grad_();
  const torch::Tensor eo_ref = eo.detach().clone().requires_grad_();
  const torch::Tensor gates = torch::rand({m}, torch::TensorOptions().device(dev)).requires_grad_();
  const torch::Tensor gates_ref = gates.detach().clone().requires_grad_();
  const torch::Tensor y = unpermute_rows(eo, gates, index, n);
  const torch::Tensor y_ref = unpermute_rows_reference(eo_ref, gates_ref, index, n);
  ASSERT_NE(y.grad_fn(), nullptr);
  EXPECT_TRUE(close(y, y_ref, tol)) << "unpermute forward";
  EXPECT_EQ(y[0].abs().sum().item<double>(), 0.0) << "token 0 has no row";
  const torch::Tensor grad_y = torch::randn({n, dim}, opts);
  y.backward(grad_y);
  y_ref.backward(grad_y);
  EXPECT_TRUE(close(eo.grad(), eo_ref.grad(), tol)) << "unpermute grad expert_output";
  // fp32 dot products of `dim` terms on both sides, summed in different orders.
  EXPECT_TRUE(close(gates.grad(), gates_ref.grad(), {1e-4, 1e-3})) << "unpermute grad gates";

  // Deterministic: the same inputs give bit-identical results.
  EXPECT_TRUE(unpermute_rows(eo.detach(), gates.detach(), index, n).equal(y.detach()));
}

INSTANTIATE_TEST_SUITE_P(DtypesAndWidths, MoePermuteCuda,
                         ::testing::Combine(::testing::Values(torch::kFloat, torch::kBFloat16, torch::kHalf),
                                            ::testing::Values(int64_t{1024}, int64_t{1000})));

TEST(MoePermuteCudaEdges, MisalignedInputsAndGradientOfOneInput) {
  SKIP_WITHOUT_CUDA_KERNELS();
  const BackendGuard fused(KernelBackend::Fused);
  const torch::Device dev(torch::kCUDA, 0);
  torch::manual_seed(12);
  const int64_t n = 300, dim = 256;
  const torch::Tensor index = expert_order_token_index(n, 2, 8, 0.8, dev);
  const int64_t m = index.size(0);
  const auto opts = torch::TensorOptions().dtype(torch::kBFloat16).device(dev);
  // Contiguous views that start one element into their storage: not 16-byte aligned.
  const torch::Tensor x = torch::randn({n * dim + 1}, opts).narrow(0, 1, n * dim).view({n, dim});
  const torch::Tensor eo = torch::randn({m * dim + 1}, opts).narrow(0, 1, m * dim).view({m, dim});
  const torch::Tensor gates = torch::rand({m}, torch::TensorOptions().device(dev));
  EXPECT_TRUE(permute_rows(x, index).equal(permute_rows_reference(x, index)));
  EXPECT_TRUE(close(unpermute_rows(eo, gates, index, n), unpermute_rows_reference(eo, gates, index, n),
                    tolerance_for(torch::kBFloat16)));

  // Only the gates require a gradient.
  const torch::Tensor g = gates.clone().requires_grad_();
  const torch::Tensor g_ref = gates.clone().requires_grad_();
  const torch::Tensor grad_y = torch::randn({n, dim}, opts);
  unpermute_rows(eo, g, index, n).backward(grad_y);
  unpermute_rows_reference(eo, g_ref, index, n).backward(grad_y);
  EXPECT_TRUE(close(g.grad(), g_ref.grad(), {1e-4, 1e-3}));

  // No rows at all.
  const torch::Tensor none = torch::empty({0}, torch::TensorOptions().dtype(torch::kLong).device(dev));
  EXPECT_EQ(permute_rows(x, none).size(0), 0);
  EXPECT_TRUE(unpermute_rows(torch::empty({0, dim}, opts), torch::empty({0}, gates.options()), none, n)
                  .equal(torch::zeros({n, dim}, opts)));
}

}  // namespace
}  // namespace moetrain::kernels
