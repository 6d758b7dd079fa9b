#include <gtest/gtest.h>

#include <cmath>

#include "optim/adamw.h"
#include "optim/flat_parameters.h"
#include "optim/grad_clip.h"
#include "optim/loss_scaler.h"
#include "optim/lr_schedule.h"

using namespace moetrain::optim;

namespace {
FlatParameters make_flat(torch::Tensor& w, torch::Tensor& b) {
  w = torch::tensor({1.0f, -2.0f, 0.5f, 4.0f}).view({2, 2}).requires_grad_();
  b = torch::tensor({0.25f, -0.75f}).requires_grad_();
  return FlatParameters({{"layer.weight", w}, {"layer.bias", b}}, torch::kFloat32,
                        [](const std::string&, const torch::Tensor& p) { return p.dim() >= 2; });
}
}  // namespace

TEST(AdamW, MatchesHandComputedTwoSteps) {
  torch::Tensor w, b;
  auto flat = make_flat(w, b);
  OptimConfig cfg;
  cfg.beta1 = 0.9;
  cfg.beta2 = 0.99;
  cfg.eps = 1e-8;
  cfg.weight_decay = 0.1;
  AdamW adam(cfg, flat.numel(), flat.master_decay_segments(), flat.master().options());
  const std::vector<float> g = {0.5f, -1.0f, 2.0f, 0.0f, 1.0f, -0.5f};
  const std::vector<float> p0 = {1.0f, -2.0f, 0.5f, 4.0f, 0.25f, -0.75f};
  const double lr = 0.01;

  // Hand computation, element by element, as torch.optim.AdamW defines it.
  std::vector<double> p(p0.begin(), p0.end()), m(6, 0.0), v(6, 0.0);
  for (int t = 1; t <= 2; ++t) {
    for (int i = 0; i < 6; ++i) {
      const bool decay = i < 4;  // the 2-D weight decays, the bias does not
      if (decay) p[i] *= 1.0 - lr * cfg.weight_decay;
      m[i] = 0.9 * m[i] + 0.1 * g[i];
      v[i] = 0.99 * v[i] + 0.01 * g[i] * g[i];
      const double mhat = m[i] / (1 - std::pow(0.9, t));
      const double denom = std::sqrt(v[i]) / std::sqrt(1 - std::pow(0.99, t)) + 1e-8;
      p[i] -= lr * mhat / denom;
    }
    flat.grads().copy_(torch::tensor(g));
    adam.step(flat.master(), flat.grads(), lr);
  }
  for (int i = 0; i < 6; ++i) {
    EXPECT_NEAR(flat.master()[i].item<double>(), p[i], 1e-6) << "element " << i;
  }
  // The model's parameters alias the master buffer under fp32 compute.
  EXPECT_NEAR(w[0][0].item<double>(), p[0], 1e-6);
  EXPECT_NEAR(b[1].item<double>(), p[5], 1e-6);
  EXPECT_EQ(adam.steps_taken(), 2);
}

TEST(FlatParameters, ShardsEachUnitEvenlyWithPadding) {
  // Two units: "a" with 5 elements, "b" with 3; 2 shards pad them to 6 and 4.
  auto a1 = torch::arange(1, 4, torch::kFloat32).requires_grad_();               // a.x: 3
  auto a2 = torch::arange(4, 6, torch::kFloat32).requires_grad_();               // a.y: 2
  auto b1 = torch::arange(6, 9, torch::kFloat32).view({3, 1}).requires_grad_();  // b.z: 3
  auto all = [](const std::string&, const torch::Tensor&) { return true; };
  std::vector<std::pair<std::string, torch::Tensor>> named = {{"a.x", a1}, {"a.y", a2}, {"b.z", b1}};
  FlatParameters r1(named, torch::kFloat32, all, {2, 1, true, true});
  ASSERT_EQ(r1.units().size(), 2u);
  EXPECT_EQ(r1.padded_numel(), 10);
  EXPECT_EQ(r1.local_numel(), 5);  // 3 of unit a + 2 of unit b
  // Rank 1 holds elements 3..5 of unit a (4, 5, padding) and 2..3 of b (8, padding).
  EXPECT_TRUE(torch::equal(r1.master(), torch::tensor({4.f, 5.f, 0.f, 8.f, 0.f})));
  EXPECT_EQ(r1.grads().numel(), 5);
  const auto piece = r1.local_piece(r1.entry("a.y"));
  EXPECT_EQ(piece.begin, 0);
  EXPECT_EQ(piece.end, 2);
  EXPECT_EQ(piece.master_offset, 0);
  EXPECT_EQ(r1.local_piece(r1.entry("a.x")).end, 0);  // nothing of a.x on rank 1
  const auto segments = r1.master_decay_segments();
  ASSERT_EQ(segments.size(), 2u);
  EXPECT_EQ(segments[0].end, 2);
  EXPECT_EQ(segments[1].begin, 3);
  EXPECT_EQ(unit_of("encoder.layers.11.moe.experts_fc1_weight"), "encoder.layers.11");
  EXPECT_EQ(unit_of("decoder.final_norm.weight"), "decoder.final_norm");
  EXPECT_EQ(unit_of("embed_tokens.weight"), "embed_tokens");
}

TEST(FlatParameters, AccumulatesGradsAcrossMicroBatchesInFp32) {
  torch::Tensor w, b;
  auto flat = make_flat(w, b);
  for (int micro = 0; micro < 3; ++micro) {
    auto loss = (w * 2.0).sum() + b.sum();
    loss.backward();
    flat.accumulate_grads();
    EXPECT_FALSE(w.grad().defined());
  }
  EXPECT_TRUE(torch::equal(flat.grads(), torch::tensor({6.f, 6.f, 6.f, 6.f, 3.f, 3.f})));
  const auto segments = flat.master_decay_segments();
  ASSERT_EQ(segments.size(), 2u);
  EXPECT_TRUE(segments[0].weight_decay);
  EXPECT_EQ(segments[0].end, 4);
  EXPECT_FALSE(segments[1].weight_decay);
}

TEST(FlatParameters, Bf16ModelCopiesFromFp32Master) {
  auto w = torch::tensor({1.0f, 1.0f / 3.0f}).requires_grad_();
  FlatParameters flat({{"w", w}}, torch::kBFloat16, [](const std::string&, const torch::Tensor&) { return true; });
  EXPECT_EQ(w.scalar_type(), torch::kBFloat16);
  flat.master()[1] = 0.5f;
  flat.copy_master_to_model();
  EXPECT_EQ(w[1].item<float>(), 0.5f);
  EXPECT_EQ(flat.master().scalar_type(), torch::kFloat32);
}

TEST(LrSchedule, WarmupThenCosineToFloor) {
  OptimConfig cfg;
  cfg.lr = 1.0;
  cfg.min_lr = 0.1;
  cfg.warmup_steps = 4;
  cfg.schedule = ScheduleType::Cosine;
  LrSchedule s(cfg, 14);
  EXPECT_DOUBLE_EQ(s.lr_at(0), 0.25);
  EXPECT_DOUBLE_EQ(s.lr_at(3), 1.0);
  EXPECT_DOUBLE_EQ(s.lr_at(4), 1.0);                // start of decay
  EXPECT_NEAR(s.lr_at(9), 0.1 + 0.9 * 0.5, 1e-12);  // halfway through 10 decay steps
  EXPECT_DOUBLE_EQ(s.lr_at(14), 0.1);
  EXPECT_DOUBLE_EQ(s.lr_at(100), 0.1);
}

TEST(LrSchedule, LinearAndConstant) {
  OptimConfig cfg;
  cfg.lr = 2.0;
  cfg.schedule = ScheduleType::Linear;
  LrSchedule linear(cfg, 10);
  EXPECT_DOUBLE_EQ(linear.lr_at(0), 2.0);
  EXPECT_DOUBLE_EQ(linear.lr_at(5), 1.0);
  EXPECT_DOUBLE_EQ(linear.lr_at(10), 0.0);
  cfg.schedule = ScheduleType::Constant;
  cfg.warmup_steps = 2;
  LrSchedule constant(cfg, 10);
  EXPECT_DOUBLE_EQ(constant.lr_at(0), 1.0);
  EXPECT_DOUBLE_EQ(constant.lr_at(7), 2.0);
}

TEST(DynamicLossScaler, BacksOffWithHysteresisGrowsAndGivesUpAtMinimum) {
  LossScaleConfig cfg;
  cfg.initial = 8.0;
  cfg.hysteresis = 2;
  cfg.growth_interval = 3;
  cfg.min = 2.0;
  DynamicLossScaler scaler(cfg, true);
  EXPECT_TRUE(scaler.update(true));  // first overflow: hysteresis absorbs it
  EXPECT_EQ(scaler.scale(), 8.0);
  EXPECT_TRUE(scaler.update(true));  // second: halve
  EXPECT_EQ(scaler.scale(), 4.0);
  for (int i = 0; i < 3; ++i) EXPECT_TRUE(scaler.update(false));
  EXPECT_EQ(scaler.scale(), 8.0);  // grew after 3 clean steps
  scaler.update(true);
  scaler.update(true);
  scaler.update(true);
  scaler.update(true);
  EXPECT_EQ(scaler.scale(), 2.0);
  EXPECT_FALSE(scaler.update(true));  // overflow at the minimum: cannot continue
  DynamicLossScaler off(cfg, false);
  EXPECT_EQ(off.scale(), 1.0);
}

TEST(GradClip, ScalesToMaxNorm) {
  auto g = torch::tensor({3.0f, 4.0f});
  const double norm = global_grad_norm(g);
  EXPECT_NEAR(norm, 5.0, 1e-6);
  clip_grads(g, norm, 1.0);
  EXPECT_NEAR(global_grad_norm(g), 1.0, 1e-5);
  auto small = torch::tensor({0.3f, 0.4f});
  EXPECT_EQ(clip_grads(small, 0.5, 1.0), 1.0);
}
