// checkpoint(): same values and gradients as running the function directly,
// with dropout replayed from the saved RNG state.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <string>
#include <vector>

#include "models/activation_checkpoint.h"

namespace moetrain::models {
namespace {

struct LayerTensors {
  torch::Tensor x, w, frozen;
};

LayerTensors make_setup() {
  torch::manual_seed(40);
  LayerTensors s;
  s.x = torch::randn({6, 5}, torch::requires_grad());
  s.w = torch::randn({5, 5}, torch::requires_grad());
  s.frozen = torch::randn({5});
  return s;
}

// Dropout makes the result depend on the generator; the count output is an
// integer and must come back non-differentiable.
std::vector<torch::Tensor> layer_fn(const LayerTensors& s, const std::vector<torch::Tensor>& in) {
  const torch::Tensor h = torch::dropout(torch::tanh(torch::matmul(in[0], s.w) + s.frozen), 0.5, true);
  return {h, h.pow(2).mean(), (h != 0).sum()};
}

TEST(ActivationCheckpoint, SameOutputsGradientsAndRandomStream) {
  LayerTensors direct = make_setup();
  torch::manual_seed(41);
  const std::vector<torch::Tensor> a = layer_fn(direct, {direct.x});
  (a[0].sum() + 3.0 * a[1]).backward();
  const double next_direct = torch::rand({1}).item<double>();

  LayerTensors ck = make_setup();
  torch::manual_seed(41);
  const std::vector<torch::Tensor> b =
      checkpoint([&ck](const std::vector<torch::Tensor>& in) { return layer_fn(ck, in); }, {ck.x}, {ck.w, ck.frozen});
  ASSERT_EQ(b.size(), 3u);
  ASSERT_NE(b[0].grad_fn(), nullptr);
  EXPECT_NE(b[0].grad_fn()->name().find("CheckpointFunction"), std::string::npos) << b[0].grad_fn()->name();
  EXPECT_FALSE(b[2].requires_grad());
  EXPECT_TRUE(a[0].equal(b[0]));
  EXPECT_TRUE(a[2].equal(b[2]));
  (b[0].sum() + 3.0 * b[1]).backward();
  const double next_ckpt = torch::rand({1}).item<double>();

  EXPECT_TRUE(torch::allclose(direct.x.grad(), ck.x.grad(), 0.0, 1e-7));
  EXPECT_TRUE(torch::allclose(direct.w.grad(), ck.w.grad(), 0.0, 1e-7));
  EXPECT_FALSE(ck.frozen.grad().defined());
  EXPECT_EQ(next_direct, next_ckpt);
}

TEST(ActivationCheckpoint, WithoutRngReplayTheGradientsWouldDiffer) {
  // The control for the test above: recomputing under a different generator
  // state gives another dropout mask, hence other gradients.
  LayerTensors direct = make_setup();
  torch::manual_seed(41);
  layer_fn(direct, {direct.x})[0].sum().backward();
  LayerTensors other = make_setup();
  torch::manual_seed(42);
  layer_fn(other, {other.x})[0].sum().backward();
  EXPECT_FALSE(torch::allclose(direct.w.grad(), other.w.grad()));
}

TEST(ActivationCheckpoint, OnlyInputsGradientWhenParamsAreFrozen) {
  LayerTensors s = make_setup();
  s.w.requires_grad_(false);
  const std::vector<torch::Tensor> out =
      checkpoint([&s](const std::vector<torch::Tensor>& in) { return layer_fn(s, in); }, {s.x}, {s.w, s.frozen});
  out[0].sum().backward();
  EXPECT_TRUE(s.x.grad().defined());
  EXPECT_FALSE(s.w.grad().defined());
}

// A parameter's gradient hook (the DP gradient reducer's) sees its gradient
// once per backward, as without checkpointing, and no undefined one with a
// defined value: an extra report would reduce a bucket early or twice.
TEST(ActivationCheckpoint, ParameterHooksSeeEachGradientOnce) {
  LayerTensors s = make_setup();
  int defined_calls = 0;
  torch::Tensor seen;
  s.w.register_hook([&](const torch::Tensor& g) {
    if (!g.defined()) return;
    ++defined_calls;
    seen = g.clone();
  });
  torch::manual_seed(41);
  const std::vector<torch::Tensor> out =
      checkpoint([&s](const std::vector<torch::Tensor>& in) { return layer_fn(s, in); }, {s.x}, {s.w, s.frozen});
  out[0].sum().backward();
  EXPECT_EQ(defined_calls, 1);
  ASSERT_TRUE(seen.defined());
  EXPECT_TRUE(seen.equal(s.w.grad()));
}

TEST(ActivationCheckpoint, RejectsUndefinedInputs) {
  auto fn = [](const std::vector<torch::Tensor>& in) { return in; };
  EXPECT_THROW(checkpoint(fn, {torch::Tensor()}, {}), std::invalid_argument);
  EXPECT_THROW(checkpoint(nullptr, {torch::ones({1})}, {}), std::invalid_argument);
}

}  // namespace
}  // namespace moetrain::models
