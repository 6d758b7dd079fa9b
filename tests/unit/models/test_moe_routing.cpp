// route_tokens, load_balancing_loss and router_z_loss on a hand-computed example.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <stdexcept>
#include <vector>

#include "models/moe_layer.h"

namespace moetrain::models {
namespace {

// 6 tokens, 3 experts. Logits are log(p) + c_t so that softmax gives exactly
// the probabilities below and logsumexp gives c_t.
const std::vector<std::vector<double>> kProbs = {
    {0.5, 0.3, 0.2},    // t0: 1st e0, 2nd e1
    {0.6, 0.1, 0.3},    // t1: 1st e0, 2nd e2
    {0.2, 0.7, 0.1},    // t2: 1st e1, 2nd e0
    {0.7, 0.2, 0.1},    // t3: 1st e0, 2nd e1
    {0.4, 0.1, 0.5},    // t4: 1st e2, 2nd e0
    {0.8, 0.15, 0.05},  // t5: 1st e0, 2nd e1
};
const std::vector<double> kLse = {0.0, 1.0, -1.0, 2.0, 0.5, 0.0};

torch::Tensor example_logits(const std::vector<int64_t>& rows = {0, 1, 2, 3, 4, 5}) {
  torch::Tensor logits = torch::empty({static_cast<int64_t>(rows.size()), 3}, torch::kFloat);
  for (size_t i = 0; i < rows.size(); ++i) {
    for (int64_t e = 0; e < 3; ++e) {
      logits[static_cast<int64_t>(i)][e] = std::log(kProbs[rows[i]][e]) + kLse[rows[i]];
    }
  }
  return logits;
}

torch::Tensor long_tensor(const std::vector<std::vector<int64_t>>& v) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(v.size()), static_cast<int64_t>(v[0].size())}, torch::kLong);
  for (size_t i = 0; i < v.size(); ++i)
    for (size_t j = 0; j < v[i].size(); ++j) t[static_cast<int64_t>(i)][static_cast<int64_t>(j)] = v[i][j];
  return t;
}

torch::Tensor bool_tensor(const std::vector<std::vector<int>>& v) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(v.size()), static_cast<int64_t>(v[0].size())}, torch::kBool);
  for (size_t i = 0; i < v.size(); ++i)
    for (size_t j = 0; j < v[i].size(); ++j) t[static_cast<int64_t>(i)][static_cast<int64_t>(j)] = v[i][j] != 0;
  return t;
}

torch::Tensor double_tensor(const std::vector<std::vector<double>>& v) {
  torch::Tensor t = torch::empty({static_cast<int64_t>(v.size()), static_cast<int64_t>(v[0].size())}, torch::kDouble);
  for (size_t i = 0; i < v.size(); ++i)
    for (size_t j = 0; j < v[i].size(); ++j) t[static_cast<int64_t>(i)][static_cast<int64_t>(j)] = v[i][j];
  return t;
}

std::vector<int64_t> to_vector(const torch::Tensor& t) {
  torch::Tensor c = t.to(torch::kLong).contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

TEST(MoERouting, HandComputedExampleWithCapacityDropping) {
  // capacity = ceil(0.75 * 6 tokens * 2 / 3 experts) = 3.
  const RoutingResult r = route_tokens(example_logits(), torch::ones({6}, torch::kBool), 2, 0.75, true);
  EXPECT_EQ(r.capacity, 3);
  EXPECT_EQ(r.num_valid, 6);
  EXPECT_TRUE(r.expert_index.equal(long_tensor({{0, 1}, {0, 2}, {1, 0}, {0, 1}, {2, 0}, {0, 1}})));
  // Slots, first choices first (token order), then second choices:
  //   e0: t0, t1, t3 (1st) fill it; t5's 1st, t2's and t4's 2nd are dropped.
  //   e1: t2 (1st), t0, t3 (2nd); t5's 2nd is dropped.
  //   e2: t4 (1st), t1 (2nd).
  // Token-order priority alone would have kept t2's 2nd choice over t3's 1st.
  EXPECT_TRUE(r.kept.equal(bool_tensor({{1, 1}, {1, 1}, {1, 0}, {1, 1}, {1, 0}, {0, 0}})));
  EXPECT_EQ(to_vector(r.tokens_per_expert), (std::vector<int64_t>{3, 3, 2}));
  EXPECT_EQ(to_vector(r.assigned_per_expert), (std::vector<int64_t>{6, 4, 2}));
  EXPECT_EQ(r.dropped, 4);
  // Gates renormalised over the two choices: p1 / (p1 + p2), p2 / (p1 + p2).
  const torch::Tensor expected_gates = double_tensor({{0.625, 0.375},
                                                      {2.0 / 3, 1.0 / 3},
                                                      {7.0 / 9, 2.0 / 9},
                                                      {7.0 / 9, 2.0 / 9},
                                                      {5.0 / 9, 4.0 / 9},
                                                      {16.0 / 19, 3.0 / 19}});
  EXPECT_EQ(r.gates.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::allclose(r.gates.to(torch::kDouble), expected_gates, 1e-6, 1e-6));
}

TEST(MoERouting, HandComputedLosses) {
  const torch::Tensor mask = torch::ones({6}, torch::kBool);
  const torch::Tensor logits = example_logits();
  const RoutingResult r = route_tokens(logits, mask, 2, 0.75, true);
  // f = [6, 4, 2] / 12; P = column means of kProbs = [3.2, 1.55, 1.25] / 6.
  // aux = 3 * (0.5 * 3.2 + (1/3) * 1.55 + (1/6) * 1.25) / 6 = 1.1625.
  const torch::Tensor aux = load_balancing_loss(r.probs, r.assigned_per_expert, mask, 2);
  EXPECT_EQ(aux.scalar_type(), torch::kFloat);
  EXPECT_EQ(aux.dim(), 0);
  EXPECT_NEAR(aux.item<double>(), 1.1625, 1e-5);
  // z = mean(lse^2) = (0 + 1 + 1 + 4 + 0.25 + 0) / 6.
  const torch::Tensor z = router_z_loss(logits, mask);
  EXPECT_EQ(z.scalar_type(), torch::kFloat);
  EXPECT_NEAR(z.item<double>(), 6.25 / 6.0, 1e-5);
}

TEST(MoERouting, DroplessKeepsEveryAssignment) {
  const RoutingResult r = route_tokens(example_logits(), torch::ones({6}, torch::kBool), 2, 0.0, true);
  EXPECT_EQ(r.capacity, -1);
  EXPECT_TRUE(r.kept.all().item<bool>());
  EXPECT_EQ(r.dropped, 0);
  EXPECT_EQ(to_vector(r.tokens_per_expert), (std::vector<int64_t>{6, 4, 2}));
}

TEST(MoERouting, UnnormalisedGatesAreTheProbabilities) {
  const RoutingResult r = route_tokens(example_logits(), torch::ones({6}, torch::kBool), 2, 0.0, false);
  const torch::Tensor expected =
      double_tensor({{0.5, 0.3}, {0.6, 0.3}, {0.7, 0.2}, {0.7, 0.2}, {0.5, 0.4}, {0.8, 0.15}});
  EXPECT_TRUE(torch::allclose(r.gates.to(torch::kDouble), expected, 1e-6, 1e-6));
}

TEST(MoERouting, Top1CapacityExample) {
  // Top-1, capacity = ceil(1.0 * 6 / 3) = 2: e0 gets t0, t1 and drops t3, t5.
  const RoutingResult r = route_tokens(example_logits(), torch::ones({6}, torch::kBool), 1, 1.0, true);
  EXPECT_EQ(r.capacity, 2);
  EXPECT_TRUE(r.expert_index.equal(long_tensor({{0}, {0}, {1}, {0}, {2}, {0}})));
  EXPECT_TRUE(r.kept.equal(bool_tensor({{1}, {1}, {1}, {0}, {1}, {0}})));
  EXPECT_EQ(to_vector(r.tokens_per_expert), (std::vector<int64_t>{2, 1, 1}));
  EXPECT_EQ(r.dropped, 2);
  EXPECT_TRUE(torch::allclose(r.gates, torch::ones({6, 1})));  // top-1 renormalised
}

TEST(MoERouting, PaddedTokensAreNeverRoutedAndDoNotCount) {
  // Token 2 padded: the 5 remaining tokens must route exactly as if token 2
  // were not there (same capacity ceil(0.75 * 5 * 2 / 3) = 3, same losses).
  torch::Tensor mask = torch::ones({6}, torch::kBool);
  mask[2] = false;
  torch::Tensor logits = example_logits();
  logits[2] = torch::tensor({50.0f, -50.0f, 40.0f});  // would win e0 if it counted
  const RoutingResult padded = route_tokens(logits, mask, 2, 0.75, true);
  const std::vector<int64_t> rows = {0, 1, 3, 4, 5};
  const RoutingResult alone = route_tokens(example_logits(rows), torch::ones({5}, torch::kBool), 2, 0.75, true);

  EXPECT_EQ(padded.num_valid, 5);
  EXPECT_EQ(padded.capacity, 3);
  EXPECT_EQ(padded.capacity, alone.capacity);
  const torch::Tensor idx = torch::tensor({0, 1, 3, 4, 5}, torch::kLong);
  EXPECT_TRUE(padded.expert_index.index_select(0, idx).equal(alone.expert_index));
  EXPECT_TRUE(padded.kept.index_select(0, idx).equal(alone.kept));
  EXPECT_TRUE(torch::allclose(padded.gates.index_select(0, idx), alone.gates));
  EXPECT_TRUE(padded.tokens_per_expert.equal(alone.tokens_per_expert));
  EXPECT_TRUE(padded.assigned_per_expert.equal(alone.assigned_per_expert));
  EXPECT_EQ(padded.dropped, alone.dropped);
  // The padded row itself: no expert, no gate, not kept.
  EXPECT_TRUE(padded.expert_index[2].equal(torch::tensor({-1, -1}, torch::kLong)));
  EXPECT_FALSE(padded.kept[2].any().item<bool>());
  EXPECT_EQ(padded.gates[2].abs().sum().item<float>(), 0.0f);

  const float aux_padded = load_balancing_loss(padded.probs, padded.assigned_per_expert, mask, 2).item<float>();
  const float aux_alone =
      load_balancing_loss(alone.probs, alone.assigned_per_expert, torch::ones({5}, torch::kBool), 2).item<float>();
  EXPECT_NEAR(aux_padded, aux_alone, 1e-6);
  EXPECT_NEAR(router_z_loss(logits, mask).item<float>(),
              router_z_loss(example_logits(rows), torch::ones({5}, torch::kBool)).item<float>(), 1e-6);
}

TEST(MoERouting, AllTokensPaddedGivesZeroLosses) {
  const torch::Tensor mask = torch::zeros({6}, torch::kBool);
  const RoutingResult r = route_tokens(example_logits(), mask, 2, 1.0, true);
  EXPECT_EQ(r.num_valid, 0);
  EXPECT_EQ(r.dropped, 0);
  EXPECT_FALSE(r.kept.any().item<bool>());
  EXPECT_EQ(load_balancing_loss(r.probs, r.assigned_per_expert, mask, 2).item<float>(), 0.0f);
  EXPECT_EQ(router_z_loss(example_logits(), mask).item<float>(), 0.0f);
}

TEST(MoERouting, RouterGradientFlowsThroughGatesAndLosses) {
  torch::Tensor logits = example_logits().requires_grad_(true);
  const torch::Tensor mask = torch::ones({6}, torch::kBool);
  const RoutingResult r = route_tokens(logits, mask, 2, 0.75, true);
  (r.gates.select(1, 0).sum() + load_balancing_loss(r.probs, r.assigned_per_expert, mask, 2) +
   router_z_loss(logits, mask))
      .backward();
  ASSERT_TRUE(logits.grad().defined());
  EXPECT_GT(logits.grad().abs().sum().item<float>(), 0.0f);
  EXPECT_TRUE(torch::isfinite(logits.grad()).all().item<bool>());
}

TEST(MoERouting, RejectsBadArguments) {
  const torch::Tensor mask = torch::ones({6}, torch::kBool);
  EXPECT_THROW(route_tokens(example_logits().to(torch::kBFloat16), mask, 2, 1.0, true), std::invalid_argument);
  EXPECT_THROW(route_tokens(example_logits(), torch::ones({5}, torch::kBool), 2, 1.0, true), std::invalid_argument);
  EXPECT_THROW(route_tokens(example_logits(), torch::ones({6}, torch::kLong), 2, 1.0, true), std::invalid_argument);
  EXPECT_THROW(route_tokens(example_logits(), mask, 4, 1.0, true), std::invalid_argument);
  EXPECT_THROW(route_tokens(example_logits(), mask, 0, 1.0, true), std::invalid_argument);
  EXPECT_THROW(route_tokens(example_logits(), mask, 2, -1.0, true), std::invalid_argument);
}

}  // namespace
}  // namespace moetrain::models
