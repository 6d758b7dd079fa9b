// Seq2SeqTransformer: the whole MoE encoder-decoder, as a sequence of stages
//   [embed, encoder.layers.0..E-1, encoder.final_norm,
//    embed, decoder.layers.0..D-1, decoder.final_norm, lm_head]
// (the same cut points the pipeline schedule uses). encode() and decode() are
// the two halves, public for generation and pipeline stages; forward() is
// encode then decode.
//
// Registered parameter names (checkpoint and export code rely on them):
//   embed_tokens.weight                 shared by encoder, decoder and, when
//                                       tie_embeddings, the output projection
//   embed_positions.weight              learned positions only (sinusoidal and
//                                       sinusoidal_fairseq: the buffer
//                                       embed_positions.table; rotary: no module)
//   encoder.layers.N.{self_attn_norm, self_attn.{q,k,v,o}_proj[, self_attn.gate],
//                     ffn_norm, ffn.fc1/fc2 | moe.router, moe.experts_*}
//   encoder.final_norm.{weight,bias}
//   decoder.layers.N.{self_attn_norm, self_attn.*, cross_attn_norm, cross_attn.*,
//                     ffn_norm, ffn.* | moe.*}
//   decoder.final_norm.{weight,bias}
//   lm_head.weight                      only when not tied (no bias)
//   ....lora_A, ....lora_B, moe.experts_fc{1,2}_lora_{A,B}
//                                       LoRA adapters, after add_lora (models/lora.h)
//
// Dtype: every parameter may be swapped for a bf16/fp16 tensor
// (param.set_data(...)); the model then computes in that dtype, keeping the
// router, softmax and norm statistics in fp32, and returns logits in it.
// Initialisation draws only from the default generator (torch::manual_seed).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "models/linear.h"
#include "models/model_config.h"
#include "models/model_parallelism.h"
#include "models/moe_layer.h"
#include "models/norm.h"
#include "models/positions.h"
#include "models/transformer_layers.h"

namespace moetrain::models {

struct MoEStats {
  torch::Tensor aux_loss;           // fp32 scalar, SUM over MoE layers (0 if none), differentiable
  torch::Tensor z_loss;             // fp32 scalar, SUM over MoE layers, differentiable
  torch::Tensor tokens_per_expert;  // int64 [num_moe_layers, E], detached ([0, E] if none);
                                    // encoder MoE layers first, then decoder
  int64_t dropped = 0;              // dropped assignments, all layers
  int64_t num_moe_layers = 0;
};

// Per-layer statistics (in layer order) summed into MoEStats; zero losses and
// a [0, num_experts] count tensor on `device` when `layers` is empty.
MoEStats collect_moe_stats(const std::vector<MoELayerStats>& layers, int64_t num_experts, const torch::Device& device);
// first's layers, then second's.
MoEStats merge_moe_stats(const MoEStats& first, const MoEStats& second);

struct Seq2SeqOutput {
  torch::Tensor logits;  // [B, T, V], parameter dtype
  MoEStats moe;
};

struct EncoderOutput {
  torch::Tensor hidden;  // [B, S, D] after encoder.final_norm
  MoEStats moe;
};

// What travels between pipeline stages for one micro-batch.
struct StageActivations {
  // [B, S, D]: the encoder's hidden state while inside the encoder, its
  // output (after encoder.final_norm) past it; every decoder stage reads it
  // for cross-attention, so its gradient sums over the decoder stages.
  torch::Tensor encoder;
  // [B, T, D]: the embedded target (the first stage embeds it, and encoder
  // stages pass it on), then the decoder's hidden state.
  torch::Tensor decoder;
};

struct StageOutput {
  StageActivations activations;  // what the next stage receives
  torch::Tensor logits;          // [B, T, V] (this rank's columns under TP); the stage with lm_head only
  MoEStats moe;                  // this stage's MoE layers only
};

// The decoder's state while generating one token at a time: per layer, the
// keys and values of the target positions so far and of the source.
struct DecoderState {
  std::vector<DecoderLayerCache> layers;
  torch::Tensor cross_mask;  // [B, 1, 1, S]
  int64_t length = 0;        // target positions decoded so far
  int64_t batch() const { return cross_mask.defined() ? cross_mask.size(0) : 0; }
  // Keeps batch rows `index` [N] int64 (repeats allowed): beam search's reordering.
  void select_rows(const torch::Tensor& index);
};

// A stack of layers plus its final norm; the model loops over the layers
// itself (so stages and checkpointing can cut between them).
class TransformerEncoderImpl : public torch::nn::Module {
 public:
  explicit TransformerEncoderImpl(const ModelConfig& cfg);
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  const EncoderLayer& layer(int64_t i) const { return layers_.at(static_cast<size_t>(i)); }

  torch::nn::ModuleList layers{nullptr};
  Norm final_norm{nullptr};

 private:
  std::vector<EncoderLayer> layers_;
};
TORCH_MODULE(TransformerEncoder);

class TransformerDecoderImpl : public torch::nn::Module {
 public:
  explicit TransformerDecoderImpl(const ModelConfig& cfg);
  int64_t num_layers() const { return static_cast<int64_t>(layers_.size()); }
  const DecoderLayer& layer(int64_t i) const { return layers_.at(static_cast<size_t>(i)); }

  torch::nn::ModuleList layers{nullptr};
  Norm final_norm{nullptr};

 private:
  std::vector<DecoderLayer> layers_;
};
TORCH_MODULE(TransformerDecoder);

class Seq2SeqTransformerImpl : public torch::nn::Module {
 public:
  explicit Seq2SeqTransformerImpl(const ModelConfig& cfg);  // cfg.vocab_size > 0

  // src_tokens [B, S] int64, src_mask [B, S] bool (true = real token),
  // tgt_in [B, T] int64, tgt_mask [B, T] bool.
  Seq2SeqOutput forward(const torch::Tensor& src_tokens, const torch::Tensor& src_mask, const torch::Tensor& tgt_in,
                        const torch::Tensor& tgt_mask);

  // embed -> encoder layers -> encoder.final_norm.
  EncoderOutput encode(const torch::Tensor& src_tokens, const torch::Tensor& src_mask);

  // embed -> decoder layers (self-attention causal, cross-attention over
  // encoder_hidden [B, S, D]) -> decoder.final_norm -> lm_head. The returned
  // stats cover the decoder's MoE layers only.
  Seq2SeqOutput decode(const torch::Tensor& tgt_in, const torch::Tensor& tgt_mask, const torch::Tensor& encoder_hidden,
                       const torch::Tensor& src_mask);

  // Incremental decoding, for generation in eval mode on the whole model:
  // start_decoding projects the encoder output once per layer for
  // cross-attention; decode_step embeds tokens [B] int64 at target position
  // state.length, runs them through the decoder against the cache (extending
  // it), and returns the next-token logits [B, V]: what decode() gives at that
  // position for the same prefix, at the cost of one position instead of all.
  // Throws std::logic_error under a layer runner (ZeRO 3) or pipeline stages.
  DecoderState start_decoding(const torch::Tensor& encoder_hidden, const torch::Tensor& src_mask);
  torch::Tensor decode_step(DecoderState& state, const torch::Tensor& tokens);

  // For inference: moves the model to `device` with every parameter in
  // `parameter_dtype` (the model then computes in it; the position tables
  // stay fp32 buffers, cast at use).
  void place(const torch::Device& device, torch::ScalarType parameter_dtype);

  // tokens [B, L] -> embed_tokens * sqrt(d_model) (if scale_embeddings) +
  // absolute positions offset..offset+L-1, then dropout. [B, L, D].
  torch::Tensor embed(const torch::Tensor& tokens, int64_t position_offset = 0);

  // hidden [B, T, D] (after decoder.final_norm) -> logits [B, T, V].
  torch::Tensor project_to_vocab(const torch::Tensor& hidden);

  // The output projection's weight [V, D]: embed_tokens.weight itself when tied.
  torch::Tensor lm_head_weight() const;

  const ModelConfig& config() const { return cfg_; }

  // Pipeline units: the model as the sequence pipeline stages cut
  // (ModelConfig::pipeline_unit_name): embed (the source and the target: the
  // first stage embeds both), each encoder layer, encoder.final_norm, each
  // decoder layer, decoder.final_norm, lm_head (the output projection;
  // embed_tokens.weight when tied).
  int64_t num_pipeline_units() const { return cfg_.num_pipeline_units(); }
  std::string pipeline_unit_name(int64_t unit) const { return cfg_.pipeline_unit_name(unit); }
  // Parameters each unit owns (a tied lm_head owns none: its weight is the
  // embedding's), the cost for an automatic partition.
  std::vector<int64_t> pipeline_unit_costs();
  // Whether units [begin, end) use parameter `name` (a full parameter name;
  // a tied lm_head uses embed_tokens.weight).
  bool pipeline_units_use(int64_t begin, int64_t end, const std::string& name) const;
  // Runs units [begin, end) on `input` (the previous stage's activations; not
  // read when begin is 0, where the tokens are embedded). The masks are the
  // micro-batch's, which every stage has. Chaining the stages of any
  // partition computes what forward() computes (with dropout, the draws come
  // in another order: both embeddings first).
  StageOutput forward_stage(int64_t begin, int64_t end, const torch::Tensor& src_tokens, const torch::Tensor& src_mask,
                            const torch::Tensor& tgt_in, const torch::Tensor& tgt_mask, const StageActivations& input);

  // Splits this (whole, freshly built) model for tensor and expert
  // parallelism: layers as their parallelize says (EP keeps a block of each
  // MoE layer's experts), and under TP the token embedding (and lm_head when
  // untied) by vocabulary rows, padded so every TP rank holds
  // vocab_shard().local_size rows. From then on project_to_vocab returns this
  // rank's logit columns [B, T, local_size]: use
  // parallel::vocab_parallel_cross_entropy on them. Call once, before the
  // parameters are handed to an optimizer.
  // Context parallelism (mp.cp): nothing is split; from then on encode,
  // decode, forward and forward_stage take this rank's positions of every
  // sequence (parallel::context_parallel_slice of the padded batch, whose
  // lengths are multiples of 2 * cp) and give the outputs at those positions.
  void parallelize(const ModelParallelism& mp);

  // Adds LoRA adapters (models/lora.h) to the layers lora.targets names; call
  // on the whole model, before parallelize. Returns how many projections got
  // one (a MoE layer's experts count once per projection). Throws
  // std::invalid_argument for an unknown target or one that matches nothing.
  int64_t add_lora(const LoraConfig& lora);
  const ModelParallelism& parallelism() const { return parallelism_; }
  // The vocabulary this rank's logits cover (the whole one without TP).
  const parallel::VocabShard& vocab_shard() const { return vocab_; }
  // Where each split parameter (full name) sits in the whole tensor; absent
  // for parameters every rank holds whole.
  const ParameterSlices& parameter_slices() const { return slices_; }

  // Every encoder and decoder layer call goes through `runner` (empty: run
  // them directly, with activation checkpointing as configured). Units are
  // named "encoder.layers.N" / "decoder.layers.N".
  void set_layer_runner(LayerRunner runner) { layer_runner_ = std::move(runner); }

  torch::nn::Embedding embed_tokens{nullptr};
  AbsolutePositions embed_positions{nullptr};  // null for rotary positions
  TransformerEncoder encoder{nullptr};
  TransformerDecoder decoder{nullptr};
  Linear lm_head{nullptr};  // null when tied

 private:
  // The global positions of this rank's `local_length` tokens of a sequence:
  // the context-parallel layout's, or 0 .. local_length-1 without CP.
  torch::Tensor sequence_positions(int64_t local_length, const torch::Device& device) const;
  // embed() of this rank's tokens at their positions.
  torch::Tensor embed_sequence(const torch::Tensor& tokens);
  // The masks of an encoder (causal false) or decoder self-attention, and of
  // cross-attention: dense, or the context-parallel form.
  AttentionMasks self_attention_masks(const torch::Tensor& padding_mask, bool causal) const;
  AttentionMasks cross_attention_masks(const torch::Tensor& src_mask, int64_t tgt_len) const;

  ModelConfig cfg_;
  LayerRunner layer_runner_;
  ModelParallelism parallelism_;
  parallel::VocabShard vocab_;
  ParameterSlices slices_;
};
TORCH_MODULE(Seq2SeqTransformer);

}  // namespace moetrain::models
