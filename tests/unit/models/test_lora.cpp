// LoRA adapters: PEFT's initialisation and scale, a fresh adapter changes
// nothing, the adapted forward equals the forward with merged weights (dense
// projections and stacked experts), targets and their errors.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "models/lora.h"
#include "models/seq2seq_transformer.h"
#include "tests/unit/models/model_test_util.h"

namespace moetrain::models {
namespace {

using testing::make_batch;
using testing::tiny_config;

std::map<std::string, torch::Tensor> parameters_of(Seq2SeqTransformer& model) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : model->named_parameters()) out[item.key()] = item.value();
  return out;
}

torch::Tensor logits_of(Seq2SeqTransformer& model, const testing::Batch& b) {
  model->eval();
  torch::NoGradGuard no_grad;
  return model->forward(b.src, b.src_mask, b.tgt, b.tgt_mask).logits;
}

TEST(Lora, ScaleIsAlphaOverRankOrOverItsRootWithRslora) {
  LoraConfig c;
  c.r = 16;
  c.alpha = 32;
  EXPECT_DOUBLE_EQ(c.scale(), 2.0);
  c.rslora = true;
  EXPECT_DOUBLE_EQ(c.scale(), 8.0);
}

TEST(Lora, AdaptersAreNamedShapedAndInitialisedAsPeftDoes) {
  auto cfg = tiny_config();
  torch::manual_seed(3);
  Seq2SeqTransformer model(cfg);
  LoraConfig lora;
  lora.r = 4;
  lora.targets = {"q_proj", "v_proj", "fc1", "experts"};
  // Encoder and decoder: 2 layers each, self-attention q/v in all 4, cross
  // q/v in 2, dense fc1 in layer 0 of each, experts (fc1 + fc2) in layer 1.
  EXPECT_EQ(model->add_lora(lora), 4 * 2 + 2 * 2 + 2 + 2 * 2);
  const auto p = parameters_of(model);
  const auto& a = p.at("encoder.layers.0.self_attn.q_proj.lora_A");
  const auto& b = p.at("encoder.layers.0.self_attn.q_proj.lora_B");
  EXPECT_EQ(a.sizes(), (std::vector<int64_t>{4, cfg.d_model}));
  EXPECT_EQ(b.sizes(), (std::vector<int64_t>{cfg.d_model, 4}));
  EXPECT_TRUE(torch::equal(b, torch::zeros_like(b)));
  // Kaiming-uniform with a = sqrt(5): U(-1/sqrt(in), 1/sqrt(in)), not all alike.
  const double bound = 1.0 / std::sqrt(static_cast<double>(cfg.d_model));
  EXPECT_LE(a.abs().max().item<double>(), bound);
  EXPECT_GT(a.abs().max().item<double>(), 0.5 * bound);
  EXPECT_EQ(p.count("encoder.layers.0.self_attn.k_proj.lora_A"), 0u);
  EXPECT_EQ(p.count("decoder.layers.0.cross_attn.v_proj.lora_B"), 1u);
  EXPECT_EQ(p.count("encoder.layers.0.ffn.fc2.lora_A"), 0u);
  const int64_t e = cfg.moe.num_experts, f = cfg.expert_ffn_dim(), d = cfg.d_model;
  EXPECT_EQ(p.at("encoder.layers.1.moe.experts_fc1_lora_A").sizes(), (std::vector<int64_t>{e, 4, d}));
  EXPECT_EQ(p.at("encoder.layers.1.moe.experts_fc1_lora_B").sizes(), (std::vector<int64_t>{e, f, 4}));
  EXPECT_EQ(p.at("encoder.layers.1.moe.experts_fc2_lora_A").sizes(), (std::vector<int64_t>{e, 4, f}));
  EXPECT_EQ(p.at("encoder.layers.1.moe.experts_fc2_lora_B").sizes(), (std::vector<int64_t>{e, d, 4}));
  EXPECT_LE(p.at("encoder.layers.1.moe.experts_fc2_lora_A").abs().max().item<double>(),
            1.0 / std::sqrt(static_cast<double>(f)));
  EXPECT_TRUE(is_lora_parameter("encoder.layers.1.moe.experts_fc2_lora_A"));
  EXPECT_FALSE(is_lora_parameter("encoder.layers.1.moe.experts_fc2_weight"));
  EXPECT_EQ(lora_base_weight_name("x.q_proj.lora_B"), "x.q_proj.weight");
  EXPECT_EQ(lora_base_weight_name("x.moe.experts_fc1_lora_A"), "x.moe.experts_fc1_weight");
}

TEST(Lora, FreshAdaptersLeaveTheOutputUnchanged) {
  auto cfg = tiny_config();
  torch::manual_seed(5);
  Seq2SeqTransformer model(cfg);
  const auto batch = make_batch(cfg, 7, 5);
  const auto before = logits_of(model, batch);
  LoraConfig lora;
  lora.targets = {"all-linear"};
  model->add_lora(lora);
  EXPECT_TRUE(torch::equal(before, logits_of(model, batch)));
}

// With B non-zero the adapted model equals a plain model holding W + s B A.
void expect_merge_matches(const LoraConfig& lora) {
  auto cfg = tiny_config();
  torch::manual_seed(11);
  Seq2SeqTransformer adapted(cfg);
  adapted->add_lora(lora);
  std::vector<std::pair<std::string, torch::Tensor>> named;
  {
    torch::NoGradGuard no_grad;
    for (const auto& item : adapted->named_parameters()) {
      if (is_lora_parameter(item.key()) && item.key().back() == 'B') item.value().normal_(0.0, 0.3);
      named.emplace_back(item.key(), item.value());
    }
  }
  const auto merged = merge_lora(named, lora.scale());
  Seq2SeqTransformer plain(cfg);
  auto plain_params = parameters_of(plain);
  ASSERT_EQ(merged.size(), plain_params.size());
  int64_t changed = 0;
  {
    torch::NoGradGuard no_grad;
    for (const auto& [name, value] : merged) {
      plain_params.at(name).copy_(value);
      const auto it = std::find_if(named.begin(), named.end(), [&](const auto& x) { return x.first == name; });
      if (!torch::equal(it->second, value)) ++changed;
    }
  }
  EXPECT_GT(changed, 0);
  const auto batch = make_batch(cfg, 8, 6);
  const auto a = logits_of(adapted, batch), b = logits_of(plain, batch);
  EXPECT_TRUE(torch::allclose(a, b, 1e-5, 1e-5)) << "max |diff| " << (a - b).abs().max().item<double>();
}

TEST(Lora, AdaptedForwardEqualsMergedWeights) {
  LoraConfig lora;
  lora.r = 3;
  lora.alpha = 5;
  lora.targets = {"all-linear"};
  expect_merge_matches(lora);
  lora.targets = {"experts_fc2", "o_proj"};
  lora.rslora = true;
  expect_merge_matches(lora);
}

TEST(Lora, UnknownOrUnmatchedTargetsAreErrors) {
  auto cfg = tiny_config();
  Seq2SeqTransformer model(cfg);
  LoraConfig lora;
  lora.targets = {"router"};
  try {
    model->add_lora(lora);
    FAIL() << "a router target was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("unknown LoRA target 'router' (one of: q_proj"), std::string::npos)
        << e.what();
  }
  cfg.moe.every = 0;  // dense: no experts to adapt
  Seq2SeqTransformer dense(cfg);
  lora.targets = {"experts"};
  try {
    dense->add_lora(lora);
    FAIL() << "a target matching nothing was accepted";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'experts' matches no layer"), std::string::npos) << e.what();
  }
}

TEST(Lora, DropoutActsOnTheAdapterInputWhileTraining) {
  auto cfg = tiny_config();
  torch::manual_seed(2);
  Seq2SeqTransformer model(cfg);
  LoraConfig lora;
  lora.dropout = 0.5;
  lora.targets = {"q_proj"};
  model->add_lora(lora);
  {
    torch::NoGradGuard no_grad;
    for (const auto& item : model->named_parameters()) {
      if (is_lora_parameter(item.key())) item.value().normal_(0.0, 0.5);
    }
  }
  const auto batch = make_batch(cfg, 6, 4);
  const auto eval1 = logits_of(model, batch), eval2 = logits_of(model, batch);
  EXPECT_TRUE(torch::equal(eval1, eval2));
  model->train();
  torch::NoGradGuard no_grad;
  const auto train1 = model->forward(batch.src, batch.src_mask, batch.tgt, batch.tgt_mask).logits;
  const auto train2 = model->forward(batch.src, batch.src_mask, batch.tgt, batch.tgt_mask).logits;
  EXPECT_FALSE(torch::allclose(train1, train2));
}

}  // namespace
}  // namespace moetrain::models
