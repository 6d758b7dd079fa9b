// Building blocks: Linear, Norm, positions and the dense FeedForward.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "model_test_util.h"
#include "models/feed_forward.h"
#include "models/linear.h"
#include "models/norm.h"
#include "models/positions.h"

namespace moetrain::models {
namespace {

TEST(Positions, SinusoidalTableFollowsVaswani) {
  const torch::Tensor table = sinusoidal_table(8, 6);
  EXPECT_NEAR(table[0][0].item<double>(), 0.0, 1e-7);
  EXPECT_NEAR(table[0][1].item<double>(), 1.0, 1e-7);
  EXPECT_NEAR(table[1][0].item<double>(), std::sin(1.0), 1e-6);
  EXPECT_NEAR(table[1][1].item<double>(), std::cos(1.0), 1e-6);
  EXPECT_NEAR(table[5][2].item<double>(), std::sin(5.0 / std::pow(10000.0, 2.0 / 6)), 1e-6);
  EXPECT_NEAR(table[5][3].item<double>(), std::cos(5.0 / std::pow(10000.0, 2.0 / 6)), 1e-6);
  EXPECT_NEAR(table[7][5].item<double>(), std::cos(7.0 / std::pow(10000.0, 4.0 / 6)), 1e-6);
}

TEST(Positions, AbsolutePositionsAddTheTableInTheInputDtype) {
  ModelConfig cfg = testing::tiny_config();
  cfg.position = PositionType::Sinusoidal;
  AbsolutePositions pos(cfg);
  const torch::Tensor x = torch::zeros({2, 5, cfg.d_model}, torch::kBFloat16);
  const torch::Tensor y = pos(x, 3);
  EXPECT_EQ(y.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(y[1].to(torch::kFloat)
                  .equal(sinusoidal_table(8, cfg.d_model).narrow(0, 3, 5).to(torch::kBFloat16).to(torch::kFloat)));
  cfg.position = PositionType::Rotary;
  EXPECT_THROW(AbsolutePositions{cfg}, std::invalid_argument);
}

TEST(Positions, BeyondMaxPositionsIsAClearError) {
  ModelConfig cfg = testing::tiny_config();
  cfg.position = PositionType::Learned;
  cfg.max_positions = 8;
  AbsolutePositions pos(cfg);
  EXPECT_NO_THROW(pos(torch::zeros({1, 8, cfg.d_model})));
  try {
    pos(torch::zeros({1, 9, cfg.d_model}));
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("9"), std::string::npos) << msg;
    EXPECT_NE(msg.find("max_positions 8"), std::string::npos) << msg;
  }
  EXPECT_THROW(apply_rotary(torch::zeros({1, 2, 9, 4}), 10000.0, 8), std::invalid_argument);
  EXPECT_THROW(apply_rotary(torch::zeros({1, 2, 4, 3}), 10000.0, 8), std::invalid_argument);
}

TEST(Positions, RotaryScoresDependOnlyOnRelativePosition) {
  torch::manual_seed(13);
  const torch::Tensor q = torch::randn({1, 1, 1, 8});
  const torch::Tensor k = torch::randn({1, 1, 1, 8});
  auto score = [&](int64_t m, int64_t n) {
    return (apply_rotary(q, 10000.0, 64, m) * apply_rotary(k, 10000.0, 64, n)).sum().item<double>();
  };
  EXPECT_NEAR(score(3, 1), score(10, 8), 1e-5);
  EXPECT_NEAR(score(0, 5), score(20, 25), 1e-5);
  EXPECT_GT(std::abs(score(3, 1) - score(3, 2)), 1e-4);  // it does depend on the distance
  // A rotation keeps norms.
  EXPECT_NEAR(apply_rotary(q, 10000.0, 64, 17).norm().item<double>(), q.norm().item<double>(), 1e-5);
  // Position 0 is the identity.
  EXPECT_TRUE(torch::allclose(apply_rotary(q, 10000.0, 64, 0), q));
}

TEST(Norm, LayerNormAndRMSNormInFp32) {
  torch::manual_seed(14);
  const torch::Tensor x = torch::randn({3, 10}) * 5 + 2;
  Norm ln(NormType::LayerNorm, 10, 1e-5);
  const torch::Tensor y = ln(x);
  EXPECT_TRUE(torch::allclose(y.mean(-1), torch::zeros({3}), 1e-5, 1e-5));
  EXPECT_TRUE(torch::allclose(y.var(-1, /*unbiased=*/false), torch::ones({3}), 1e-3, 1e-3));
  Norm rms(NormType::RMSNorm, 10, 1e-6);
  EXPECT_FALSE(rms->bias.defined());
  const torch::Tensor r = rms(x);
  EXPECT_TRUE(torch::allclose(r.pow(2).mean(-1), torch::ones({3}), 1e-4, 1e-4));
  EXPECT_TRUE(torch::allclose(r, x / x.pow(2).mean(-1, true).add(1e-6).sqrt(), 1e-5, 1e-6));
  // bf16 parameters and input: statistics in fp32, result in bf16.
  for (auto& p : ln->parameters()) p.set_data(p.data().to(torch::kBFloat16));
  const torch::Tensor xb = x.to(torch::kBFloat16);
  const torch::Tensor yb = ln(xb);
  EXPECT_EQ(yb.scalar_type(), torch::kBFloat16);
  const torch::Tensor ref = torch::layer_norm(xb.to(torch::kFloat), {10}, {}, {}, 1e-5).to(torch::kBFloat16);
  EXPECT_TRUE(yb.equal(ref));
  EXPECT_THROW(ln(torch::randn({3, 9})), std::invalid_argument);
}

TEST(Linear, ShapesInitAndErrors) {
  torch::manual_seed(15);
  Linear lin(64, 32, true, 0.02);
  EXPECT_EQ(lin->weight.sizes(), torch::IntArrayRef({32, 64}));
  EXPECT_TRUE(lin->bias.equal(torch::zeros({32})));
  EXPECT_NEAR(lin->weight.std().item<double>(), 0.02, 0.002);
  const torch::Tensor x = torch::randn({2, 5, 64});
  EXPECT_TRUE(torch::allclose(lin(x), torch::matmul(x, lin->weight.t()) + lin->bias, 1e-5, 1e-6));
  Linear no_bias(4, 3, false, 0.02);
  EXPECT_FALSE(no_bias->bias.defined());
  EXPECT_EQ(no_bias->named_parameters().size(), 1u);
  EXPECT_THROW(lin(torch::randn({2, 63})), std::invalid_argument);
}

TEST(FeedForward, ComputesFc2OfActivatedFc1ForEachActivation) {
  for (Activation act : {Activation::ReLU, Activation::GELU, Activation::SiLU}) {
    ModelConfig cfg = testing::tiny_config();
    cfg.activation = act;
    torch::manual_seed(16);
    FeedForward ffn(cfg);
    const torch::Tensor x = torch::randn({2, 3, cfg.d_model});
    const torch::Tensor h = torch::matmul(x, ffn->fc1->weight.t()) + ffn->fc1->bias;
    const torch::Tensor a = act == Activation::ReLU   ? h.clamp_min(0)
                            : act == Activation::GELU ? 0.5 * h * (1 + torch::erf(h / std::sqrt(2.0)))
                                                      : h * torch::sigmoid(h);
    const torch::Tensor expected = torch::matmul(a, ffn->fc2->weight.t()) + ffn->fc2->bias;
    EXPECT_TRUE(torch::allclose(ffn(x), expected, 1e-5, 1e-6)) << static_cast<int>(act);
    EXPECT_EQ(ffn->fc1->weight.sizes(), torch::IntArrayRef({cfg.d_ff, cfg.d_model}));
  }
}

}  // namespace
}  // namespace moetrain::models
