// kernels::distill_kl: a small example and the combined distillation loss
// (alpha * T^2 * KL + (1 - alpha) * CE) worked out by hand in double; equal
// logits; the chunked forward and backward against a plain fp64 torch
// reference over dtypes, top-k and temperatures; masked and padded rows;
// argument checks; and on a GPU, that no fp32 copy of the logits is made
// (skipped without one).
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "kernels/cross_entropy.h"
#include "kernels/distill_loss.h"

#ifdef MOETRAIN_CUDA_KERNELS
#include <c10/cuda/CUDACachingAllocator.h>
#endif

namespace moetrain::kernels {
namespace {

using Matrix = std::vector<std::vector<double>>;

double max_abs(const torch::Tensor& t) { return t.numel() == 0 ? 0.0 : t.abs().max().item<double>(); }

double rel_diff(double a, double b) { return std::abs(a - b) / std::max(std::abs(b), 1e-30); }

torch::Tensor to_tensor(const Matrix& m) {
  auto t = torch::empty({static_cast<int64_t>(m.size()), static_cast<int64_t>(m[0].size())}, torch::kFloat64);
  for (size_t i = 0; i < m.size(); ++i) {
    for (size_t j = 0; j < m[i].size(); ++j) t[i][j] = m[i][j];
  }
  return t;
}

// ------------------------------------------------------ by hand, double ----

// log_softmax(z / T) over the entries `keep` of z, written out.
std::vector<double> hand_log_softmax(const std::vector<double>& z, double temperature,
                                     const std::vector<size_t>& keep) {
  double mx = -std::numeric_limits<double>::infinity();
  for (const size_t j : keep) mx = std::max(mx, z[j] / temperature);
  double sum_exp = 0.0;
  for (const size_t j : keep) sum_exp += std::exp(z[j] / temperature - mx);
  std::vector<double> out(z.size(), -std::numeric_limits<double>::infinity());
  for (const size_t j : keep) out[j] = z[j] / temperature - mx - std::log(sum_exp);
  return out;
}

// The indices of the k largest entries of z (all of them when k is 0).
std::vector<size_t> hand_top_k(const std::vector<double>& z, int64_t k) {
  std::vector<size_t> order(z.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) { return z[a] > z[b]; });
  if (k > 0 && static_cast<size_t>(k) < z.size()) order.resize(static_cast<size_t>(k));
  return order;
}

// Per counted row: p_t = softmax over the teacher's top k of t / T,
// log p_s = log_softmax(s / T) over all V, KL = sum p_t (log p_t - log p_s),
// d KL / d s = (p_s - p_t) / T. Returns the KL sum; *grad gets the gradient.
double hand_kl(const Matrix& s, const Matrix& t, const std::vector<bool>& mask, double temperature, int64_t top_k,
               Matrix* grad) {
  double total = 0.0;
  *grad = Matrix(s.size(), std::vector<double>(s[0].size(), 0.0));
  for (size_t i = 0; i < s.size(); ++i) {
    if (!mask[i]) continue;
    std::vector<size_t> all(s[i].size());
    std::iota(all.begin(), all.end(), size_t{0});
    const auto log_ps = hand_log_softmax(s[i], temperature, all);
    const auto log_pt = hand_log_softmax(t[i], temperature, hand_top_k(t[i], top_k));
    for (size_t j = 0; j < s[i].size(); ++j) {
      const double pt = std::exp(log_pt[j]);  // 0 outside the top k
      if (pt > 0.0) total += pt * (log_pt[j] - log_ps[j]);
      (*grad)[i][j] = (std::exp(log_ps[j]) - pt) / temperature;
    }
  }
  return total;
}

// Per counted row: CE = log sum_j exp(s_j) - s_target, d CE / d s = softmax(s)
// - onehot(target). Returns the CE sum; *grad gets the gradient.
double hand_ce(const Matrix& s, const std::vector<int64_t>& targets, const std::vector<bool>& mask, Matrix* grad) {
  double total = 0.0;
  *grad = Matrix(s.size(), std::vector<double>(s[0].size(), 0.0));
  for (size_t i = 0; i < s.size(); ++i) {
    if (!mask[i]) continue;
    std::vector<size_t> all(s[i].size());
    std::iota(all.begin(), all.end(), size_t{0});
    const auto log_p = hand_log_softmax(s[i], 1.0, all);
    const auto target = static_cast<size_t>(targets[i]);
    total -= log_p[target];
    for (size_t j = 0; j < s[i].size(); ++j) (*grad)[i][j] = std::exp(log_p[j]) - (j == target ? 1.0 : 0.0);
  }
  return total;
}

// Three rows of V = 4, the middle one masked out (its target is padding).
struct SmallExample {
  Matrix student = {{1.0, -0.5, 2.0, 0.25}, {3.0, 3.0, -1.0, 0.5}, {-1.25, 0.75, 0.0, 1.5}};
  Matrix teacher = {{0.5, 0.0, 2.5, -1.0}, {-2.0, 1.0, 0.5, 4.0}, {0.25, 1.0, -0.75, 2.0}};
  std::vector<bool> mask = {true, false, true};
  std::vector<int64_t> targets = {2, -100, 3};

  torch::Tensor mask_tensor() const { return torch::tensor({true, false, true}); }
  torch::Tensor target_tensor() const { return torch::tensor(std::vector<int64_t>(targets)); }
};

TEST(DistillKlByHand, SmallExampleLossAndGradient) {
  const SmallExample ex;
  for (const int64_t top_k : {int64_t{0}, int64_t{2}}) {
    Matrix expected_grad;
    const double expected = hand_kl(ex.student, ex.teacher, ex.mask, 2.0, top_k, &expected_grad);
    const auto student = to_tensor(ex.student).to(torch::kFloat32).requires_grad_();
    const auto r = distill_kl(student, to_tensor(ex.teacher).to(torch::kFloat32), ex.mask_tensor(), 2.0, top_k);
    EXPECT_EQ(r.num_tokens, 2);
    EXPECT_EQ(r.kl_sum.scalar_type(), torch::kFloat32);
    EXPECT_EQ(r.kl_sum.dim(), 0);
    EXPECT_GT(expected, 0.0);
    EXPECT_NEAR(r.kl_sum.item<double>(), expected, 1e-6) << "top_k " << top_k;
    r.kl_sum.backward();
    EXPECT_LT(max_abs(student.grad().to(torch::kFloat64) - to_tensor(expected_grad)), 1e-6) << "top_k " << top_k;
  }
}

// The loss the trainer uses for `distill:`, with temperature 2 and alpha 0.5:
//   loss = alpha * T^2 * KL_sum / n + (1 - alpha) * CE_sum / n
//   d loss / d s = alpha * T^2 / n * (p_s - p_t) / T + (1 - alpha) / n * (softmax(s) - onehot)
// (n = counted tokens), by hand against distill_kl + softmax_cross_entropy.
TEST(DistillKlByHand, CombinedLossWithCrossEntropy) {
  const SmallExample ex;
  const double temperature = 2.0, alpha = 0.5;
  Matrix kl_grad, ce_grad;
  const double kl = hand_kl(ex.student, ex.teacher, ex.mask, temperature, 0, &kl_grad);
  const double ce = hand_ce(ex.student, ex.targets, ex.mask, &ce_grad);
  const double n = 2.0;
  const double expected = alpha * temperature * temperature * kl / n + (1.0 - alpha) * ce / n;
  Matrix expected_grad = kl_grad;
  for (size_t i = 0; i < kl_grad.size(); ++i) {
    for (size_t j = 0; j < kl_grad[i].size(); ++j) {
      expected_grad[i][j] = alpha * temperature * temperature / n * kl_grad[i][j] + (1.0 - alpha) / n * ce_grad[i][j];
    }
  }

  const auto student = to_tensor(ex.student).to(torch::kFloat32).requires_grad_();
  const auto teacher = to_tensor(ex.teacher).to(torch::kFloat32);
  const auto d = distill_kl(student, teacher, ex.mask_tensor(), temperature, 0);
  const auto c = softmax_cross_entropy(student, ex.target_tensor(), ex.mask_tensor());
  ASSERT_EQ(d.num_tokens, 2);
  ASSERT_EQ(c.num_tokens, 2);
  const auto tokens = static_cast<double>(d.num_tokens);
  const auto loss = alpha * temperature * temperature * d.kl_sum / tokens + (1.0 - alpha) * c.loss_sum / tokens;
  EXPECT_NEAR(loss.item<double>(), expected, 1e-6);
  loss.backward();
  EXPECT_LT(max_abs(student.grad().to(torch::kFloat64) - to_tensor(expected_grad)), 1e-6);
  EXPECT_EQ(max_abs(student.grad()[1]), 0.0);  // the masked row
}

// ----------------------------------------------- the fp64 torch reference ----

// The obvious way in fp64: sum over counted rows of
// sum_i p_t,i (log p_t,i - log_softmax(s / T)_i), p_t over the top k if any.
torch::Tensor reference_kl(const torch::Tensor& student64, const torch::Tensor& teacher64, const torch::Tensor& mask,
                           double temperature, int64_t top_k) {
  const auto log_ps = torch::log_softmax(student64 / temperature, -1);
  torch::Tensor log_pt, log_ps_at;
  if (top_k > 0 && top_k < student64.size(1)) {
    const auto [values, indices] = (teacher64 / temperature).topk(top_k, -1);
    log_pt = torch::log_softmax(values, -1);
    log_ps_at = log_ps.gather(-1, indices);
  } else {
    log_pt = torch::log_softmax(teacher64 / temperature, -1);
    log_ps_at = log_ps;
  }
  const auto row = (log_pt.exp() * (log_pt - log_ps_at)).sum(-1);
  return torch::where(mask, row, torch::zeros_like(row)).sum();
}

struct Pair {
  torch::Tensor student;  // [N, V]
  torch::Tensor teacher;  // [N, V]
  torch::Tensor mask;     // [N] bool; row 0 counts, the last row does not
};

// Student randn * 3. Teacher randn * 3 capped at 6, with 7 distinct values
// 6.5, 7, ..., 9.5 (exact in bf16) planted at random columns of each row, so
// its top k (k < 7) is the same set however it is rounded or sorted.
Pair make_pair(int64_t rows, int64_t vocab, torch::ScalarType student_dtype, torch::ScalarType teacher_dtype,
               uint64_t seed, torch::Device device = torch::kCPU) {
  torch::manual_seed(seed);
  const auto opts = torch::TensorOptions().dtype(torch::kFloat32).device(device);
  Pair p;
  p.student = (torch::randn({rows, vocab}, opts) * 3.0).to(student_dtype);
  auto teacher = (torch::randn({rows, vocab}, opts) * 3.0).clamp_max(6.0);
  const auto columns = torch::rand({rows, vocab}, opts).argsort(/*dim=*/-1, /*descending=*/false).narrow(1, 0, 7);
  teacher.scatter_(1, columns, (torch::arange(7, opts) * 0.5 + 6.5).expand({rows, 7}));
  p.teacher = teacher.to(teacher_dtype);
  p.mask = torch::rand({rows}, opts) > 0.2;
  p.mask.index_put_({0}, true);
  p.mask.index_put_({rows - 1}, false);
  return p;
}

struct Comparison {
  double loss = 0.0, ref_loss = 0.0;
  double grad_err = 0.0;  // max |grad - reference grad|
  double grad_max = 0.0;  // max |reference grad|
  torch::ScalarType grad_dtype = torch::kFloat32;
};

// distill_kl and the reference on the same logits, with an upstream gradient
// of `scale` on kl_sum.
Comparison compare(const Pair& p, double temperature, int64_t top_k, int64_t chunk_rows, double scale) {
  Comparison c;
  const auto student = p.student.detach().requires_grad_();
  const auto r = distill_kl(student, p.teacher, p.mask, temperature, top_k, chunk_rows);
  (r.kl_sum * scale).backward();
  const auto s64 = p.student.to(torch::kFloat64).detach().requires_grad_();
  const auto ref = reference_kl(s64, p.teacher.to(torch::kFloat64), p.mask, temperature, top_k);
  (ref * scale).backward();
  EXPECT_EQ(r.num_tokens, p.mask.sum().item<int64_t>());
  c.loss = r.kl_sum.item<double>();
  c.ref_loss = ref.item<double>();
  c.grad_dtype = student.grad().scalar_type();
  c.grad_err = max_abs(student.grad().to(torch::kFloat64) - s64.grad());
  c.grad_max = max_abs(s64.grad());
  return c;
}

std::string dtype_label(torch::ScalarType dtype) { return dtype == torch::kBFloat16 ? "bf16" : "fp32"; }

// student dtype, teacher dtype, top_k, temperature
using ReferenceCase = std::tuple<torch::ScalarType, torch::ScalarType, int64_t, double>;

class DistillKlReference : public ::testing::TestWithParam<ReferenceCase> {};

// N = 37 in chunks of 8 rows (the last one partial). Both sides compute from
// the same upcast logits, so the loss differs only by fp32 rounding; the
// gradient by that and one rounding to the student's dtype.
TEST_P(DistillKlReference, ChunkedMatchesFp64Reference) {
  const auto [student_dtype, teacher_dtype, top_k, temperature] = GetParam();
  const auto p = make_pair(37, 1000, student_dtype, teacher_dtype, 100 + static_cast<uint64_t>(top_k));
  torch::manual_seed(7);
  const double scale = 0.5 + 2.0 * torch::rand({}).item<double>();
  const auto c = compare(p, temperature, top_k, /*chunk_rows=*/8, scale);
  EXPECT_GT(c.ref_loss, 0.0);
  EXPECT_LT(rel_diff(c.loss, c.ref_loss), 2e-5) << c.loss << " vs " << c.ref_loss;
  EXPECT_EQ(c.grad_dtype, student_dtype);
  const double grad_tol = student_dtype == torch::kBFloat16 ? 1e-2 : 1e-5;
  EXPECT_LE(c.grad_err, grad_tol * c.grad_max) << "max |g| " << c.grad_max;
}

INSTANTIATE_TEST_SUITE_P(Grid, DistillKlReference,
                         ::testing::Combine(::testing::Values(torch::kFloat32, torch::kBFloat16),
                                            ::testing::Values(torch::kFloat32, torch::kBFloat16),
                                            ::testing::Values<int64_t>(0, 5), ::testing::Values(1.0, 2.5)),
                         [](const ::testing::TestParamInfo<ReferenceCase>& info) {
                           const double t = std::get<3>(info.param);
                           return "student_" + dtype_label(std::get<0>(info.param)) + "_teacher_" +
                                  dtype_label(std::get<1>(info.param)) + "_top" +
                                  std::to_string(std::get<2>(info.param)) + (t == 1.0 ? "_T1" : "_T2p5");
                         });

// -------------------------------------------------------- properties ----

TEST(DistillKl, EqualLogitsGiveZeroLossAndGradient) {
  const auto p = make_pair(37, 1000, torch::kFloat32, torch::kFloat32, 1);
  for (const auto dtype : {torch::kFloat32, torch::kBFloat16}) {
    const auto logits = p.student.to(dtype);
    for (const double temperature : {0.5, 1.0, 2.0, 4.0}) {
      const auto student = logits.detach().requires_grad_();
      const auto r = distill_kl(student, logits, p.mask, temperature, 0, /*chunk_rows=*/8);
      EXPECT_LE(std::abs(r.kl_sum.item<double>()), 1e-7) << dtype_label(dtype) << " T " << temperature;
      r.kl_sum.backward();
      EXPECT_LE(max_abs(student.grad().to(torch::kFloat32)), 1e-7) << dtype_label(dtype) << " T " << temperature;
    }
  }
}

// With top_k > 0 the renormalised teacher differs from the student even on
// equal logits: the KL is positive and is what the reference says.
TEST(DistillKl, EqualLogitsWithTopKMatchReference) {
  const auto p = make_pair(37, 1000, torch::kFloat32, torch::kFloat32, 2);
  const Pair same{p.student, p.student, p.mask};
  for (const double temperature : {1.0, 2.5}) {
    const auto c = compare(same, temperature, 5, /*chunk_rows=*/8, 1.0);
    EXPECT_GT(c.ref_loss, 0.0);
    EXPECT_LT(rel_diff(c.loss, c.ref_loss), 2e-5);
    EXPECT_LE(c.grad_err, 1e-5 * c.grad_max);
  }
}

// Chunk heights (1 row, a partial last chunk, automatic = one chunk here, more
// rows than N) change nothing beyond rounding; top_k >= V is top_k = 0.
TEST(DistillKl, ChunkingAndLargeTopKChangeNothing) {
  const auto p = make_pair(37, 1000, torch::kBFloat16, torch::kFloat32, 3);
  const auto base = compare(p, 2.0, 0, 0, 1.0);
  for (const int64_t chunk_rows : {1, 8, 36, 37, 1000}) {
    const auto c = compare(p, 2.0, 0, chunk_rows, 1.0);
    EXPECT_LT(rel_diff(c.loss, base.loss), 1e-6) << chunk_rows;
    EXPECT_LT(c.grad_err, 1e-2 * c.grad_max) << chunk_rows;
  }
  EXPECT_EQ(distill_kl(p.student, p.teacher, p.mask, 2.0, 1000).kl_sum.item<float>(),
            distill_kl(p.student, p.teacher, p.mask, 2.0, 0).kl_sum.item<float>());
  EXPECT_EQ(distill_kl(p.student, p.teacher, p.mask, 2.0, 5000).kl_sum.item<float>(),
            distill_kl(p.student, p.teacher, p.mask, 2.0, 0).kl_sum.item<float>());
  EXPECT_EQ(distill_chunk_rows(1000), 4194);
  EXPECT_EQ(distill_chunk_rows(1 << 23), 1);
  EXPECT_EQ(distill_chunk_rows(0), 1 << 22);
}

// Masked rows may hold anything (inf, NaN): the loss ignores them, their
// gradient is 0; the teacher never gets a gradient.
TEST(DistillKl, MaskedRowsAreIgnoredAndTeacherGetsNoGradient) {
  const auto p = make_pair(37, 1000, torch::kFloat32, torch::kFloat32, 4);
  const auto masked = p.mask.logical_not().unsqueeze(1);
  for (const int64_t top_k : {int64_t{0}, int64_t{5}}) {
    const auto clean = distill_kl(p.student, p.teacher, p.mask, 2.0, top_k, 8).kl_sum.item<float>();
    const auto student = torch::where(masked, torch::full_like(p.student, 1e4), p.student).requires_grad_();
    const auto teacher =
        torch::where(masked, torch::full_like(p.teacher, std::numeric_limits<float>::quiet_NaN()), p.teacher)
            .requires_grad_();
    const auto r = distill_kl(student, teacher, p.mask, 2.0, top_k, 8);
    EXPECT_EQ(r.kl_sum.item<float>(), clean) << top_k;
    r.kl_sum.backward();
    EXPECT_FALSE(teacher.grad().defined());
    EXPECT_EQ(max_abs(student.grad().index_select(0, p.mask.logical_not().nonzero().squeeze(1))), 0.0);
    EXPECT_TRUE(std::isfinite(max_abs(student.grad())));
  }
}

// Padded vocabulary columns at -inf in both: probability 0, no NaN; the same
// loss and gradient as on the vocabulary without them, 0 on the padding.
TEST(DistillKl, MinusInfinityColumnsAreHarmless) {
  const int64_t vocab = 1000, pad = 24;
  const auto p = make_pair(37, vocab, torch::kFloat32, torch::kFloat32, 5);
  const float inf = std::numeric_limits<float>::infinity();
  const auto padded_teacher = torch::cat({p.teacher, torch::full({37, pad}, -inf)}, 1);
  for (const int64_t top_k : {int64_t{0}, int64_t{5}}) {
    const auto padded_student = torch::cat({p.student, torch::full({37, pad}, -inf)}, 1).requires_grad_();
    const auto student = p.student.detach().requires_grad_();
    const auto r = distill_kl(padded_student, padded_teacher, p.mask, 2.0, top_k, 8);
    const auto plain = distill_kl(student, p.teacher, p.mask, 2.0, top_k, 8);
    EXPECT_TRUE(std::isfinite(r.kl_sum.item<double>()));
    EXPECT_LT(rel_diff(r.kl_sum.item<double>(), plain.kl_sum.item<double>()), 1e-6) << top_k;
    r.kl_sum.backward();
    plain.kl_sum.backward();
    EXPECT_LT(max_abs(padded_student.grad().narrow(1, 0, vocab) - student.grad()), 1e-7) << top_k;
    EXPECT_EQ(max_abs(padded_student.grad().narrow(1, vocab, pad)), 0.0) << top_k;
  }
}

TEST(DistillKl, EmptyAndFullyMaskedBatches) {
  {
    const auto student = torch::randn({0, 50}).requires_grad_();
    const auto r = distill_kl(student, torch::randn({0, 50}), torch::zeros({0}, torch::kBool), 2.0, 5);
    EXPECT_EQ(r.num_tokens, 0);
    EXPECT_EQ(r.kl_sum.item<float>(), 0.0f);
    r.kl_sum.backward();
    EXPECT_EQ(student.grad().sizes(), student.sizes());
  }
  {
    const auto p = make_pair(16, 50, torch::kBFloat16, torch::kBFloat16, 6);
    const auto student = p.student.detach().requires_grad_();
    const auto r = distill_kl(student, p.teacher, torch::zeros({16}, torch::kBool), 2.0, 0, 4);
    EXPECT_EQ(r.num_tokens, 0);
    EXPECT_EQ(r.kl_sum.item<float>(), 0.0f);
    r.kl_sum.backward();
    EXPECT_EQ(max_abs(student.grad().to(torch::kFloat32)), 0.0);
  }
}

// --------------------------------------------------------- arguments ----

TEST(DistillKlArguments, BadShapesAndTypesThrow) {
  const auto s = torch::randn({4, 10});
  const auto t = torch::randn({4, 10});
  const auto m = torch::ones({4}, torch::kBool);
  EXPECT_THROW(distill_kl(torch::randn({10}), torch::randn({10}), m, 1.0, 0), std::invalid_argument);
  EXPECT_THROW(distill_kl(torch::randn({2, 2, 10}), torch::randn({2, 2, 10}), m, 1.0, 0), std::invalid_argument);
  EXPECT_THROW(distill_kl(s, torch::randn({4, 11}), m, 1.0, 0), std::invalid_argument);
  EXPECT_THROW(distill_kl(s, torch::randn({5, 10}), m, 1.0, 0), std::invalid_argument);
  EXPECT_THROW(distill_kl(s, t, torch::ones({5}, torch::kBool), 1.0, 0), std::invalid_argument);
  EXPECT_THROW(distill_kl(s, t, torch::ones({4, 1}, torch::kBool), 1.0, 0), std::invalid_argument);
  EXPECT_THROW(distill_kl(s, torch::Tensor(), m, 1.0, 0), std::invalid_argument);
  EXPECT_THROW(distill_kl(s.to(torch::kInt64), t, m, 1.0, 0), std::invalid_argument);
  EXPECT_THROW(distill_kl(s, t.to(torch::kInt32), m, 1.0, 0), std::invalid_argument);
  EXPECT_NO_THROW(distill_kl(s, t, m, 1.0, 0));
  EXPECT_NO_THROW(distill_kl(s, t.to(torch::kBFloat16), m, 1.0, 3));
}

TEST(DistillKlArguments, BadTemperatureTopKOrChunkThrow) {
  const auto s = torch::randn({4, 10});
  const auto t = torch::randn({4, 10});
  const auto m = torch::ones({4}, torch::kBool);
  for (const double temperature :
       {0.0, -1.0, std::numeric_limits<double>::infinity(), std::numeric_limits<double>::quiet_NaN()}) {
    EXPECT_THROW(distill_kl(s, t, m, temperature, 0), std::invalid_argument) << temperature;
  }
  EXPECT_THROW(distill_kl(s, t, m, 1.0, -1), std::invalid_argument);
  EXPECT_THROW(distill_kl(s, t, m, 1.0, 0, -1), std::invalid_argument);
  try {
    distill_kl(s, t, m, -2.0, 0);
    ADD_FAILURE() << "no exception";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("temperature"), std::string::npos) << e.what();
  }
  EXPECT_NO_THROW(distill_kl(s, t, m, 1e-3, 10));
}

// --------------------------------------------------------------- CUDA ----

// The same chunked path on a GPU agrees with the CPU.
TEST(DistillKlCuda, MatchesCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: the GPU path is not run";
  for (const int64_t top_k : {int64_t{0}, int64_t{5}}) {
    const auto p = make_pair(37, 1000, torch::kBFloat16, torch::kBFloat16, 20, torch::kCUDA);
    const Pair cpu{p.student.cpu(), p.teacher.cpu(), p.mask.cpu()};
    const auto gpu_student = p.student.detach().requires_grad_();
    const auto cpu_student = cpu.student.detach().requires_grad_();
    const auto g = distill_kl(gpu_student, p.teacher, p.mask, 2.0, top_k, 8);
    const auto c = distill_kl(cpu_student, cpu.teacher, cpu.mask, 2.0, top_k, 8);
    EXPECT_EQ(g.num_tokens, c.num_tokens);
    EXPECT_LT(rel_diff(g.kl_sum.item<double>(), c.kl_sum.item<double>()), 1e-5) << top_k;
    g.kl_sum.backward();
    c.kl_sum.backward();
    const auto c_grad = cpu_student.grad().to(torch::kFloat32);
    EXPECT_LE(max_abs(gpu_student.grad().cpu().to(torch::kFloat32) - c_grad), 1e-2 * max_abs(c_grad)) << top_k;
  }
}

// Forward + backward at N = 2048, V = 131072 in bf16 allocates nothing of
// [N, V] fp32: student, teacher and the gradient are 3x the student's bytes,
// the chunks' fp32 temporaries a few times 16 MiB (0.3x); one fp32 copy of
// the logits would add 2x.
TEST(DistillKlCuda, NoFp32CopyOfTheLogits) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: the GPU path is not run";
#ifndef MOETRAIN_CUDA_KERNELS
  GTEST_SKIP() << "built without MOETRAIN_WITH_CUDA_KERNELS: no allocator statistics here";
#else
  namespace alloc = c10::cuda::CUDACachingAllocator;
  const auto aggregate = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
  const auto p = make_pair(2048, 131072, torch::kBFloat16, torch::kBFloat16, 21, torch::kCUDA);
  const double student_bytes = static_cast<double>(p.student.numel() * p.student.element_size());
  const auto device = p.student.device().index();
  for (const int64_t top_k : {int64_t{0}, int64_t{8}}) {
    const auto student = p.student.detach().requires_grad_();
    torch::cuda::synchronize();
    alloc::resetPeakStats(device);
    {
      const auto r = distill_kl(student, p.teacher, p.mask, 2.0, top_k);
      r.kl_sum.backward();
    }
    torch::cuda::synchronize();
    EXPECT_EQ(student.grad().scalar_type(), torch::kBFloat16);
    const double peak = static_cast<double>(alloc::getDeviceStats(device).allocated_bytes[aggregate].peak);
    EXPECT_LT(peak, 4.0 * student_bytes) << "top_k " << top_k << ": peak " << peak / student_bytes
                                         << "x the student logits";
  }
#endif
}

}  // namespace
}  // namespace moetrain::kernels
