#include "models/seq2seq_transformer.h"

#include <algorithm>
#include <cmath>
#include <map>
#include <optional>
#include <set>
#include <stdexcept>
#include <string>

#include "kernels/dispatch.h"
#include "models/attention.h"

namespace moetrain::models {

namespace {

// encoder_hidden [batch, S, d_model] and src_mask [batch, S] bool, as decode() takes them.
void check_encoder_output(const torch::Tensor& encoder_hidden, const torch::Tensor& src_mask, int64_t batch,
                          int64_t d_model, const char* who) {
  if (!encoder_hidden.defined() || encoder_hidden.dim() != 3 || encoder_hidden.size(2) != d_model ||
      encoder_hidden.size(0) != batch) {
    throw std::invalid_argument(std::string("Seq2SeqTransformer::") + who + ": expected encoder_hidden [" +
                                std::to_string(batch) + ", S, " + std::to_string(d_model) + "], got " +
                                kernels::describe_tensor(encoder_hidden));
  }
  if (!src_mask.defined() || src_mask.scalar_type() != torch::kBool || src_mask.dim() != 2 ||
      src_mask.size(0) != encoder_hidden.size(0) || src_mask.size(1) != encoder_hidden.size(1)) {
    throw std::invalid_argument(std::string("Seq2SeqTransformer::") + who + ": src_mask must be bool [" +
                                std::to_string(encoder_hidden.size(0)) + ", " + std::to_string(encoder_hidden.size(1)) +
                                "], got " + kernels::describe_tensor(src_mask));
  }
}

void check_tokens(const torch::Tensor& tokens, const torch::Tensor& mask, const char* which) {
  if (!tokens.defined() || tokens.dim() != 2 || tokens.scalar_type() != torch::kLong) {
    throw std::invalid_argument(std::string("Seq2SeqTransformer: ") + which + " tokens must be [B, L] int64, got " +
                                kernels::describe_tensor(tokens));
  }
  if (!mask.defined() || mask.scalar_type() != torch::kBool || mask.sizes() != tokens.sizes()) {
    throw std::invalid_argument(std::string("Seq2SeqTransformer: ") + which + " mask must be bool " +
                                c10::str(tokens.sizes()) + " like its tokens, got " + kernels::describe_tensor(mask));
  }
  if (tokens.size(0) == 0 || tokens.size(1) == 0) {
    throw std::invalid_argument(std::string("Seq2SeqTransformer: empty ") + which + " batch " +
                                c10::str(tokens.sizes()));
  }
}

}  // namespace

MoEStats collect_moe_stats(const std::vector<MoELayerStats>& layers, int64_t num_experts, const torch::Device& device) {
  MoEStats s;
  const auto f32 = torch::TensorOptions().dtype(torch::kFloat).device(device);
  s.aux_loss = torch::zeros({}, f32);
  s.z_loss = torch::zeros({}, f32);
  if (layers.empty()) {
    s.tokens_per_expert = torch::zeros({0, std::max<int64_t>(num_experts, 0)}, f32.dtype(torch::kLong));
    return s;
  }
  std::vector<torch::Tensor> counts;
  for (const auto& l : layers) {
    s.aux_loss = s.aux_loss + l.aux_loss;
    s.z_loss = s.z_loss + l.z_loss;
    counts.push_back(l.tokens_per_expert.to(device));
    s.dropped += l.dropped;
  }
  s.tokens_per_expert = torch::stack(counts, 0).detach();
  s.num_moe_layers = static_cast<int64_t>(layers.size());
  return s;
}

MoEStats merge_moe_stats(const MoEStats& first, const MoEStats& second) {
  MoEStats s;
  s.aux_loss = first.aux_loss + second.aux_loss;
  s.z_loss = first.z_loss + second.z_loss;
  s.tokens_per_expert = torch::cat({first.tokens_per_expert, second.tokens_per_expert}, 0);
  s.dropped = first.dropped + second.dropped;
  s.num_moe_layers = first.num_moe_layers + second.num_moe_layers;
  return s;
}

TransformerEncoderImpl::TransformerEncoderImpl(const ModelConfig& cfg) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.encoder_layers; ++i) {
    layers_.emplace_back(cfg, i);
    layers->push_back(layers_.back());
  }
  final_norm = register_module("final_norm", Norm(cfg.norm, cfg.d_model, cfg.norm_eps));
}

TransformerDecoderImpl::TransformerDecoderImpl(const ModelConfig& cfg) {
  layers = register_module("layers", torch::nn::ModuleList());
  for (int64_t i = 0; i < cfg.decoder_layers; ++i) {
    layers_.emplace_back(cfg, i);
    layers->push_back(layers_.back());
  }
  final_norm = register_module("final_norm", Norm(cfg.norm, cfg.d_model, cfg.norm_eps));
}

Seq2SeqTransformerImpl::Seq2SeqTransformerImpl(const ModelConfig& cfg) : cfg_(cfg) {
  if (cfg.vocab_size <= 0) {
    throw std::invalid_argument("Seq2SeqTransformer: vocab_size must be set (> 0), got " +
                                std::to_string(cfg.vocab_size));
  }
  if (cfg.d_model <= 0 || cfg.encoder_layers < 0 || cfg.decoder_layers < 0) {
    throw std::invalid_argument("Seq2SeqTransformer: bad sizes d_model=" + std::to_string(cfg.d_model) +
                                " encoder_layers=" + std::to_string(cfg.encoder_layers) +
                                " decoder_layers=" + std::to_string(cfg.decoder_layers));
  }
  embed_tokens = register_module("embed_tokens", torch::nn::Embedding(cfg.vocab_size, cfg.d_model));
  {
    torch::NoGradGuard no_grad;
    embed_tokens->weight.normal_(0.0, cfg.init_std);
  }
  if (cfg.position != PositionType::Rotary) {
    embed_positions = register_module("embed_positions", AbsolutePositions(cfg));
  }
  encoder = register_module("encoder", TransformerEncoder(cfg));
  decoder = register_module("decoder", TransformerDecoder(cfg));
  if (!cfg.tie_embeddings) {
    lm_head = register_module("lm_head", Linear(cfg.d_model, cfg.vocab_size, /*bias=*/false, cfg.init_std));
  }
  vocab_ = parallel::vocab_shard(cfg.vocab_size, 1, 0);
}

void Seq2SeqTransformerImpl::parallelize(const ModelParallelism& mp) {
  if (!mp.tensor_parallel() && !mp.expert_parallel() && !mp.context_parallel()) {
    parallelism_ = mp;
    return;
  }
  if (!slices_.empty()) throw std::logic_error("Seq2SeqTransformer::parallelize: already split");
  parallelism_ = mp;
  if (mp.tensor_parallel()) {
    const int64_t tp = mp.tp_size(), rank = mp.tp_rank();
    vocab_ = parallel::vocab_shard(cfg_.vocab_size, tp, rank);
    slices_["embed_tokens.weight"] = split_parameter(embed_tokens->weight, 0, rank, tp, vocab_.padded_size);
    if (!lm_head.is_empty())
      slices_["lm_head.weight"] = split_parameter(lm_head->weight, 0, rank, tp, vocab_.padded_size);
  }
  for (int64_t i = 0; i < encoder->num_layers(); ++i) {
    add_slices(slices_, "encoder.layers." + std::to_string(i),
               encoder->layers->ptr<EncoderLayerImpl>(i)->parallelize(mp));
  }
  for (int64_t i = 0; i < decoder->num_layers(); ++i) {
    add_slices(slices_, "decoder.layers." + std::to_string(i),
               decoder->layers->ptr<DecoderLayerImpl>(i)->parallelize(mp));
  }
}

int64_t Seq2SeqTransformerImpl::add_lora(const LoraConfig& lora) {
  if (!slices_.empty()) throw std::logic_error("Seq2SeqTransformer::add_lora after parallelize");
  if (lora.r < 1) throw std::invalid_argument("LoRA rank must be at least 1, got " + std::to_string(lora.r));
  check_lora_targets(lora.targets);
  std::map<std::string, int64_t> matches;
  for (const auto& t : lora.targets) matches[t] = 0;
  // The target that adapts a module called `name` (or its broader forms), if any.
  auto wanted = [&](std::initializer_list<const char*> names) -> int64_t* {
    for (const char* n : names) {
      if (matches.count(n)) return &matches[n];
    }
    return matches.count("all-linear") ? &matches["all-linear"] : nullptr;
  };
  int64_t adapted = 0;
  for (const auto& item : named_modules(/*name_prefix=*/"", /*include_self=*/false)) {
    const std::string& name = item.key();
    const std::string last = name.substr(name.rfind('.') + 1);
    if (auto* linear = dynamic_cast<LinearImpl*>(item.value().get())) {
      // Only the projections inside attention and the dense FFN: the router,
      // the attention gate and lm_head are not targets.
      static const std::set<std::string> projections = {"q_proj", "k_proj", "v_proj", "o_proj", "fc1", "fc2"};
      if (!projections.count(last)) continue;
      if (int64_t* hits = wanted({last.c_str()})) {
        linear->add_lora(lora);
        ++*hits;
        ++adapted;
      }
    } else if (auto* moe = dynamic_cast<MoELayerImpl*>(item.value().get())) {
      int64_t* fc1 = wanted({"experts_fc1", "experts"});
      int64_t* fc2 = wanted({"experts_fc2", "experts"});
      if (!fc1 && !fc2) continue;
      moe->add_lora(lora, fc1 != nullptr, fc2 != nullptr);
      if (fc1) ++*fc1, ++adapted;
      if (fc2) ++*fc2, ++adapted;
    }
  }
  for (const auto& [target, hits] : matches) {
    if (hits == 0) throw std::invalid_argument("LoRA target '" + target + "' matches no layer of this model");
  }
  return adapted;
}

torch::Tensor Seq2SeqTransformerImpl::embed(const torch::Tensor& tokens, int64_t position_offset) {
  if (!tokens.defined() || tokens.dim() != 2 || tokens.scalar_type() != torch::kLong) {
    throw std::invalid_argument("Seq2SeqTransformer::embed: tokens must be [B, L] int64, got " +
                                kernels::describe_tensor(tokens));
  }
  // Checked for every position kind, rotary included, so an over-long batch
  // fails here with one clear message.
  check_positions(tokens.size(1), position_offset, cfg_.max_positions);
  torch::Tensor h = parallelism_.tensor_parallel()
                        ? parallel::vocab_parallel_embedding(tokens, embed_tokens->weight, vocab_, parallelism_.tp)
                        : embed_tokens(tokens);
  if (cfg_.scale_embeddings) h = h * std::sqrt(static_cast<double>(cfg_.d_model));
  if (!embed_positions.is_empty()) h = embed_positions(h, position_offset);
  return torch::dropout(h, cfg_.dropout, is_training());
}

torch::Tensor Seq2SeqTransformerImpl::sequence_positions(int64_t local_length, const torch::Device& device) const {
  const int64_t cp = parallelism_.cp_size();
  return parallel::context_parallel_positions(local_length * cp, cp, parallelism_.cp_rank(), device);
}

torch::Tensor Seq2SeqTransformerImpl::embed_sequence(const torch::Tensor& tokens) {
  if (!parallelism_.context_parallel()) return embed(tokens);
  if (!tokens.defined() || tokens.dim() != 2 || tokens.scalar_type() != torch::kLong) {
    throw std::invalid_argument("Seq2SeqTransformer::embed: tokens must be [B, L] int64, got " +
                                kernels::describe_tensor(tokens));
  }
  check_positions(tokens.size(1) * parallelism_.cp_size(), 0, cfg_.max_positions);
  torch::Tensor h = parallelism_.tensor_parallel()
                        ? parallel::vocab_parallel_embedding(tokens, embed_tokens->weight, vocab_, parallelism_.tp)
                        : embed_tokens(tokens);
  if (cfg_.scale_embeddings) h = h * std::sqrt(static_cast<double>(cfg_.d_model));
  if (!embed_positions.is_empty())
    h = embed_positions->at_positions(h, sequence_positions(tokens.size(1), tokens.device()));
  return torch::dropout(h, cfg_.dropout, is_training());
}

AttentionMasks Seq2SeqTransformerImpl::self_attention_masks(const torch::Tensor& padding_mask, bool causal) const {
  if (!parallelism_.context_parallel()) {
    return make_self_attention_masks(cfg_.attention, cfg_.local_window, padding_mask, causal);
  }
  return make_context_parallel_self_masks(padding_mask, sequence_positions(padding_mask.size(1), padding_mask.device()),
                                          causal, parallelism_.cp, parallelism_.cp_mode);
}

AttentionMasks Seq2SeqTransformerImpl::cross_attention_masks(const torch::Tensor& src_mask, int64_t tgt_len) const {
  if (!parallelism_.context_parallel()) return AttentionMasks{make_cross_attention_mask(src_mask, tgt_len), {}, {}};
  return make_context_parallel_cross_masks(src_mask, sequence_positions(tgt_len, src_mask.device()),
                                           sequence_positions(src_mask.size(1), src_mask.device()), parallelism_.cp,
                                           parallelism_.cp_mode);
}

torch::Tensor Seq2SeqTransformerImpl::lm_head_weight() const {
  return cfg_.tie_embeddings ? embed_tokens->weight : lm_head->weight;
}

torch::Tensor Seq2SeqTransformerImpl::project_to_vocab(const torch::Tensor& hidden) {
  if (hidden.dim() != 3 || hidden.size(2) != cfg_.d_model) {
    throw std::invalid_argument("Seq2SeqTransformer::project_to_vocab: expected hidden [B, T, " +
                                std::to_string(cfg_.d_model) + "], got " + c10::str(hidden.sizes()));
  }
  // Under TP the weight holds this rank's vocabulary rows: f (identity
  // forward, all-reduce of the gradient backward) makes the hidden state's
  // gradient whole again.
  if (parallelism_.tensor_parallel()) {
    return torch::linear(parallel::copy_to_tensor_parallel_region(hidden, parallelism_.tp), lm_head_weight());
  }
  return torch::linear(hidden, lm_head_weight());
}

EncoderOutput Seq2SeqTransformerImpl::encode(const torch::Tensor& src_tokens, const torch::Tensor& src_mask) {
  check_tokens(src_tokens, src_mask, "source");
  const AttentionMasks self_masks = self_attention_masks(src_mask, /*causal=*/false);
  std::vector<MoELayerStats> moe;

  torch::Tensor h = embed_sequence(src_tokens);
  for (int64_t i = 0; i < encoder->num_layers(); ++i) {
    LayerOutput out = run_layer(encoder->layer(i), h, self_masks, src_mask, cfg_.activation_checkpointing,
                                layer_runner_, layer_runner_ ? "encoder.layers." + std::to_string(i) : "");
    h = out.hidden;
    if (out.moe) moe.push_back(std::move(*out.moe));
  }
  h = encoder->final_norm(h);
  return {h, collect_moe_stats(moe, cfg_.moe.num_experts, h.device())};
}

Seq2SeqOutput Seq2SeqTransformerImpl::decode(const torch::Tensor& tgt_in, const torch::Tensor& tgt_mask,
                                             const torch::Tensor& encoder_hidden, const torch::Tensor& src_mask) {
  check_tokens(tgt_in, tgt_mask, "target");
  check_encoder_output(encoder_hidden, src_mask, tgt_in.size(0), cfg_.d_model, "decode");
  const AttentionMasks self_masks = self_attention_masks(tgt_mask, /*causal=*/true);
  const AttentionMasks cross_masks = cross_attention_masks(src_mask, tgt_in.size(1));
  std::vector<MoELayerStats> moe;

  torch::Tensor y = embed_sequence(tgt_in);
  for (int64_t i = 0; i < decoder->num_layers(); ++i) {
    LayerOutput out = run_layer(decoder->layer(i), y, encoder_hidden, self_masks, cross_masks, tgt_mask,
                                cfg_.activation_checkpointing, layer_runner_,
                                layer_runner_ ? "decoder.layers." + std::to_string(i) : "");
    y = out.hidden;
    if (out.moe) moe.push_back(std::move(*out.moe));
  }
  y = decoder->final_norm(y);
  return {project_to_vocab(y), collect_moe_stats(moe, cfg_.moe.num_experts, y.device())};
}

void Seq2SeqTransformerImpl::place(const torch::Device& device, torch::ScalarType parameter_dtype) {
  torch::NoGradGuard no_grad;
  to(device);
  for (auto& p : parameters()) p.set_data(p.to(parameter_dtype));
}

void DecoderState::select_rows(const torch::Tensor& index) {
  for (auto& layer : layers) {
    layer.self.select_rows(index);
    layer.cross.select_rows(index);
  }
  cross_mask = cross_mask.index_select(0, index.to(cross_mask.device()));
}

DecoderState Seq2SeqTransformerImpl::start_decoding(const torch::Tensor& encoder_hidden,
                                                    const torch::Tensor& src_mask) {
  if (layer_runner_) {
    throw std::logic_error("Seq2SeqTransformer::start_decoding: incremental decoding runs without a layer runner");
  }
  const int64_t batch = encoder_hidden.defined() && encoder_hidden.dim() == 3 ? encoder_hidden.size(0) : 0;
  check_encoder_output(encoder_hidden, src_mask, batch, cfg_.d_model, "start_decoding");
  DecoderState state;
  state.cross_mask = make_cross_attention_mask(src_mask, 1);
  for (int64_t i = 0; i < decoder->num_layers(); ++i) {
    state.layers.push_back(decoder->layers->ptr<DecoderLayerImpl>(i)->start_cache(encoder_hidden));
  }
  return state;
}

torch::Tensor Seq2SeqTransformerImpl::decode_step(DecoderState& state, const torch::Tensor& tokens) {
  if (layer_runner_) {
    throw std::logic_error("Seq2SeqTransformer::decode_step: incremental decoding runs without a layer runner");
  }
  if (tokens.dim() != 1 || tokens.scalar_type() != torch::kLong || tokens.size(0) != state.batch() ||
      static_cast<int64_t>(state.layers.size()) != decoder->num_layers()) {
    throw std::invalid_argument("Seq2SeqTransformer::decode_step: expected tokens [" + std::to_string(state.batch()) +
                                "] int64 and a state from start_decoding, got " +
                                c10::str(tokens.sizes(), " ", tokens.scalar_type()));
  }
  torch::Tensor y = embed(tokens.unsqueeze(1), state.length);
  for (int64_t i = 0; i < decoder->num_layers(); ++i) {
    y = decoder->layers->ptr<DecoderLayerImpl>(i)
            ->forward_step(y, state.layers[static_cast<size_t>(i)], state.cross_mask)
            .hidden;
  }
  ++state.length;
  return project_to_vocab(decoder->final_norm(y)).squeeze(1);
}

bool Seq2SeqTransformerImpl::pipeline_units_use(int64_t begin, int64_t end, const std::string& name) const {
  const bool tied_head = cfg_.tie_embeddings && end == num_pipeline_units();
  for (int64_t u = begin; u < end; ++u) {
    const std::string unit = pipeline_unit_name(u);
    if (unit == "embed") {
      if (name.rfind("embed_tokens.", 0) == 0 || name.rfind("embed_positions.", 0) == 0) return true;
    } else if (name.rfind(unit + ".", 0) == 0) {
      return true;
    }
  }
  return tied_head && name == "embed_tokens.weight";
}

std::vector<int64_t> Seq2SeqTransformerImpl::pipeline_unit_costs() {
  std::vector<int64_t> costs(static_cast<size_t>(num_pipeline_units()), 0);
  for (const auto& item : named_parameters(/*recurse=*/true)) {
    for (int64_t u = 0; u < num_pipeline_units(); ++u) {
      // A tied lm_head owns nothing: the embedding is counted in unit 0.
      if (u + 1 == num_pipeline_units() && cfg_.tie_embeddings) continue;
      if (pipeline_units_use(u, u + 1, item.key())) {
        costs[static_cast<size_t>(u)] += item.value().numel();
        break;
      }
    }
  }
  return costs;
}

StageOutput Seq2SeqTransformerImpl::forward_stage(int64_t begin, int64_t end, const torch::Tensor& src_tokens,
                                                  const torch::Tensor& src_mask, const torch::Tensor& tgt_in,
                                                  const torch::Tensor& tgt_mask, const StageActivations& input) {
  const int64_t e = cfg_.encoder_layers, d = cfg_.decoder_layers;
  if (begin < 0 || begin >= end || end > num_pipeline_units()) {
    throw std::invalid_argument("Seq2SeqTransformer::forward_stage: units [" + std::to_string(begin) + ", " +
                                std::to_string(end) + ") are not a stage of " + std::to_string(num_pipeline_units()) +
                                " units");
  }
  check_tokens(src_tokens, src_mask, "source");
  check_tokens(tgt_in, tgt_mask, "target");
  if (begin > 0 && (!input.encoder.defined() || !input.decoder.defined())) {
    throw std::invalid_argument("Seq2SeqTransformer::forward_stage: a stage starting at unit " + std::to_string(begin) +
                                " needs both activations of the stage before");
  }
  StageOutput out;
  StageActivations a = input;
  std::vector<MoELayerStats> moe;
  std::optional<AttentionMasks> encoder_masks, decoder_masks, cross_masks;
  for (int64_t u = begin; u < end; ++u) {
    if (u == 0) {
      a.encoder = embed_sequence(src_tokens);
      a.decoder = embed_sequence(tgt_in);
    } else if (u <= e) {
      if (!encoder_masks) encoder_masks = self_attention_masks(src_mask, /*causal=*/false);
      const int64_t i = u - 1;
      LayerOutput lo = run_layer(encoder->layer(i), a.encoder, *encoder_masks, src_mask, cfg_.activation_checkpointing,
                                 layer_runner_, layer_runner_ ? "encoder.layers." + std::to_string(i) : "");
      a.encoder = lo.hidden;
      if (lo.moe) moe.push_back(std::move(*lo.moe));
    } else if (u == e + 1) {
      a.encoder = encoder->final_norm(a.encoder);
    } else if (u <= e + d + 1) {
      if (!decoder_masks) {
        decoder_masks = self_attention_masks(tgt_mask, /*causal=*/true);
        cross_masks = cross_attention_masks(src_mask, tgt_in.size(1));
      }
      const int64_t i = u - e - 2;
      LayerOutput lo = run_layer(decoder->layer(i), a.decoder, a.encoder, *decoder_masks, *cross_masks, tgt_mask,
                                 cfg_.activation_checkpointing, layer_runner_,
                                 layer_runner_ ? "decoder.layers." + std::to_string(i) : "");
      a.decoder = lo.hidden;
      if (lo.moe) moe.push_back(std::move(*lo.moe));
    } else if (u == e + d + 2) {
      a.decoder = decoder->final_norm(a.decoder);
    } else {
      out.logits = project_to_vocab(a.decoder);
    }
  }
  out.activations = a;
  out.moe = collect_moe_stats(moe, cfg_.moe.num_experts, a.decoder.device());
  return out;
}

Seq2SeqOutput Seq2SeqTransformerImpl::forward(const torch::Tensor& src_tokens, const torch::Tensor& src_mask,
                                              const torch::Tensor& tgt_in, const torch::Tensor& tgt_mask) {
  check_tokens(src_tokens, src_mask, "source");
  check_tokens(tgt_in, tgt_mask, "target");
  if (src_tokens.size(0) != tgt_in.size(0)) {
    throw std::invalid_argument("Seq2SeqTransformer: source batch " + std::to_string(src_tokens.size(0)) +
                                " != target batch " + std::to_string(tgt_in.size(0)));
  }
  EncoderOutput encoded = encode(src_tokens, src_mask);
  Seq2SeqOutput out = decode(tgt_in, tgt_mask, encoded.hidden, src_mask);
  out.moe = merge_moe_stats(encoded.moe, out.moe);
  return out;
}

}  // namespace moetrain::models
