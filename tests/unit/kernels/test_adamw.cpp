// adamw_update: the ATen reference against a per-element double loop of
// torch.optim.AdamW, the dispatch point and argument checks on the CPU, and
// the fused multi-tensor CUDA kernel against the reference on a GPU.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <stdexcept>
#include <vector>

#include "kernels/adamw.h"
#include "kernels/dispatch.h"
#include "tests/unit/kernels/kernel_test_support.h"

#ifdef MOETRAIN_CUDA_KERNELS
#include <ATen/cuda/CUDAContext.h>

#include "kernels/cuda/adamw_launch.h"
#endif

namespace moetrain::kernels {
namespace {

AdamWHyperparameters hyperparameters(int64_t step, double weight_decay = 0.1) {
  AdamWHyperparameters h;
  h.lr = 1e-2;
  h.beta1 = 0.9;
  h.beta2 = 0.95;
  h.eps = 1e-8;
  h.weight_decay = weight_decay;
  h.step = step;
  return h;
}

// Flat fp32 buffers cut into groups at the given lengths, laid end to end
// (the last group also ends one element before the buffers do).
struct FlatState {
  torch::Tensor param, grad, exp_avg, exp_avg_sq;
  std::vector<int64_t> lengths;
  std::vector<bool> decay;

  FlatState(std::vector<int64_t> group_lengths, std::vector<bool> group_decay, const torch::Device& device,
            int64_t start = 0)
      : lengths(std::move(group_lengths)), decay(std::move(group_decay)) {
    int64_t total = start + 1;
    for (int64_t n : lengths) total += n;
    const auto opts = torch::TensorOptions().dtype(torch::kFloat).device(device);
    param = torch::randn({total}, opts);
    grad = torch::zeros({total}, opts);
    exp_avg = torch::zeros({total}, opts);
    exp_avg_sq = torch::zeros({total}, opts);
    begin = start;
  }

  std::vector<AdamWTensors> groups() const {
    std::vector<AdamWTensors> out;
    int64_t offset = begin;
    for (size_t i = 0; i < lengths.size(); ++i) {
      const int64_t n = lengths[i];
      out.push_back({param.narrow(0, offset, n), grad.narrow(0, offset, n), exp_avg.narrow(0, offset, n),
                     exp_avg_sq.narrow(0, offset, n), decay[i]});
      offset += n;
    }
    return out;
  }

  FlatState clone() const {
    FlatState c = *this;
    c.param = param.clone();
    c.grad = grad.clone();
    c.exp_avg = exp_avg.clone();
    c.exp_avg_sq = exp_avg_sq.clone();
    return c;
  }

  int64_t begin = 0;
};

// torch.optim.AdamW, element by element in double.
struct DoubleAdamW {
  std::vector<double> p, m, v;
  std::vector<bool> decay;

  void step(const std::vector<double>& g, const AdamWHyperparameters& h) {
    const double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(h.step));
    const double bc2 = 1.0 - std::pow(h.beta2, static_cast<double>(h.step));
    for (size_t i = 0; i < p.size(); ++i) {
      if (decay[i]) p[i] -= h.lr * h.weight_decay * p[i];
      m[i] = h.beta1 * m[i] + (1.0 - h.beta1) * g[i];
      v[i] = h.beta2 * v[i] + (1.0 - h.beta2) * g[i] * g[i];
      p[i] -= h.lr / bc1 * m[i] / (std::sqrt(v[i]) / std::sqrt(bc2) + h.eps);
    }
  }
};

std::vector<double> to_vector(const torch::Tensor& t) {
  const torch::Tensor d = t.to(torch::kCPU, torch::kDouble).contiguous();
  return std::vector<double>(d.data_ptr<double>(), d.data_ptr<double>() + d.numel());
}

// |actual - expected| <= atol + rtol * |expected| for every element (fp32
// rounding of a few operations; atol covers moments that nearly cancel).
void expect_near_all(const torch::Tensor& actual, const std::vector<double>& expected, double rtol, double atol,
                     const char* what) {
  const std::vector<double> a = to_vector(actual);
  ASSERT_EQ(a.size(), expected.size()) << what;
  int failures = 0;
  for (size_t i = 0; i < a.size() && failures < 5; ++i) {
    if (std::abs(a[i] - expected[i]) > atol + rtol * std::abs(expected[i])) {
      ADD_FAILURE() << what << "[" << i << "] = " << a[i] << ", expected " << expected[i];
      ++failures;
    }
  }
}

class AdamWReference : public ::testing::TestWithParam<double> {};

TEST_P(AdamWReference, MatchesPerElementDoubleLoopOverSteps) {
  const double weight_decay = GetParam();
  torch::manual_seed(21);
  FlatState s({1, 37, 4097, 1000}, {true, false, true, false}, torch::kCPU, /*start=*/3);
  const std::vector<AdamWTensors> views = s.groups();

  DoubleAdamW loop;
  for (size_t i = 0; i < views.size(); ++i) {
    const std::vector<double> p = to_vector(views[i].param);
    loop.p.insert(loop.p.end(), p.begin(), p.end());
    loop.decay.insert(loop.decay.end(), p.size(), s.decay[i]);
  }
  loop.m.assign(loop.p.size(), 0.0);
  loop.v.assign(loop.p.size(), 0.0);

  for (int64_t step = 1; step <= 4; ++step) {
    s.grad.copy_(torch::randn_like(s.grad));
    std::vector<double> g;
    for (const auto& view : views) {
      const std::vector<double> gi = to_vector(view.grad);
      g.insert(g.end(), gi.begin(), gi.end());
    }
    const AdamWHyperparameters h = hyperparameters(step, weight_decay);
    loop.step(g, h);
    std::vector<AdamWTensors> groups = s.groups();
    adamw_update_reference(groups, h);
  }
  const int64_t used = loop.p.size();
  expect_near_all(s.param.narrow(0, s.begin, used), loop.p, 1e-5, 1e-6, "param");
  expect_near_all(s.exp_avg.narrow(0, s.begin, used), loop.m, 1e-5, 1e-7, "exp_avg");
  expect_near_all(s.exp_avg_sq.narrow(0, s.begin, used), loop.v, 1e-5, 1e-7, "exp_avg_sq");
}

INSTANTIATE_TEST_SUITE_P(WithAndWithoutDecay, AdamWReference, ::testing::Values(0.1, 0.0));

// The reference per group is the same arithmetic as one pass of these ops
// over the whole buffer, decaying only the decay runs.
TEST(AdamWReference, MatchesWholeBufferOps) {
  torch::manual_seed(22);
  FlatState s({100, 7, 5000, 33}, {true, false, true, true}, torch::kCPU);
  FlatState whole = s.clone();
  const int64_t numel = s.param.numel();
  for (int64_t step = 1; step <= 3; ++step) {
    const torch::Tensor g = torch::randn({numel});
    s.grad.copy_(g);
    whole.grad.copy_(g);
    const AdamWHyperparameters h = hyperparameters(step);
    std::vector<AdamWTensors> groups = s.groups();
    // The element after the last group, as a group without decay.
    groups.push_back({s.param.narrow(0, numel - 1, 1), s.grad.narrow(0, numel - 1, 1),
                      s.exp_avg.narrow(0, numel - 1, 1), s.exp_avg_sq.narrow(0, numel - 1, 1), false});
    adamw_update_reference(groups, h);

    int64_t offset = 0;
    for (size_t i = 0; i < whole.lengths.size(); ++i) {
      if (whole.decay[i]) whole.param.narrow(0, offset, whole.lengths[i]).mul_(1.0 - h.lr * h.weight_decay);
      offset += whole.lengths[i];
    }
    whole.exp_avg.mul_(h.beta1).add_(whole.grad, 1.0 - h.beta1);
    whole.exp_avg_sq.mul_(h.beta2).addcmul_(whole.grad, whole.grad, 1.0 - h.beta2);
    const double bc1 = 1.0 - std::pow(h.beta1, static_cast<double>(step));
    const double bc2 = 1.0 - std::pow(h.beta2, static_cast<double>(step));
    const torch::Tensor denom = (whole.exp_avg_sq.sqrt() / std::sqrt(bc2)).add_(h.eps);
    whole.param.addcdiv_(whole.exp_avg, denom, -h.lr / bc1);
  }
  EXPECT_TRUE(torch::allclose(s.param, whole.param, 1e-6, 1e-7));
  EXPECT_TRUE(torch::allclose(s.exp_avg, whole.exp_avg, 1e-6, 1e-9));
  EXPECT_TRUE(torch::allclose(s.exp_avg_sq, whole.exp_avg_sq, 1e-6, 1e-9));
}

TEST(AdamWDispatch, CpuUsesTheReference) {
  torch::manual_seed(23);
  FlatState a({5, 4097, 64}, {true, false, true}, torch::kCPU);
  FlatState b = a.clone();
  for (int64_t step = 1; step <= 3; ++step) {
    const torch::Tensor g = torch::randn_like(a.grad);
    a.grad.copy_(g);
    b.grad.copy_(g);
    std::vector<AdamWTensors> ga = a.groups(), gb = b.groups();
    adamw_update(ga, hyperparameters(step));
    adamw_update_reference(gb, hyperparameters(step));
  }
  EXPECT_TRUE(a.param.equal(b.param));
  EXPECT_TRUE(a.exp_avg.equal(b.exp_avg));
  EXPECT_TRUE(a.exp_avg_sq.equal(b.exp_avg_sq));
}

TEST(AdamWDispatch, BadArgumentsThrow) {
  auto group = [](int64_t n) {
    return AdamWTensors{torch::zeros({n}), torch::zeros({n}), torch::zeros({n}), torch::zeros({n}), true};
  };
  std::vector<AdamWTensors> ok = {group(4)};
  EXPECT_THROW(adamw_update(ok, hyperparameters(0)), std::invalid_argument);

  std::vector<AdamWTensors> short_grad = {group(4)};
  short_grad[0].grad = torch::zeros({3});
  EXPECT_THROW(adamw_update(short_grad, hyperparameters(1)), std::invalid_argument);

  std::vector<AdamWTensors> wrong_dtype = {group(4)};
  wrong_dtype[0].exp_avg = torch::zeros({4}, torch::kDouble);
  EXPECT_THROW(adamw_update(wrong_dtype, hyperparameters(1)), std::invalid_argument);

  std::vector<AdamWTensors> strided = {group(4)};
  strided[0].exp_avg_sq = torch::zeros({8}).slice(0, 0, 8, 2);
  EXPECT_THROW(adamw_update(strided, hyperparameters(1)), std::invalid_argument);

  std::vector<AdamWTensors> missing = {group(4)};
  missing[0].param = torch::Tensor();
  EXPECT_THROW(adamw_update(missing, hyperparameters(1)), std::invalid_argument);
  EXPECT_THROW(adamw_update_reference(missing, hyperparameters(1)), std::invalid_argument);

  try {
    adamw_update(short_grad, hyperparameters(1));
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("adamw_update"), std::string::npos) << e.what();
  }

  std::vector<AdamWTensors> none;
  EXPECT_NO_THROW(adamw_update(none, hyperparameters(1)));
}

// ---------------------------------------------------------------------------
// CUDA: the fused kernel against the reference.

::testing::AssertionResult close(const torch::Tensor& actual, const torch::Tensor& expected) {
  if (torch::allclose(actual, expected, 1e-6, 1e-7)) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "max abs diff " << (actual - expected).abs().max().item<double>();
}

// Runs `steps` updates on two copies, fused and reference, with the same fresh gradients.
void expect_fused_matches_reference(FlatState& fused, int steps, double weight_decay) {
  FlatState ref = fused.clone();
  for (int64_t step = 1; step <= steps; ++step) {
    const torch::Tensor g = torch::randn_like(fused.grad);
    fused.grad.copy_(g);
    ref.grad.copy_(g);
    std::vector<AdamWTensors> gf = fused.groups(), gr = ref.groups();
    adamw_update(gf, hyperparameters(step, weight_decay));
    adamw_update_reference(gr, hyperparameters(step, weight_decay));
  }
  EXPECT_TRUE(close(fused.param, ref.param)) << "param";
  EXPECT_TRUE(close(fused.exp_avg, ref.exp_avg)) << "exp_avg";
  EXPECT_TRUE(close(fused.exp_avg_sq, ref.exp_avg_sq)) << "exp_avg_sq";
}

TEST(AdamWCuda, FusedMatchesReferenceOnOddLengths) {
  SKIP_WITHOUT_CUDA_KERNELS();
  const BackendGuard backend(KernelBackend::Fused);
  const torch::Device dev(torch::kCUDA, 0);
  torch::manual_seed(31);
  // Aligned start, then a start one element in (every group misaligned).
  for (int64_t start : {int64_t{0}, int64_t{1}}) {
    FlatState s({1, 4097, 1000003, 64, 3}, {true, false, true, false, true}, dev, start);
    expect_fused_matches_reference(s, 3, 0.1);
  }
  FlatState no_decay({4097, 1000003}, {true, true}, dev);
  expect_fused_matches_reference(no_decay, 3, 0.0);
}

TEST(AdamWCuda, ManyGroupsTakeMoreThanOneLaunch) {
  SKIP_WITHOUT_CUDA_KERNELS();
  const BackendGuard backend(KernelBackend::Fused);
  const torch::Device dev(torch::kCUDA, 0);
  torch::manual_seed(32);
  std::vector<int64_t> lengths;
  std::vector<bool> decay;
  // More groups than one launch's table holds (kAdamWMaxGroupsPerLaunch, 256).
  for (int i = 0; i < 301; ++i) {
    lengths.push_back(1 + (i * 7919) % 3001);
    decay.push_back(i % 3 != 0);
  }
  lengths[10] = 2000003;  // one group of many chunks among the small ones
  FlatState s(lengths, decay, dev, /*start=*/2);
  expect_fused_matches_reference(s, 3, 0.1);

#ifdef MOETRAIN_CUDA_KERNELS
  // The launcher itself: the groups outgrow one table.
  ASSERT_GT(lengths.size(), static_cast<size_t>(cuda::kAdamWMaxGroupsPerLaunch));
  std::vector<cuda::AdamWGroup> table;
  for (const AdamWTensors& g : s.groups()) {
    cuda::AdamWGroup e;
    e.param = g.param.data_ptr<float>();
    e.grad = g.grad.data_ptr<float>();
    e.exp_avg = g.exp_avg.data_ptr<float>();
    e.exp_avg_sq = g.exp_avg_sq.data_ptr<float>();
    e.numel = g.param.numel();
    e.weight_decay = g.weight_decay;
    table.push_back(e);
  }
  cuda::AdamWScalars scalars;
  scalars.beta1 = 0.9f;
  scalars.one_minus_beta1 = 0.1f;
  scalars.beta2 = 0.95f;
  scalars.one_minus_beta2 = 0.05f;
  scalars.eps = 1e-8f;
  const int launches = cuda::launch_adamw(table.data(), static_cast<int64_t>(table.size()), scalars,
                                          at::cuda::getCurrentCUDAStream().stream());
  EXPECT_EQ(launches, 2);
  torch::cuda::synchronize();
#endif
}

}  // namespace
}  // namespace moetrain::kernels
