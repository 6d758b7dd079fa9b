// Seq2SeqTransformer: masks end to end, gradients, tying, dtypes, activation
// checkpointing and the registered parameter names. Pipeline stages are in
// test_pipeline_stages.cpp.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <set>
#include <stdexcept>
#include <string>
#include <tuple>
#include <vector>

#include "model_test_util.h"
#include "models/seq2seq_transformer.h"

namespace moetrain::models {
namespace {

using testing::Batch;
using testing::make_batch;
using testing::max_abs_diff;
using testing::perturb;
using testing::tiny_config;

// Token cross-entropy over real target positions plus the weighted MoE losses,
// as the trainer will compute it.
torch::Tensor training_loss(const Seq2SeqOutput& out, const Batch& b, const ModelConfig& cfg) {
  const int64_t v = out.logits.size(-1);
  const torch::Tensor labels = b.tgt.roll(-1, 1);
  const torch::Tensor ce =
      torch::nn::functional::cross_entropy(out.logits.to(torch::kFloat).reshape({-1, v}), labels.reshape({-1}),
                                           torch::nn::functional::CrossEntropyFuncOptions().reduction(torch::kNone));
  const torch::Tensor mask = b.tgt_mask.reshape({-1}).to(torch::kFloat);
  return (ce * mask).sum() / mask.sum() + cfg.moe.aux_loss_coef * out.moe.aux_loss +
         cfg.moe.z_loss_coef * out.moe.z_loss;
}

std::set<std::string> parameter_names(const torch::nn::Module& m) {
  std::set<std::string> names;
  for (const auto& p : m.named_parameters()) names.insert(p.key());
  return names;
}

class DecoderCausality : public ::testing::TestWithParam<std::tuple<PositionType, AttentionType>> {};

TEST_P(DecoderCausality, PerturbingTargetTokenNeverChangesEarlierLogits) {
  ModelConfig cfg = tiny_config();
  std::tie(cfg.position, cfg.attention) = GetParam();
  torch::manual_seed(21);
  Seq2SeqTransformer model(cfg);
  model->eval();
  const Batch b = make_batch(cfg, 5, 6);
  const torch::Tensor base = model->forward(b.src, b.src_mask, b.tgt, b.tgt_mask).logits;
  for (int64_t t = 0; t < 6; ++t) {
    const torch::Tensor tgt = perturb(b.tgt, 0, t, cfg.vocab_size);
    const torch::Tensor logits = model->forward(b.src, b.src_mask, tgt, b.tgt_mask).logits;
    if (t > 0) {
      EXPECT_LT(max_abs_diff(logits[0].narrow(0, 0, t), base[0].narrow(0, 0, t)), 1e-6)
          << "positions before " << t << " changed";
    }
    EXPECT_GT(max_abs_diff(logits[0][t], base[0][t]), 1e-5) << "position " << t << " did not see its own token";
    EXPECT_LT(max_abs_diff(logits[1], base[1]), 1e-6) << "another batch row changed";
  }
}

INSTANTIATE_TEST_SUITE_P(PositionsAndAttention, DecoderCausality,
                         ::testing::Combine(::testing::Values(PositionType::Sinusoidal, PositionType::Learned,
                                                              PositionType::Rotary, PositionType::SinusoidalFairseq),
                                            ::testing::Values(AttentionType::Global, AttentionType::Local,
                                                              AttentionType::Dynamic)),
                         [](const auto& info) {
                           return testing::position_name(std::get<0>(info.param)) +
                                  testing::attention_name(std::get<1>(info.param));
                         });

class SourcePadding : public ::testing::TestWithParam<AttentionType> {};

TEST_P(SourcePadding, PaddedSourceTokensNeverChangeAnyOutput) {
  ModelConfig cfg = tiny_config();
  cfg.attention = GetParam();
  cfg.moe.capacity_factor = 1.0;  // padded tokens must not take capacity either
  torch::manual_seed(22);
  Seq2SeqTransformer model(cfg);
  model->eval();
  const Batch b = make_batch(cfg, 6, 5, /*src_pad=*/2);
  const Seq2SeqOutput base = model->forward(b.src, b.src_mask, b.tgt, b.tgt_mask);
  torch::Tensor src = perturb(perturb(b.src, 1, 4, cfg.vocab_size), 1, 5, cfg.vocab_size);  // padded
  const Seq2SeqOutput out = model->forward(src, b.src_mask, b.tgt, b.tgt_mask);
  EXPECT_LT(max_abs_diff(out.logits, base.logits), 1e-6);
  EXPECT_TRUE(out.moe.tokens_per_expert.equal(base.moe.tokens_per_expert));
  EXPECT_NEAR(out.moe.aux_loss.item<float>(), base.moe.aux_loss.item<float>(), 1e-7);
  // Control: a real source token does matter.
  src = perturb(b.src, 1, 3, cfg.vocab_size);
  EXPECT_GT(max_abs_diff(model->forward(src, b.src_mask, b.tgt, b.tgt_mask).logits[1], base.logits[1]), 1e-5);
}

INSTANTIATE_TEST_SUITE_P(Kinds, SourcePadding,
                         ::testing::Values(AttentionType::Global, AttentionType::Local, AttentionType::Dynamic),
                         [](const auto& info) { return testing::attention_name(info.param); });

TEST(LocalAttention, EncoderTokenOutsideTheWindowDoesNotInfluence) {
  ModelConfig cfg = tiny_config();
  cfg.attention = AttentionType::Local;
  cfg.local_window = 3;  // encoder: |i - j| <= 1
  cfg.encoder_layers = 1;
  cfg.moe.every = 1;  // the single layer is MoE (dropless)
  torch::manual_seed(23);
  Seq2SeqTransformer model(cfg);
  model->eval();
  const Batch b = make_batch(cfg, 7, 4, 0, 0);
  const torch::Tensor base = model->encode(b.src, b.src_mask).hidden;
  const int64_t j = 5;
  const torch::Tensor hidden = model->encode(perturb(b.src, 0, j, cfg.vocab_size), b.src_mask).hidden;
  for (int64_t i = 0; i < 7; ++i) {
    const double diff = max_abs_diff(hidden[0][i], base[0][i]);
    if (std::abs(i - j) <= 1) {
      EXPECT_GT(diff, 1e-5) << "position " << i << " is inside the window of " << j;
    } else {
      EXPECT_LT(diff, 1e-6) << "position " << i << " is outside the window of " << j;
    }
  }
}

TEST(LocalAttention, DecoderTokenOutsideTheWindowDoesNotInfluence) {
  ModelConfig cfg = tiny_config();
  cfg.attention = AttentionType::Local;
  cfg.local_window = 3;  // decoder: i - 3 < j <= i
  cfg.decoder_layers = 1;
  cfg.moe.every = 1;
  torch::manual_seed(24);
  Seq2SeqTransformer model(cfg);
  model->eval();
  const Batch b = make_batch(cfg, 5, 8, 0, 0);
  const torch::Tensor base = model->forward(b.src, b.src_mask, b.tgt, b.tgt_mask).logits;
  const int64_t j = 2;
  const torch::Tensor logits =
      model->forward(b.src, b.src_mask, perturb(b.tgt, 0, j, cfg.vocab_size), b.tgt_mask).logits;
  for (int64_t i = 0; i < 8; ++i) {
    const double diff = max_abs_diff(logits[0][i], base[0][i]);
    if (i >= j && i - j < 3) {
      EXPECT_GT(diff, 1e-5) << "position " << i << " has " << j << " in its window";
    } else {
      EXPECT_LT(diff, 1e-6) << "position " << i << " must not see " << j;
    }
  }
}

TEST(Seq2SeqTransformer, OutputShapesAndMoEStats) {
  const ModelConfig cfg = tiny_config();
  torch::manual_seed(25);
  Seq2SeqTransformer model(cfg);
  const Batch b = make_batch(cfg, 6, 5, 2, 1);
  const Seq2SeqOutput out = model->forward(b.src, b.src_mask, b.tgt, b.tgt_mask);
  EXPECT_EQ(out.logits.sizes(), torch::IntArrayRef({2, 5, cfg.vocab_size}));
  EXPECT_EQ(out.logits.scalar_type(), torch::kFloat);
  EXPECT_EQ(out.moe.num_moe_layers, 2);
  EXPECT_EQ(out.moe.aux_loss.dim(), 0);
  EXPECT_EQ(out.moe.aux_loss.scalar_type(), torch::kFloat);
  EXPECT_TRUE(out.moe.aux_loss.requires_grad());
  EXPECT_TRUE(out.moe.z_loss.requires_grad());
  EXPECT_GT(out.moe.aux_loss.item<float>(), 0.0f);
  ASSERT_EQ(out.moe.tokens_per_expert.sizes(), torch::IntArrayRef({2, cfg.moe.num_experts}));
  EXPECT_EQ(out.moe.tokens_per_expert.scalar_type(), torch::kLong);
  EXPECT_FALSE(out.moe.tokens_per_expert.requires_grad());
  // Dropless: every real token's two choices are kept (10 source, 9 target tokens).
  EXPECT_EQ(out.moe.tokens_per_expert[0].sum().item<int64_t>(), 10 * 2);
  EXPECT_EQ(out.moe.tokens_per_expert[1].sum().item<int64_t>(), 9 * 2);
  EXPECT_EQ(out.moe.dropped, 0);

  ModelConfig dense = cfg;
  dense.moe.every = 0;
  Seq2SeqTransformer dense_model(dense);
  const Seq2SeqOutput d = dense_model->forward(b.src, b.src_mask, b.tgt, b.tgt_mask);
  EXPECT_EQ(d.moe.num_moe_layers, 0);
  EXPECT_EQ(d.moe.aux_loss.item<float>(), 0.0f);
  EXPECT_EQ(d.moe.tokens_per_expert.numel(), 0);
}

TEST(Seq2SeqTransformer, EncodeThenDecodeEqualsForward) {
  const ModelConfig cfg = tiny_config();
  torch::manual_seed(26);
  Seq2SeqTransformer model(cfg);
  const Batch b = make_batch(cfg, 6, 5);
  const Seq2SeqOutput full = model->forward(b.src, b.src_mask, b.tgt, b.tgt_mask);
  const EncoderOutput enc = model->encode(b.src, b.src_mask);
  const Seq2SeqOutput dec = model->decode(b.tgt, b.tgt_mask, enc.hidden, b.src_mask);
  EXPECT_TRUE(full.logits.equal(dec.logits));
  EXPECT_NEAR(full.moe.aux_loss.item<float>(), (enc.moe.aux_loss + dec.moe.aux_loss).item<float>(), 1e-6);
  EXPECT_TRUE(full.moe.tokens_per_expert.equal(torch::cat({enc.moe.tokens_per_expert, dec.moe.tokens_per_expert})));
}

TEST(Seq2SeqTransformer, BackwardGivesFiniteGradientsForEveryParameter) {
  ModelConfig cfg = tiny_config();
  cfg.dropout = 0.1;
  cfg.attention = AttentionType::Dynamic;
  cfg.position = PositionType::Learned;
  cfg.moe.capacity_factor = 1.0;
  torch::manual_seed(27);
  Seq2SeqTransformer model(cfg);
  const Batch b = make_batch(cfg, 7, 6);
  training_loss(model->forward(b.src, b.src_mask, b.tgt, b.tgt_mask), b, cfg).backward();
  double total = 0;
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key() << " has no gradient";
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
    total += p.value().grad().abs().sum().item<double>();
  }
  EXPECT_GT(total, 0.0);
  for (const char* name : {"encoder.layers.1.moe.router.weight", "decoder.layers.1.moe.router.weight",
                           "decoder.layers.0.self_attn.gate.weight", "embed_positions.weight"}) {
    EXPECT_GT(model->named_parameters()[name].grad().abs().sum().item<double>(), 0.0) << name;
  }
}

TEST(Seq2SeqTransformer, TiedEmbeddingsShareStorageWithTheOutputProjection) {
  const ModelConfig cfg = tiny_config();  // tie_embeddings = true
  torch::manual_seed(28);
  Seq2SeqTransformer model(cfg);
  model->eval();
  EXPECT_TRUE(model->lm_head_weight().is_same(model->embed_tokens->weight));
  EXPECT_EQ(parameter_names(*model).count("lm_head.weight"), 0u);
  const Batch b = make_batch(cfg, 5, 4);
  const int64_t unused = 0;  // id 0 only appears at padded positions
  {
    torch::NoGradGuard no_grad;
    model->embed_tokens->weight[unused].zero_();
  }
  EXPECT_EQ(model->forward(b.src, b.src_mask, b.tgt, b.tgt_mask).logits.select(-1, unused).abs().max().item<float>(),
            0.0f);

  // The output projection sends gradient into the embedding row of a token
  // that never appears in the input.
  model->train();
  model->zero_grad();
  const Batch real = make_batch(cfg, 5, 4, 0, 0);
  const int64_t absent = [&] {
    const torch::Tensor used = torch::cat({real.src.reshape({-1}), real.tgt.reshape({-1})});
    for (int64_t v = 1; v < cfg.vocab_size; ++v)
      if (!(used == v).any().item<bool>()) return v;
    return int64_t{-1};
  }();
  ASSERT_GE(absent, 0);
  training_loss(model->forward(real.src, real.src_mask, real.tgt, real.tgt_mask), real, cfg).backward();
  EXPECT_GT(model->embed_tokens->weight.grad()[absent].abs().sum().item<float>(), 0.0f);

  // Still tied after the trainer swaps in bf16 data.
  for (auto& p : model->parameters()) p.set_data(p.data().to(torch::kBFloat16));
  EXPECT_TRUE(model->lm_head_weight().is_same(model->embed_tokens->weight));
  model->eval();
  EXPECT_EQ(model->forward(b.src, b.src_mask, b.tgt, b.tgt_mask).logits.select(-1, unused).abs().max().item<float>(),
            0.0f);

  ModelConfig untied = cfg;
  untied.tie_embeddings = false;
  Seq2SeqTransformer separate(untied);
  EXPECT_FALSE(separate->lm_head_weight().is_same(separate->embed_tokens->weight));
  EXPECT_EQ(separate->lm_head_weight().sizes(), torch::IntArrayRef({cfg.vocab_size, cfg.d_model}));
}

class LowPrecision : public ::testing::TestWithParam<PositionType> {};

TEST_P(LowPrecision, Bf16ParametersRunForwardAndBackward) {
  ModelConfig cfg = tiny_config();
  cfg.position = GetParam();
  cfg.moe.capacity_factor = 1.25;
  torch::manual_seed(29);
  Seq2SeqTransformer model(cfg);
  for (auto& p : model->parameters()) p.set_data(p.data().to(torch::kBFloat16));
  const Batch b = make_batch(cfg, 6, 5);
  const Seq2SeqOutput out = model->forward(b.src, b.src_mask, b.tgt, b.tgt_mask);
  EXPECT_EQ(out.logits.scalar_type(), torch::kBFloat16);
  EXPECT_TRUE(torch::isfinite(out.logits).all().item<bool>());
  EXPECT_EQ(out.moe.aux_loss.scalar_type(), torch::kFloat);
  EXPECT_EQ(out.moe.z_loss.scalar_type(), torch::kFloat);
  training_loss(out, b, cfg).backward();
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_EQ(p.value().grad().scalar_type(), torch::kBFloat16) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
}

INSTANTIATE_TEST_SUITE_P(Positions, LowPrecision,
                         ::testing::Values(PositionType::Sinusoidal, PositionType::Learned, PositionType::Rotary,
                                           PositionType::SinusoidalFairseq),
                         [](const auto& info) { return testing::position_name(info.param); });

TEST(Seq2SeqTransformer, ActivationCheckpointingGivesTheSameLossAndGradients) {
  ModelConfig cfg = tiny_config();
  cfg.dropout = 0.2;
  cfg.attention_dropout = 0.1;
  cfg.attention = AttentionType::Dynamic;
  cfg.moe.capacity_factor = 1.0;
  ModelConfig ckpt_cfg = cfg;
  ckpt_cfg.activation_checkpointing = true;
  torch::manual_seed(30);
  Seq2SeqTransformer plain(cfg);
  torch::manual_seed(30);
  Seq2SeqTransformer ckpt(ckpt_cfg);
  const Batch b = make_batch(cfg, 7, 6);

  auto run = [&](Seq2SeqTransformer& m, uint64_t seed) {
    torch::manual_seed(seed);
    const Seq2SeqOutput out = m->forward(b.src, b.src_mask, b.tgt, b.tgt_mask);
    torch::Tensor loss = training_loss(out, b, cfg);
    loss.backward();
    return std::make_tuple(loss.item<double>(), out.moe.aux_loss.item<double>(), out.moe.z_loss.item<double>(),
                           out.moe.tokens_per_expert, out.moe.dropped, torch::rand({1}).item<double>());
  };
  const auto [loss_a, aux_a, z_a, tpe_a, dropped_a, next_a] = run(plain, 99);
  const auto [loss_b, aux_b, z_b, tpe_b, dropped_b, next_b] = run(ckpt, 99);
  EXPECT_NEAR(loss_a, loss_b, 1e-6);
  EXPECT_NEAR(aux_a, aux_b, 1e-6);
  EXPECT_NEAR(z_a, z_b, 1e-6);
  EXPECT_TRUE(tpe_a.equal(tpe_b));
  EXPECT_EQ(dropped_a, dropped_b);
  EXPECT_EQ(next_a, next_b) << "checkpointing shifted the random stream";

  const auto pa = plain->named_parameters();
  const auto pb = ckpt->named_parameters();
  ASSERT_EQ(pa.size(), pb.size());
  for (const auto& p : pa) {
    const torch::Tensor ga = p.value().grad();
    const torch::Tensor gb = pb[p.key()].grad();
    ASSERT_TRUE(ga.defined() && gb.defined()) << p.key();
    EXPECT_LE(max_abs_diff(ga, gb), 1e-6) << p.key();
  }

  // Control: dropout is really on, so a wrong RNG replay could not pass.
  plain->zero_grad();
  EXPECT_GT(std::abs(std::get<0>(run(plain, 100)) - loss_a), 1e-6);
}

TEST(Seq2SeqTransformer, PaddedRowsStayFinite) {
  // Row 1: an all-padding source and a left-padded target under a small local
  // window, so some padded queries have no real key at all.
  ModelConfig cfg = tiny_config();
  cfg.attention = AttentionType::Local;
  cfg.local_window = 2;
  cfg.moe.capacity_factor = 1.0;
  torch::manual_seed(33);
  Seq2SeqTransformer model(cfg);
  Batch b = make_batch(cfg, 5, 6, 0, 0);
  b.src_mask[1].fill_(false);
  b.tgt_mask[1].narrow(0, 0, 3).fill_(false);
  const Seq2SeqOutput out = model->forward(b.src, b.src_mask, b.tgt, b.tgt_mask);
  EXPECT_TRUE(torch::isfinite(out.logits).all().item<bool>());
  training_loss(out, b, cfg).backward();
  for (const auto& p : model->named_parameters()) {
    ASSERT_TRUE(p.value().grad().defined()) << p.key();
    EXPECT_TRUE(torch::isfinite(p.value().grad()).all().item<bool>()) << p.key();
  }
}

TEST(Seq2SeqTransformer, CudaActivationCheckpointingReplaysDropout) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device: the CUDA RNG replay is not exercised";
  ModelConfig cfg = tiny_config();
  cfg.dropout = 0.2;
  cfg.moe.capacity_factor = 1.0;
  ModelConfig ckpt_cfg = cfg;
  ckpt_cfg.activation_checkpointing = true;
  torch::manual_seed(34);
  Seq2SeqTransformer plain(cfg);
  torch::manual_seed(34);
  Seq2SeqTransformer ckpt(ckpt_cfg);
  plain->to(torch::kCUDA);
  ckpt->to(torch::kCUDA);
  Batch b = make_batch(cfg, 7, 6);
  for (torch::Tensor* t : {&b.src, &b.src_mask, &b.tgt, &b.tgt_mask}) *t = t->to(torch::kCUDA);
  auto run = [&](Seq2SeqTransformer& m) {
    torch::manual_seed(35);
    torch::Tensor loss = training_loss(m->forward(b.src, b.src_mask, b.tgt, b.tgt_mask), b, cfg);
    loss.backward();
    return loss.item<double>();
  };
  EXPECT_NEAR(run(plain), run(ckpt), 1e-5);
  const auto pb = ckpt->named_parameters();
  for (const auto& p : plain->named_parameters()) {
    // index_add on CUDA accumulates with atomics, hence a looser bound than on CPU.
    EXPECT_LE(max_abs_diff(p.value().grad(), pb[p.key()].grad()), 1e-5) << p.key();
  }
}

// Every parameter of tiny_config() with learned positions and untied
// embeddings (ParameterNamesForATinyConfig).
std::set<std::string> tiny_learned_untied_parameter_names() {
  // clang-format off
  return {
      "embed_tokens.weight", "embed_positions.weight",
      "encoder.layers.0.self_attn_norm.weight", "encoder.layers.0.self_attn_norm.bias",
      "encoder.layers.0.self_attn.q_proj.weight", "encoder.layers.0.self_attn.q_proj.bias",
      "encoder.layers.0.self_attn.k_proj.weight", "encoder.layers.0.self_attn.k_proj.bias",
      "encoder.layers.0.self_attn.v_proj.weight", "encoder.layers.0.self_attn.v_proj.bias",
      "encoder.layers.0.self_attn.o_proj.weight", "encoder.layers.0.self_attn.o_proj.bias",
      "encoder.layers.0.ffn_norm.weight", "encoder.layers.0.ffn_norm.bias",
      "encoder.layers.0.ffn.fc1.weight", "encoder.layers.0.ffn.fc1.bias",
      "encoder.layers.0.ffn.fc2.weight", "encoder.layers.0.ffn.fc2.bias",
      "encoder.layers.1.self_attn_norm.weight", "encoder.layers.1.self_attn_norm.bias",
      "encoder.layers.1.self_attn.q_proj.weight", "encoder.layers.1.self_attn.q_proj.bias",
      "encoder.layers.1.self_attn.k_proj.weight", "encoder.layers.1.self_attn.k_proj.bias",
      "encoder.layers.1.self_attn.v_proj.weight", "encoder.layers.1.self_attn.v_proj.bias",
      "encoder.layers.1.self_attn.o_proj.weight", "encoder.layers.1.self_attn.o_proj.bias",
      "encoder.layers.1.ffn_norm.weight", "encoder.layers.1.ffn_norm.bias",
      "encoder.layers.1.moe.router.weight",
      "encoder.layers.1.moe.experts_fc1_weight", "encoder.layers.1.moe.experts_fc1_bias",
      "encoder.layers.1.moe.experts_fc2_weight", "encoder.layers.1.moe.experts_fc2_bias",
      "encoder.final_norm.weight", "encoder.final_norm.bias",
      "decoder.layers.0.self_attn_norm.weight", "decoder.layers.0.self_attn_norm.bias",
      "decoder.layers.0.self_attn.q_proj.weight", "decoder.layers.0.self_attn.q_proj.bias",
      "decoder.layers.0.self_attn.k_proj.weight", "decoder.layers.0.self_attn.k_proj.bias",
      "decoder.layers.0.self_attn.v_proj.weight", "decoder.layers.0.self_attn.v_proj.bias",
      "decoder.layers.0.self_attn.o_proj.weight", "decoder.layers.0.self_attn.o_proj.bias",
      "decoder.layers.0.cross_attn_norm.weight", "decoder.layers.0.cross_attn_norm.bias",
      "decoder.layers.0.cross_attn.q_proj.weight", "decoder.layers.0.cross_attn.q_proj.bias",
      "decoder.layers.0.cross_attn.k_proj.weight", "decoder.layers.0.cross_attn.k_proj.bias",
      "decoder.layers.0.cross_attn.v_proj.weight", "decoder.layers.0.cross_attn.v_proj.bias",
      "decoder.layers.0.cross_attn.o_proj.weight", "decoder.layers.0.cross_attn.o_proj.bias",
      "decoder.layers.0.ffn_norm.weight", "decoder.layers.0.ffn_norm.bias",
      "decoder.layers.0.ffn.fc1.weight", "decoder.layers.0.ffn.fc1.bias",
      "decoder.layers.0.ffn.fc2.weight", "decoder.layers.0.ffn.fc2.bias",
      "decoder.layers.1.self_attn_norm.weight", "decoder.layers.1.self_attn_norm.bias",
      "decoder.layers.1.self_attn.q_proj.weight", "decoder.layers.1.self_attn.q_proj.bias",
      "decoder.layers.1.self_attn.k_proj.weight", "decoder.layers.1.self_attn.k_proj.bias",
      "decoder.layers.1.self_attn.v_proj.weight", "decoder.layers.1.self_attn.v_proj.bias",
      "decoder.layers.1.self_attn.o_proj.weight", "decoder.layers.1.self_attn.o_proj.bias",
      "decoder.layers.1.cross_attn_norm.weight", "decoder.layers.1.cross_attn_norm.bias",
      "decoder.layers.1.cross_attn.q_proj.weight", "decoder.layers.1.cross_attn.q_proj.bias",
      "decoder.layers.1.cross_attn.k_proj.weight", "decoder.layers.1.cross_attn.k_proj.bias",
      "decoder.layers.1.cross_attn.v_proj.weight", "decoder.layers.1.cross_attn.v_proj.bias",
      "decoder.layers.1.cross_attn.o_proj.weight", "decoder.layers.1.cross_attn.o_proj.bias",
      "decoder.layers.1.ffn_norm.weight", "decoder.layers.1.ffn_norm.bias",
      "decoder.layers.1.moe.router.weight",
      "decoder.layers.1.moe.experts_fc1_weight", "decoder.layers.1.moe.experts_fc1_bias",
      "decoder.layers.1.moe.experts_fc2_weight", "decoder.layers.1.moe.experts_fc2_bias",
      "decoder.final_norm.weight", "decoder.final_norm.bias",
      "lm_head.weight",
  };
  // clang-format on
}

TEST(Seq2SeqTransformer, ParameterNamesForATinyConfig) {
  ModelConfig cfg = tiny_config();
  cfg.position = PositionType::Learned;
  cfg.tie_embeddings = false;
  Seq2SeqTransformer model(cfg);
  const std::set<std::string> expected = tiny_learned_untied_parameter_names();
  EXPECT_EQ(parameter_names(*model), expected);
  EXPECT_EQ(model->named_parameters()["embed_positions.weight"].sizes(),
            torch::IntArrayRef({cfg.max_positions, cfg.d_model}));
  EXPECT_EQ(model->named_parameters()["decoder.layers.1.moe.experts_fc1_weight"].sizes(),
            torch::IntArrayRef({cfg.moe.num_experts, cfg.expert_ffn_dim(), cfg.d_model}));

  // Tied, rotary, RMSNorm, no biases, dynamic attention, every layer MoE.
  ModelConfig other = tiny_config();
  other.position = PositionType::Rotary;
  other.norm = NormType::RMSNorm;
  other.bias = false;
  other.attention = AttentionType::Dynamic;
  other.encoder_layers = 1;
  other.decoder_layers = 1;
  other.moe.every = 1;
  Seq2SeqTransformer small(other);
  const std::set<std::string> expected_small = {
      "embed_tokens.weight",
      "encoder.layers.0.self_attn_norm.weight",
      "encoder.layers.0.self_attn.q_proj.weight",
      "encoder.layers.0.self_attn.k_proj.weight",
      "encoder.layers.0.self_attn.v_proj.weight",
      "encoder.layers.0.self_attn.o_proj.weight",
      "encoder.layers.0.self_attn.gate.weight",
      "encoder.layers.0.ffn_norm.weight",
      "encoder.layers.0.moe.router.weight",
      "encoder.layers.0.moe.experts_fc1_weight",
      "encoder.layers.0.moe.experts_fc2_weight",
      "encoder.final_norm.weight",
      "decoder.layers.0.self_attn_norm.weight",
      "decoder.layers.0.self_attn.q_proj.weight",
      "decoder.layers.0.self_attn.k_proj.weight",
      "decoder.layers.0.self_attn.v_proj.weight",
      "decoder.layers.0.self_attn.o_proj.weight",
      "decoder.layers.0.self_attn.gate.weight",
      "decoder.layers.0.cross_attn_norm.weight",
      "decoder.layers.0.cross_attn.q_proj.weight",
      "decoder.layers.0.cross_attn.k_proj.weight",
      "decoder.layers.0.cross_attn.v_proj.weight",
      "decoder.layers.0.cross_attn.o_proj.weight",
      "decoder.layers.0.ffn_norm.weight",
      "decoder.layers.0.moe.router.weight",
      "decoder.layers.0.moe.experts_fc1_weight",
      "decoder.layers.0.moe.experts_fc2_weight",
      "decoder.final_norm.weight",
  };
  EXPECT_EQ(parameter_names(*small), expected_small);
  EXPECT_TRUE(small->embed_positions.is_empty());

  // Sinusoidal positions are a buffer, not a parameter.
  ModelConfig sin = tiny_config();
  Seq2SeqTransformer sin_model(sin);
  EXPECT_EQ(parameter_names(*sin_model).count("embed_positions.weight"), 0u);
  EXPECT_EQ(sin_model->named_buffers().size(), 1u);
  EXPECT_TRUE(sin_model->named_buffers().contains("embed_positions.table"));
}

TEST(Seq2SeqTransformer, InitialisationIsDeterministicGivenTheSeed) {
  const ModelConfig cfg = tiny_config();
  torch::manual_seed(31);
  Seq2SeqTransformer a(cfg);
  torch::manual_seed(31);
  Seq2SeqTransformer b(cfg);
  torch::manual_seed(32);
  Seq2SeqTransformer c(cfg);
  const auto pb = b->named_parameters();
  const auto pc = c->named_parameters();
  for (const auto& p : a->named_parameters()) {
    EXPECT_TRUE(p.value().equal(pb[p.key()])) << p.key();
  }
  EXPECT_FALSE(a->named_parameters()["encoder.layers.0.self_attn.q_proj.weight"].equal(
      pc["encoder.layers.0.self_attn.q_proj.weight"]));
}

TEST(Seq2SeqTransformer, RejectsBadInputs) {
  ModelConfig cfg = tiny_config();
  cfg.max_positions = 8;
  Seq2SeqTransformer model(cfg);
  const Batch b = make_batch(cfg, 6, 5);
  const Batch too_long = make_batch(cfg, 9, 5);
  try {
    model->forward(too_long.src, too_long.src_mask, too_long.tgt, too_long.tgt_mask);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    const std::string msg = e.what();
    EXPECT_NE(msg.find("length 9"), std::string::npos) << msg;
    EXPECT_NE(msg.find("max_positions 8"), std::string::npos) << msg;
  }
  ModelConfig rotary = cfg;
  rotary.position = PositionType::Rotary;
  Seq2SeqTransformer rotary_model(rotary);
  EXPECT_THROW(rotary_model->forward(b.src, b.src_mask, make_batch(cfg, 6, 9).tgt, make_batch(cfg, 6, 9).tgt_mask),
               std::invalid_argument);
  EXPECT_THROW(model->forward(b.src.to(torch::kInt), b.src_mask, b.tgt, b.tgt_mask), std::invalid_argument);
  EXPECT_THROW(model->forward(b.src, b.src_mask.to(torch::kLong), b.tgt, b.tgt_mask), std::invalid_argument);
  EXPECT_THROW(model->forward(b.src, b.src_mask.narrow(1, 0, 5), b.tgt, b.tgt_mask), std::invalid_argument);
  EXPECT_THROW(model->forward(b.src, b.src_mask, b.tgt.narrow(0, 0, 1), b.tgt_mask.narrow(0, 0, 1)),
               std::invalid_argument);
  EXPECT_THROW(model->decode(b.tgt, b.tgt_mask, torch::randn({2, 6, cfg.d_model + 1}), b.src_mask),
               std::invalid_argument);
  ModelConfig no_vocab = cfg;
  no_vocab.vocab_size = 0;
  EXPECT_THROW(Seq2SeqTransformer{no_vocab}, std::invalid_argument);
}

}  // namespace
}  // namespace moetrain::models
