// MoELayer: the permute / expert / unpermute pipeline against a naive per-token loop.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>
#include <string>
#include <vector>

#include "model_test_util.h"
#include "models/feed_forward.h"
#include "models/moe_layer.h"

namespace moetrain::models {
namespace {

ModelConfig moe_config(double capacity_factor, bool bias = true) {
  ModelConfig c = testing::tiny_config();
  c.moe.num_experts = 4;
  c.moe.top_k = 2;
  c.moe.capacity_factor = capacity_factor;
  c.bias = bias;
  return c;
}

void randomise_biases(MoELayer& moe) {
  torch::NoGradGuard no_grad;
  if (moe->experts_fc1_bias.defined()) moe->experts_fc1_bias.normal_(0.0, 0.1);
  if (moe->experts_fc2_bias.defined()) moe->experts_fc2_bias.normal_(0.0, 0.1);
}

// sum over kept choices of gate * expert_e(x_n), one token at a time.
torch::Tensor naive_reference(MoELayer& moe, const torch::Tensor& x, const RoutingResult& r, Activation act) {
  const int64_t n = x.size(0);
  torch::Tensor y = torch::zeros_like(x, torch::kDouble);
  for (int64_t t = 0; t < n; ++t) {
    for (int64_t c = 0; c < r.expert_index.size(1); ++c) {
      if (!r.kept[t][c].item<bool>()) continue;
      const int64_t e = r.expert_index[t][c].item<int64_t>();
      torch::Tensor h = torch::matmul(moe->experts_fc1_weight[e].to(torch::kDouble), x[t].to(torch::kDouble));
      if (moe->experts_fc1_bias.defined()) h = h + moe->experts_fc1_bias[e].to(torch::kDouble);
      h = apply_activation(h, act);
      torch::Tensor o = torch::matmul(moe->experts_fc2_weight[e].to(torch::kDouble), h);
      if (moe->experts_fc2_bias.defined()) o = o + moe->experts_fc2_bias[e].to(torch::kDouble);
      y[t].add_(r.gates[t][c].item<double>() * o);
    }
  }
  return y;
}

class MoELayerReference : public ::testing::TestWithParam<std::tuple<double, bool>> {};

TEST_P(MoELayerReference, OutputEqualsNaivePerTokenLoop) {
  const auto [capacity_factor, bias] = GetParam();
  torch::manual_seed(3);
  const ModelConfig cfg = moe_config(capacity_factor, bias);
  MoELayer moe(cfg);
  randomise_biases(moe);
  const torch::Tensor x = torch::randn({10, cfg.d_model});
  torch::Tensor mask = torch::ones({10}, torch::kBool);
  mask[4] = false;
  mask[9] = false;

  const MoEOutput out = moe->forward(x, mask);
  const RoutingResult r = route_tokens(moe->router_logits(x), mask, 2, capacity_factor, true);
  if (capacity_factor > 0) {
    EXPECT_GT(r.dropped, 0) << "the example is meant to exercise capacity dropping";
  }
  const torch::Tensor expected = naive_reference(moe, x, r, cfg.activation);
  EXPECT_TRUE(torch::allclose(out.hidden.to(torch::kDouble), expected, 1e-5, 1e-6))
      << "max diff " << testing::max_abs_diff(out.hidden, expected);
  // Padded tokens receive nothing.
  EXPECT_EQ(out.hidden[4].abs().sum().item<float>(), 0.0f);
  EXPECT_EQ(out.hidden[9].abs().sum().item<float>(), 0.0f);
  EXPECT_TRUE(out.stats.tokens_per_expert.equal(r.tokens_per_expert));
  EXPECT_EQ(out.stats.dropped, r.dropped);
  EXPECT_EQ(out.stats.tokens_per_expert.sum().item<int64_t>() + out.stats.dropped, 8 * 2);
}

INSTANTIATE_TEST_SUITE_P(CapacityAndBias, MoELayerReference,
                         ::testing::Values(std::make_tuple(0.0, true), std::make_tuple(0.75, true),
                                           std::make_tuple(0.75, false)));

TEST(MoELayer, PermuteGroupsByExpertInTokenOrder) {
  torch::manual_seed(4);
  const ModelConfig cfg = moe_config(0.0);
  MoELayer moe(cfg);
  const torch::Tensor x = torch::randn({7, cfg.d_model});
  const torch::Tensor mask = torch::ones({7}, torch::kBool);
  const RoutingResult r = route_tokens(moe->router_logits(x), mask, 2, 0.0, true);
  const PermutedTokens p = permute_tokens(x, r);
  ASSERT_EQ(p.hidden.size(0), 14);
  int64_t offset = 0;
  for (int64_t e = 0; e < 4; ++e) {
    const int64_t count = p.tokens_per_expert[static_cast<size_t>(e)];
    std::vector<int64_t> expected_tokens;
    for (int64_t t = 0; t < 7; ++t) {
      if ((r.expert_index[t] == e).any().item<bool>()) expected_tokens.push_back(t);
    }
    ASSERT_EQ(count, static_cast<int64_t>(expected_tokens.size())) << "expert " << e;
    for (int64_t i = 0; i < count; ++i) {
      EXPECT_EQ(p.token_index[offset + i].item<int64_t>(), expected_tokens[static_cast<size_t>(i)]);
      EXPECT_TRUE(p.hidden[offset + i].equal(x[expected_tokens[static_cast<size_t>(i)]]));
    }
    offset += count;
  }
  // With unit outputs, unpermute sums each token's gates: 1 after renormalisation.
  const torch::Tensor summed = unpermute_tokens(torch::ones_like(p.hidden), p, 7);
  EXPECT_TRUE(torch::allclose(summed, torch::ones({7, cfg.d_model}), 1e-6, 1e-6));
}

TEST(MoELayer, ExpertWithZeroTokensWorksForwardAndBackward) {
  torch::manual_seed(5);
  const ModelConfig cfg = moe_config(0.0);
  MoELayer moe(cfg);
  const torch::Tensor x = torch::rand({9, cfg.d_model}) + 0.1;  // all positive
  {
    torch::NoGradGuard no_grad;
    moe->router->weight[3].fill_(-10.0);  // expert 3's logit is very negative for every token
  }
  const MoEOutput out = moe->forward(x, torch::ones({9}, torch::kBool));
  ASSERT_EQ(out.stats.tokens_per_expert[3].item<int64_t>(), 0);
  EXPECT_TRUE(torch::isfinite(out.hidden).all().item<bool>());
  (out.hidden.pow(2).sum() + out.stats.aux_loss + out.stats.z_loss).backward();
  for (const auto& p : moe->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
  const torch::Tensor g = moe->experts_fc1_weight.grad();
  EXPECT_EQ(g[3].abs().sum().item<float>(), 0.0f);
  for (int64_t e = 0; e < 3; ++e) EXPECT_GT(g[e].abs().sum().item<float>(), 0.0f) << "expert " << e;
  EXPECT_GT(moe->router->weight.grad().abs().sum().item<float>(), 0.0f);
}

TEST(MoELayer, ParametersAreStackedPerExpert) {
  ModelConfig cfg = moe_config(1.0);
  cfg.moe.d_ff_expert = 10;
  MoELayer moe(cfg);
  EXPECT_EQ(moe->experts_fc1_weight.sizes(), torch::IntArrayRef({4, 10, cfg.d_model}));
  EXPECT_EQ(moe->experts_fc1_bias.sizes(), torch::IntArrayRef({4, 10}));
  EXPECT_EQ(moe->experts_fc2_weight.sizes(), torch::IntArrayRef({4, cfg.d_model, 10}));
  EXPECT_EQ(moe->experts_fc2_bias.sizes(), torch::IntArrayRef({4, cfg.d_model}));
  EXPECT_EQ(moe->router->weight.sizes(), torch::IntArrayRef({4, cfg.d_model}));
  std::set<std::string> names;
  for (const auto& p : moe->named_parameters()) names.insert(p.key());
  EXPECT_EQ(names, (std::set<std::string>{"router.weight", "experts_fc1_weight", "experts_fc1_bias",
                                          "experts_fc2_weight", "experts_fc2_bias"}));
}

TEST(MoELayer, RouterRunsInFp32WithBf16Parameters) {
  torch::manual_seed(6);
  const ModelConfig cfg = moe_config(1.25);
  MoELayer moe(cfg);
  for (auto& p : moe->parameters()) p.set_data(p.data().to(torch::kBFloat16));
  const torch::Tensor x = torch::randn({6, cfg.d_model}).to(torch::kBFloat16);
  EXPECT_EQ(moe->router_logits(x).scalar_type(), torch::kFloat);
  const MoEOutput out = moe->forward(x, torch::ones({6}, torch::kBool));
  EXPECT_EQ(out.hidden.scalar_type(), torch::kBFloat16);
  EXPECT_EQ(out.stats.aux_loss.scalar_type(), torch::kFloat);
  EXPECT_EQ(out.stats.z_loss.scalar_type(), torch::kFloat);
  EXPECT_TRUE(torch::isfinite(out.hidden).all().item<bool>());
}

TEST(MoELayer, TokenDropoutScalesTheOutputInEvalAndDropsInTraining) {
  ModelConfig cfg = moe_config(0.0);
  cfg.dropout = 0.0;
  torch::manual_seed(8);
  MoELayer plain(cfg);
  cfg.moe.token_dropout = 0.2;
  torch::manual_seed(8);  // the same weights
  MoELayer dropping(cfg);
  const torch::Tensor x = torch::randn({10, cfg.d_model});
  const torch::Tensor mask = torch::ones({10}, torch::kBool);
  plain->eval();
  dropping->eval();
  const torch::Tensor reference = plain->forward(x, mask).hidden;
  EXPECT_TRUE(torch::allclose(dropping->forward(x, mask).hidden, reference * 0.8, 1e-6, 1e-6));
  dropping->train();
  const torch::Tensor trained = dropping->forward(x, mask).hidden;
  // Dropout: each element zeroed, or kept and scaled by 1 / 0.8.
  const torch::Tensor kept = trained.ne(0);
  EXPECT_TRUE(kept.logical_not().any().item<bool>());
  EXPECT_TRUE(torch::allclose(trained.masked_select(kept), (reference / 0.8).masked_select(kept), 1e-5, 1e-5));
}

TEST(MoELayer, RejectsBadShapes) {
  const ModelConfig cfg = moe_config(1.0);
  MoELayer moe(cfg);
  EXPECT_THROW(moe->forward(torch::randn({4, cfg.d_model + 1}), torch::ones({4}, torch::kBool)), std::invalid_argument);
  EXPECT_THROW(moe->forward(torch::randn({4, cfg.d_model}), torch::ones({5}, torch::kBool)), std::invalid_argument);
  EXPECT_THROW(moe->forward(torch::randn({2, 2, cfg.d_model}), torch::ones({4}, torch::kBool)), std::invalid_argument);
  EXPECT_THROW(moe->expert_forward(torch::randn({3, cfg.d_model}), {1, 1, 0}), std::invalid_argument);
}

}  // namespace
}  // namespace moetrain::models
