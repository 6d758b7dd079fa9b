// Seq2SeqTransformer cut into pipeline stages: the units and their costs,
// chained stages of any partition against the whole model (forward and
// gradients), and bad stage bounds.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <algorithm>
#include <stdexcept>
#include <vector>

#include "model_test_util.h"
#include "models/seq2seq_transformer.h"

namespace moetrain::models {
namespace {

// Runs `model` as a pipeline cut at `starts` (every stage on this process):
// each stage gets the previous one's activations as fresh leaves, as a stage
// on another rank would, and the backward goes stage by stage from the last,
// passing the activation gradients back. Returns the logits; the parameters'
// .grad hold the gradient of sum(logits * upstream) + the MoE losses.
torch::Tensor run_as_pipeline(Seq2SeqTransformer& model, const testing::Batch& b, const std::vector<int64_t>& starts,
                              const torch::Tensor& upstream) {
  const int64_t units = model->num_pipeline_units();
  std::vector<StageActivations> inputs;
  std::vector<StageOutput> outputs;
  StageActivations carry;
  for (size_t s = 0; s < starts.size(); ++s) {
    const int64_t begin = starts[s], end = s + 1 < starts.size() ? starts[s + 1] : units;
    StageActivations in;
    if (begin > 0) {
      in.encoder = carry.encoder.detach().requires_grad_();
      in.decoder = carry.decoder.detach().requires_grad_();
    }
    inputs.push_back(in);
    outputs.push_back(model->forward_stage(begin, end, b.src, b.src_mask, b.tgt, b.tgt_mask, in));
    carry = outputs.back().activations;
  }
  const torch::Tensor logits = outputs.back().logits;
  EXPECT_TRUE(logits.defined());
  // Backward, last stage first.
  torch::Tensor grad_encoder, grad_decoder;
  for (size_t s = starts.size(); s-- > 0;) {
    const auto& out = outputs[s];
    std::vector<torch::Tensor> roots, grads;
    auto add_root = [&](const torch::Tensor& t, const torch::Tensor& g) {
      if (t.requires_grad() && g.defined()) {
        roots.push_back(t);
        grads.push_back(g);
      }
    };
    add_root(out.moe.aux_loss + out.moe.z_loss, torch::ones({}));
    if (s + 1 == starts.size()) {
      add_root((out.logits * upstream).sum(), torch::ones({}));
    } else {
      // The encoder activation may pass through a stage unchanged (a decoder
      // stage returns its input): its gradient then goes straight to the input.
      add_root(out.activations.encoder, grad_encoder);
      add_root(out.activations.decoder, grad_decoder);
    }
    if (!roots.empty()) torch::autograd::backward(roots, grads);
    if (s > 0) {
      grad_encoder = inputs[s].encoder.grad();
      grad_decoder = inputs[s].decoder.grad();
    }
  }
  return logits.detach();
}

TEST(PipelineStages, UnitsNameTheModelInOrderAndCostTheirParameters) {
  ModelConfig cfg = testing::tiny_config();
  torch::manual_seed(3);
  Seq2SeqTransformer model(cfg);
  ASSERT_EQ(model->num_pipeline_units(), 8);
  EXPECT_EQ(model->pipeline_unit_name(0), "embed");
  EXPECT_EQ(model->pipeline_unit_name(2), "encoder.layers.1");
  EXPECT_EQ(model->pipeline_unit_name(3), "encoder.final_norm");
  EXPECT_EQ(model->pipeline_unit_name(4), "decoder.layers.0");
  EXPECT_EQ(model->pipeline_unit_name(6), "decoder.final_norm");
  EXPECT_EQ(model->pipeline_unit_name(7), "lm_head");
  int64_t total = 0;
  for (const auto& p : model->parameters()) total += p.numel();
  const auto costs = model->pipeline_unit_costs();
  int64_t summed = 0;
  for (int64_t c : costs) summed += c;
  EXPECT_EQ(summed, total) << "every parameter belongs to exactly one unit";
  EXPECT_EQ(costs.back(), 0) << "a tied lm_head owns no parameter";
  EXPECT_TRUE(model->pipeline_units_use(7, 8, "embed_tokens.weight")) << "the tied head uses the embedding";
  EXPECT_FALSE(model->pipeline_units_use(4, 7, "embed_tokens.weight"));
  EXPECT_TRUE(model->pipeline_units_use(1, 3, "encoder.layers.1.ffn_norm.weight"));
  EXPECT_FALSE(model->pipeline_units_use(1, 2, "encoder.layers.1.ffn_norm.weight"));
}

TEST(PipelineStages, ChainedStagesOfAnyPartitionComputeTheForwardAndItsGradients) {
  ModelConfig cfg = testing::tiny_config();
  const testing::Batch b = testing::make_batch(cfg, 7, 5);
  torch::manual_seed(3);
  Seq2SeqTransformer reference(cfg);
  const torch::Tensor upstream = torch::randn({2, 5, cfg.vocab_size});
  const auto out = reference->forward(b.src, b.src_mask, b.tgt, b.tgt_mask);
  torch::autograd::backward({(out.logits * upstream).sum() + out.moe.aux_loss + out.moe.z_loss});

  // One stage; a cut inside the encoder and one inside the decoder; a cut
  // right after the embedding and one before the head; every unit alone.
  for (const std::vector<int64_t>& starts :
       std::vector<std::vector<int64_t>>{{0}, {0, 2, 5}, {0, 1, 7}, {0, 1, 2, 3, 4, 5, 6, 7}}) {
    torch::manual_seed(3);
    Seq2SeqTransformer model(cfg);
    const torch::Tensor logits = run_as_pipeline(model, b, starts, upstream);
    EXPECT_TRUE(torch::allclose(logits, out.logits.detach(), 1e-5, 1e-6)) << "cuts " << c10::IntArrayRef(starts);
    const auto want = reference->named_parameters();
    for (const auto& item : model->named_parameters()) {
      const torch::Tensor g = item.value().grad();
      const torch::Tensor w = want[item.key()].grad();
      ASSERT_EQ(g.defined(), w.defined()) << item.key();
      if (!g.defined()) continue;
      EXPECT_TRUE(torch::allclose(g, w, 1e-4, 1e-6 * std::max(1.0, w.abs().max().item<double>())))
          << item.key() << " with cuts " << c10::IntArrayRef(starts) << ": max diff "
          << (g - w).abs().max().item<double>();
    }
  }
}

TEST(PipelineStages, RejectsAnEmptyStageAndMissingActivations) {
  ModelConfig cfg = testing::tiny_config();
  const testing::Batch b = testing::make_batch(cfg, 7, 5);
  Seq2SeqTransformer model(cfg);
  EXPECT_THROW(model->forward_stage(3, 3, b.src, b.src_mask, b.tgt, b.tgt_mask, {}), std::invalid_argument);
  EXPECT_THROW(model->forward_stage(2, 9, b.src, b.src_mask, b.tgt, b.tgt_mask, {}), std::invalid_argument);
  EXPECT_THROW(model->forward_stage(2, 4, b.src, b.src_mask, b.tgt, b.tgt_mask, {}), std::invalid_argument);
}

}  // namespace
}  // namespace moetrain::models
