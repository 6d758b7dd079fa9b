// Attention masks and the multi-head attention module.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "model_test_util.h"
#include "models/attention.h"

namespace moetrain::models {
namespace {

torch::Tensor bool_matrix(const std::vector<std::string>& rows) {
  torch::Tensor t =
      torch::zeros({static_cast<int64_t>(rows.size()), static_cast<int64_t>(rows[0].size())}, torch::kBool);
  for (size_t i = 0; i < rows.size(); ++i)
    for (size_t j = 0; j < rows[i].size(); ++j) t[static_cast<int64_t>(i)][static_cast<int64_t>(j)] = rows[i][j] == '1';
  return t;
}

torch::Tensor padding(const std::vector<int>& real) {
  torch::Tensor t = torch::zeros({1, static_cast<int64_t>(real.size())}, torch::kBool);
  for (size_t i = 0; i < real.size(); ++i) t[0][static_cast<int64_t>(i)] = real[i] != 0;
  return t;
}

TEST(AttentionMask, CausalGlobalWithPadding) {
  // Last token padded: nobody sees it, and it sees only itself plus earlier keys.
  const torch::Tensor m = make_self_attention_mask(padding({1, 1, 1, 1, 0}), /*causal=*/true, 0);
  ASSERT_EQ(m.sizes(), torch::IntArrayRef({1, 1, 5, 5}));
  EXPECT_TRUE(m[0][0].equal(bool_matrix({"10000", "11000", "11100", "11110", "11111"})));
}

TEST(AttentionMask, CausalLocalWindowCoversExactlyWindowPositions) {
  // window 2: query i sees keys i-1 and i.
  const torch::Tensor m = make_self_attention_mask(padding({1, 1, 1, 1, 1}), true, 2);
  EXPECT_TRUE(m[0][0].equal(bool_matrix({"10000", "11000", "01100", "00110", "00011"})));
}

TEST(AttentionMask, EncoderLocalWindowIsSymmetricHalfWindow) {
  // window 4 (or 5): |i - j| <= 2.
  const torch::Tensor expected = bool_matrix({"111000", "111100", "111110", "011111", "001111", "000111"});
  EXPECT_TRUE(make_self_attention_mask(padding({1, 1, 1, 1, 1, 1}), false, 4)[0][0].equal(expected));
  EXPECT_TRUE(make_self_attention_mask(padding({1, 1, 1, 1, 1, 1}), false, 5)[0][0].equal(expected));
}

TEST(AttentionMask, PaddedQueriesAlwaysSeeThemselves) {
  // Left padding plus a window: padded rows 0 and 1 would otherwise be empty.
  const torch::Tensor m = make_self_attention_mask(padding({0, 0, 1, 1}), false, 2);
  EXPECT_TRUE(m[0][0].equal(bool_matrix({"1000", "0110", "0011", "0011"})));
}

TEST(AttentionMask, CrossAttentionMasksPaddedSourceAndSurvivesEmptySource) {
  torch::Tensor src = torch::zeros({2, 3}, torch::kBool);
  src[0][0] = true;
  src[0][1] = true;  // row 0: keys 0, 1 real; row 1: all padding
  const torch::Tensor m = make_cross_attention_mask(src, 2);
  ASSERT_EQ(m.sizes(), torch::IntArrayRef({2, 1, 2, 3}));
  EXPECT_TRUE(m[0][0].equal(bool_matrix({"110", "110"})));
  EXPECT_TRUE(m[1][0].equal(bool_matrix({"111", "111"})));
}

TEST(AttentionMask, RejectsNonBoolMasks) {
  EXPECT_THROW(make_self_attention_mask(torch::ones({1, 3}, torch::kLong), true, 0), std::invalid_argument);
  EXPECT_THROW(make_self_attention_mask(torch::ones({3}, torch::kBool), true, 0), std::invalid_argument);
  EXPECT_THROW(make_cross_attention_mask(torch::ones({1, 3}, torch::kFloat), 2), std::invalid_argument);
  EXPECT_THROW(make_self_attention_masks(AttentionType::Local, 0, torch::ones({1, 3}, torch::kBool), false),
               std::invalid_argument);
}

class AttentionKinds : public ::testing::TestWithParam<AttentionType> {};

TEST_P(AttentionKinds, CausalSelfAttentionIgnoresFutureAndPaddedKeys) {
  torch::manual_seed(11);
  ModelConfig cfg = testing::tiny_config();
  cfg.attention = GetParam();
  cfg.local_window = 2;
  MultiHeadAttention attn(cfg, cfg.attention, /*rotary=*/true);
  const int64_t t = 6;
  torch::Tensor pad = torch::ones({1, t}, torch::kBool);
  pad[0][t - 1] = false;
  const AttentionMasks masks = make_self_attention_masks(cfg.attention, cfg.local_window, pad, true);
  const torch::Tensor x = torch::randn({1, t, cfg.d_model});
  const torch::Tensor y = attn(x, x, masks);
  EXPECT_TRUE(torch::isfinite(y).all().item<bool>());
  for (int64_t changed = 0; changed < t; ++changed) {
    torch::Tensor x2 = x.clone();
    x2[0][changed].add_(1.0);
    const torch::Tensor y2 = attn(x2, x2, masks);
    for (int64_t q = 0; q < t - 1; ++q) {  // real queries
      const double diff = testing::max_abs_diff(y[0][q], y2[0][q]);
      const bool may_see = changed == q || (changed < q && changed != t - 1 &&
                                            (cfg.attention != AttentionType::Local || q - changed < 2));
      if (may_see) {
        EXPECT_GT(diff, 1e-4) << "query " << q << " should see key " << changed;
      } else {
        EXPECT_LT(diff, 1e-6) << "query " << q << " must not see key " << changed;
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Kinds, AttentionKinds,
                         ::testing::Values(AttentionType::Global, AttentionType::Local, AttentionType::Dynamic),
                         [](const auto& info) { return testing::attention_name(info.param); });

TEST(Attention, DynamicGateMixesLocalAndGlobal) {
  torch::manual_seed(12);
  ModelConfig cfg = testing::tiny_config();
  MultiHeadAttention dynamic(cfg, AttentionType::Dynamic, false);
  const torch::Tensor pad = torch::ones({1, 5}, torch::kBool);
  const AttentionMasks masks = make_self_attention_masks(AttentionType::Dynamic, 2, pad, true);
  ASSERT_FALSE(masks.global.equal(masks.local));
  // Feeding the same mask twice makes both branches equal, isolating one of them.
  const AttentionMasks only_local{masks.local, masks.local};
  const AttentionMasks only_global{masks.global, masks.global};
  const torch::Tensor x = torch::randn({1, 5, cfg.d_model});
  torch::NoGradGuard no_grad;
  dynamic->gate->weight.zero_();
  dynamic->gate->bias.fill_(40.0);  // g = 1: pure local
  const torch::Tensor local = dynamic(x, x, only_local);
  const torch::Tensor global = dynamic(x, x, only_global);
  EXPECT_GT(testing::max_abs_diff(local, global), 1e-4);
  EXPECT_TRUE(torch::allclose(dynamic(x, x, masks), local, 1e-5, 1e-6));
  dynamic->gate->bias.fill_(-40.0);  // g = 0: pure global
  EXPECT_TRUE(torch::allclose(dynamic(x, x, masks), global, 1e-5, 1e-6));
  dynamic->gate->bias.zero_();  // g = 1/2; o_proj is affine, so the mix passes through it
  EXPECT_TRUE(torch::allclose(dynamic(x, x, masks), 0.5 * local + 0.5 * global, 1e-5, 1e-6));
}

TEST(Attention, ProjectionNamesAndShapes) {
  ModelConfig cfg = testing::tiny_config();
  MultiHeadAttention attn(cfg, AttentionType::Dynamic, false);
  std::vector<std::string> names;
  for (const auto& p : attn->named_parameters()) names.push_back(p.key());
  EXPECT_EQ(names,
            (std::vector<std::string>{"q_proj.weight", "q_proj.bias", "k_proj.weight", "k_proj.bias", "v_proj.weight",
                                      "v_proj.bias", "o_proj.weight", "o_proj.bias", "gate.weight", "gate.bias"}));
  EXPECT_EQ(attn->gate->weight.sizes(), torch::IntArrayRef({cfg.n_heads, cfg.d_model}));
  const torch::Tensor x = torch::randn({2, 3, cfg.d_model});
  const torch::Tensor mem = torch::randn({2, 4, cfg.d_model});
  MultiHeadAttention cross(cfg, AttentionType::Global, false);
  const torch::Tensor y =
      cross(x, mem, AttentionMasks{make_cross_attention_mask(torch::ones({2, 4}, torch::kBool), 3), {}, {}});
  EXPECT_EQ(y.sizes(), torch::IntArrayRef({2, 3, cfg.d_model}));
  EXPECT_THROW(cross(x, mem, AttentionMasks{}), std::invalid_argument);
  EXPECT_THROW(cross(x, torch::randn({2, 4, cfg.d_model + 2}), AttentionMasks{}), std::invalid_argument);
}

}  // namespace
}  // namespace moetrain::models
