// LoRA and frozen parameters in the trainer: only the adapters change, the
// optimizer holds state for them alone (its bytes scale with the adapter,
// not the model), frozen weights live in the compute dtype, and ZeRO 3
// trains the adapters as ZeRO 0 does.
#include <gtest/gtest.h>

#include <iostream>
#include <map>
#include <memory>
#include <vector>

#include "models/lora.h"
#include "parallel/mpi_communicator.h"
#include "train/trainer.h"

using namespace moetrain;

namespace {

std::shared_ptr<parallel::Communicator> world() {
  static std::shared_ptr<parallel::Communicator> comm = parallel::make_world_communicator(60.0);
  return comm;
}

config::Config lora_config(const std::vector<std::string>& targets) {
  config::Config c;
  auto& m = c.model;
  m.vocab_size = 97;
  m.d_model = 32;
  m.n_heads = 2;
  m.d_ff = 64;
  m.encoder_layers = 2;
  m.decoder_layers = 2;
  m.max_positions = 64;
  m.dropout = 0.0;
  m.moe.num_experts = 4;
  m.moe.top_k = 2;
  m.moe.every = 2;
  m.moe.capacity_factor = 0;
  c.train.global_batch = 4;
  c.train.micro_batch = 2;
  c.train.seed = 7;
  c.optim.lr = 1e-2;
  c.optim.warmup_steps = 0;
  c.finetune.mode = config::FinetuneMode::Lora;
  c.lora.r = 4;
  c.lora.alpha = 8;
  c.lora.targets = targets;
  return c;
}

data::Seq2SeqBatch random_batch(int64_t vocab) {
  const int64_t batch = 2, src_len = 9, tgt_len = 7;
  data::Seq2SeqBatch b;
  b.src_tokens = torch::randint(4, vocab, {batch, src_len}, torch::kInt64);
  b.tgt_out = torch::randint(4, vocab, {batch, tgt_len}, torch::kInt64);
  b.src_mask = torch::ones({batch, src_len}, torch::kBool);
  b.tgt_mask = torch::ones({batch, tgt_len}, torch::kBool);
  b.tgt_in = torch::cat({torch::full({batch, 1}, 3, torch::kInt64), b.tgt_out.slice(1, 0, tgt_len - 1)}, 1);
  b.num_source_tokens = b.src_mask.sum().item<int64_t>();
  b.num_target_tokens = b.tgt_mask.sum().item<int64_t>();
  return b;
}

std::vector<std::vector<data::Seq2SeqBatch>> batches(int steps, int64_t vocab) {
  torch::manual_seed(99);
  std::vector<std::vector<data::Seq2SeqBatch>> out(static_cast<size_t>(steps));
  for (auto& step : out) step = {random_batch(vocab), random_batch(vocab)};
  return out;
}

std::map<std::string, torch::Tensor> snapshot(train::Trainer& t) {
  std::map<std::string, torch::Tensor> out;
  for (const auto& item : t.model()->named_parameters()) out[item.key()] = item.value().detach().clone();
  return out;
}

int64_t adapter_numel(train::Trainer& t) {
  int64_t n = 0;
  for (const auto& item : t.model()->named_parameters()) {
    if (models::is_lora_parameter(item.key())) n += item.value().numel();
  }
  return n;
}

}  // namespace

TEST(LoraTraining, OnlyAdapterParametersChange) {
  const auto cfg = lora_config({"all-linear"});
  train::Trainer t(cfg, world());
  const auto before = snapshot(t);
  const auto data = batches(3, cfg.model.vocab_size);
  for (int s = 0; s < 3; ++s) {
    const auto r = t.train_step(data[static_cast<size_t>(s)], s);
    EXPECT_TRUE(std::isfinite(r.loss) && r.grad_norm > 0) << "step " << s;
  }
  const auto after = snapshot(t);
  int64_t adapters = 0, moved = 0;
  for (const auto& [name, value] : before) {
    if (models::is_lora_parameter(name)) {
      ++adapters;
      if (!torch::equal(value, after.at(name))) ++moved;
    } else {
      EXPECT_TRUE(torch::equal(value, after.at(name))) << name << " is frozen but changed";
    }
  }
  EXPECT_GT(adapters, 20);
  EXPECT_EQ(moved, adapters) << "every adapter (A and B) trains";
  // The optimizer's parameters are exactly the adapters.
  for (const auto& e : t.params().entries()) EXPECT_TRUE(models::is_lora_parameter(e.name)) << e.name;
}

TEST(LoraTraining, OptimizerStateScalesWithTheAdapterNotTheModel) {
  auto cfg = lora_config({"q_proj", "v_proj"});
  train::Trainer lora(cfg, world());
  const int64_t adapter = adapter_numel(lora);
  const auto m = lora.optimizer_memory();
  EXPECT_EQ(m.moment_bytes, 2 * 4 * adapter);  // two fp32 moments per adapter element
  EXPECT_EQ(m.grad_bytes, 4 * lora.params().padded_numel());
  EXPECT_EQ(lora.params().numel(), adapter);
  cfg.lora.r = 8;  // twice the rank: twice the state
  train::Trainer lora8(cfg, world());
  EXPECT_EQ(lora8.optimizer_memory().moment_bytes, 2 * m.moment_bytes);
  cfg.finetune.mode = config::FinetuneMode::Full;
  train::Trainer full(cfg, world());
  const auto f = full.optimizer_memory();
  const int64_t model = full.params().numel();
  EXPECT_EQ(f.moment_bytes, 2 * 4 * model);
  EXPECT_EQ(m.frozen_bytes, 4 * model);  // the frozen base, fp32 compute here
  EXPECT_EQ(f.frozen_bytes, 0);
  std::cout << "optimizer moments: LoRA r=4 on q/v " << m.moment_bytes << " bytes (" << adapter
            << " adapter parameters), full fine-tuning " << f.moment_bytes << " bytes (" << model << " parameters)"
            << std::endl;
  EXPECT_LT(m.moment_bytes * 10, f.moment_bytes);
}

TEST(LoraTraining, FrozenWeightsLiveInTheComputeDtype) {
  auto cfg = lora_config({"q_proj", "experts"});
  cfg.precision.compute = config::ComputeDtype::BF16;
  train::Trainer t(cfg, world());
  for (const auto& item : t.model()->named_parameters()) {
    EXPECT_EQ(item.value().scalar_type(), torch::kBFloat16) << item.key();
    EXPECT_EQ(item.value().requires_grad(), models::is_lora_parameter(item.key())) << item.key();
  }
  const auto data = batches(2, cfg.model.vocab_size);
  const auto r0 = t.train_step(data[0], 0);
  const auto r1 = t.train_step(data[1], 1);
  EXPECT_TRUE(std::isfinite(r0.loss) && std::isfinite(r1.loss));
  EXPECT_EQ(t.optimizer_memory().master_bytes, 4 * t.params().numel());
}

TEST(LoraTraining, FullFineTuningFreezesTheNamedParameters) {
  auto cfg = lora_config({});
  cfg.finetune.mode = config::FinetuneMode::Full;
  cfg.finetune.freeze = {"encoder.layers.0", "embed_tokens"};
  train::Trainer t(cfg, world());
  const auto before = snapshot(t);
  const auto data = batches(2, cfg.model.vocab_size);
  for (int s = 0; s < 2; ++s) t.train_step(data[static_cast<size_t>(s)], s);
  const auto after = snapshot(t);
  for (const auto& [name, value] : before) {
    const bool frozen =
        name.find("encoder.layers.0") != std::string::npos || name.find("embed_tokens") != std::string::npos;
    if (frozen) {
      EXPECT_TRUE(torch::equal(value, after.at(name))) << name;
    } else if (name.find("weight") != std::string::npos && name.find("norm") == std::string::npos) {
      EXPECT_FALSE(torch::equal(value, after.at(name))) << name << " should train";
    }
  }
}

TEST(LoraTraining, Zero3TrainsTheAdaptersAsZero0Does) {
  auto cfg0 = lora_config({"all-linear"});
  auto cfg3 = cfg0;
  cfg3.parallel.zero_stage = 3;
  const auto data = batches(3, cfg0.model.vocab_size);
  train::Trainer a(cfg0, world()), b(cfg3, world());
  for (int s = 0; s < 3; ++s) {
    const auto ra = a.train_step(data[static_cast<size_t>(s)], s);
    const auto rb = b.train_step(data[static_cast<size_t>(s)], s);
    EXPECT_NEAR(ra.loss, rb.loss, 1e-5 * ra.loss) << "step " << s;
    EXPECT_NEAR(ra.grad_norm, rb.grad_norm, 1e-5 * ra.grad_norm) << "step " << s;
  }
  EXPECT_TRUE(torch::allclose(a.params().master(), b.params().master(), 1e-5, 1e-6));
}
