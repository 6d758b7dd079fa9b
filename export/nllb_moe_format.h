// The NLLB-MoE layout of an export: what `moetrain export` writes when a
// model has the architecture of Hugging Face's NLLB-MoE
// (transformers' NllbMoeForConditionalGeneration), so that
// `from_pretrained` loads it and computes the same logits; and its dense
// sibling, the M2M100 layout (M2M100ForConditionalGeneration, the
// architecture of NLLB-200's dense models and of M2M100), which is NLLB-MoE
// without sparse layers under other module names. `moetrain import` reads
// both through the same maps.
//
// NLLB-MoE's architecture in moetrain's terms (nllb_moe_compatible checks
// each point and names the first that fails):
//   - model.norm layernorm with norm_eps 1e-5 (torch's LayerNorm default, which
//     NLLB-MoE uses), pre-norm blocks and final norms (moetrain always has both);
//   - model.position sinusoidal_fairseq (models/positions.h), and the
//     tokenizer's pad id equal to model.pad_id (both count positions from
//     pad id + 1);
//   - model.attention global, model.bias true (every projection has a bias;
//     the router has none, as NLLB-MoE's default router_bias false);
//   - model.activation relu, gelu or silu (transformers' ACT2FN names);
//   - MoE: top_k 2 with normalize_top_k (NLLB's top-2 router renormalises the
//     two gates), expert hidden width = d_ff (NLLB-MoE uses encoder_ffn_dim /
//     decoder_ffn_dim for dense and sparse layers alike); moe.every becomes
//     encoder_sparse_step and decoder_sparse_step (the same rule: layer i is
//     sparse when (i + 1) % step == 0), 0 a dense model;
//   - scale_embeddings and tie_embeddings: any (scale_embedding,
//     tie_word_embeddings).
// In eval mode NLLB-MoE gives every expert a capacity of all the batch's
// tokens (moe_eval_capacity_token_fraction 1.0), which is moetrain's dropless
// inference (what `moetrain generate` uses); moe_token_dropout is the model's
// moe.token_dropout, and the special ids (decoder start included) are the
// tokenizer's.
//
// Names (moetrain -> NLLB-MoE), N a layer, E an expert:
//   embed_tokens.weight                       model.shared.weight (tied: transformers ties
//                                             the encoder's and decoder's embed_tokens and
//                                             lm_head to it; untied: also written as
//                                             model.{encoder,decoder}.embed_tokens.weight)
//   {encoder,decoder}.layers.N.self_attn_norm model.{..}.layers.N.self_attn_layer_norm
//   *.self_attn.{q,k,v}_proj / o_proj         *.self_attn.{q,k,v}_proj / out_proj
//   decoder.layers.N.cross_attn_norm          model.decoder.layers.N.cross_attention_layer_norm
//   decoder.layers.N.cross_attn.*             model.decoder.layers.N.cross_attention.* (o_proj: out_proj)
//   *.ffn_norm                                *.ff_layer_norm
//   *.ffn.fc1 / fc2                           *.ffn.fc1 / fc2
//   *.moe.router.weight                       *.ffn.router.classifier.weight
//   *.moe.experts_fc1_weight [E, F, D]        *.ffn.experts.expert_E.fc1.weight [F, D], one per expert
//   *.moe.experts_fc1_bias [E, F]             *.ffn.experts.expert_E.fc1.bias [F]
//   *.moe.experts_fc2_{weight,bias}           *.ffn.experts.expert_E.fc2.{weight,bias}
//   {encoder,decoder}.final_norm              model.{encoder,decoder}.layer_norm
//   lm_head.weight (untied only)              lm_head.weight
// and in the M2M100 layout, which has no sparse layer (model.moe.every 0):
//   decoder.layers.N.cross_attn_norm          model.decoder.layers.N.encoder_attn_layer_norm
//   decoder.layers.N.cross_attn.*             model.decoder.layers.N.encoder_attn.*
//   *.ffn_norm                                *.final_layer_norm
//   *.ffn.fc1 / fc2                           *.fc1 / fc2
#pragma once

#include <nlohmann/json.hpp>

#include <string>
#include <utility>
#include <vector>

#include "data/tokenizer.h"
#include "export/safetensors.h"
#include "models/model_config.h"

namespace moetrain::exporting {

enum class HfLayout { NllbMoe, M2M100 };

// "nllb-moe" or "m2m100": export's --format (config.json's model_type is
// "nllb-moe" or "m2m_100").
const char* hf_layout_name(HfLayout layout);

// Whether a model with this architecture (and, when `special` is given, this
// tokenizer's special ids) exports in `layout`. When it does not and `why` is
// set, *why names the first mismatch, e.g. "model.position is sinusoidal,
// NLLB-MoE needs sinusoidal_fairseq".
bool nllb_moe_compatible(const models::ModelConfig& model, std::string* why,
                         const data::SpecialTokens* special = nullptr, HfLayout layout = HfLayout::NllbMoe);

// One NLLB-MoE tensor's moetrain origin: the parameter and, for one expert's
// tensor, its index in the parameter's expert stack (-1: the whole tensor).
struct NllbMoeName {
  std::string nllb_moe;
  std::string moetrain;
  int64_t expert = -1;
};

// The NLLB-MoE (or M2M100) names of a model's parameters, given by moetrain
// name with the size of their first dimension (an expert stack's expert
// count), in moetrain's order: the one map both export and import follow.
// Throws std::invalid_argument as to_nllb_moe_names does.
std::vector<NllbMoeName> nllb_moe_names(const std::vector<std::pair<std::string, int64_t>>& parameters,
                                        const models::ModelConfig& model, HfLayout layout = HfLayout::NllbMoe);

// The whole model's parameters under their moetrain names (as
// Seq2SeqTransformer::named_parameters gives them, in any dtype) -> the same
// values under NLLB-MoE's names, expert stacks split into one tensor per
// expert, in moetrain's order. Throws std::invalid_argument naming a
// parameter that has no NLLB-MoE counterpart (e.g. an unmerged LoRA adapter)
// or the model when it is not nllb_moe_compatible with `layout`.
NamedTensors to_nllb_moe_names(const NamedTensors& moetrain_tensors, const models::ModelConfig& model,
                               HfLayout layout = HfLayout::NllbMoe);

// NLLB-MoE's config.json for this model: architecture, router settings,
// special token ids (pad, bos, eos, decoder start: the tokenizer's) and
// `torch_dtype` (float32, bfloat16 or float16).
nlohmann::ordered_json nllb_moe_config_json(const models::ModelConfig& model, const data::SpecialTokens& special,
                                            const std::string& torch_dtype);

// M2M100's config.json for this (dense) model: the same keys without the
// router's.
nlohmann::ordered_json m2m100_config_json(const models::ModelConfig& model, const data::SpecialTokens& special,
                                          const std::string& torch_dtype);

}  // namespace moetrain::exporting
