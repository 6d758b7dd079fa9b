#include "export/nllb_moe_format.h"

#include <cmath>
#include <map>
#include <stdexcept>
#include <string>

namespace moetrain::exporting {

namespace {

const char* activation_name(models::Activation a) {
  switch (a) {
    case models::Activation::ReLU: return "relu";
    case models::Activation::GELU: return "gelu";  // exact (erf) in both
    case models::Activation::SiLU: return "silu";
  }
  return "relu";
}

const char* position_name(models::PositionType p) {
  switch (p) {
    case models::PositionType::Sinusoidal: return "sinusoidal";
    case models::PositionType::Learned: return "learned";
    case models::PositionType::Rotary: return "rotary";
    case models::PositionType::SinusoidalFairseq: return "sinusoidal_fairseq";
  }
  return "?";
}

const char* attention_name(models::AttentionType a) {
  switch (a) {
    case models::AttentionType::Global: return "global";
    case models::AttentionType::Local: return "local";
    case models::AttentionType::Dynamic: return "dynamic";
  }
  return "?";
}

bool starts_with(const std::string& s, const std::string& prefix) { return s.rfind(prefix, 0) == 0; }

// An attention's weight or bias below the attention module: q/k/v keep
// their names, o_proj is NLLB-MoE's out_proj; "" for anything else.
std::string attention_parameter(const std::string& rest) {
  for (const char* p : {"q_proj", "k_proj", "v_proj", "o_proj"}) {
    const std::string proj = p;
    if (rest == proj + ".weight" || rest == proj + ".bias") {
      return (proj == "o_proj" ? "out_proj" : proj) + rest.substr(proj.size());
    }
  }
  return "";
}

// A layer's parameter below "layers.N." (except the stacked experts), or ""
// when the layout has no such parameter.
std::string layer_parameter(const std::string& rest, HfLayout layout) {
  struct Prefix {
    const char* from;
    const char* to;
  };
  const bool m2m = layout == HfLayout::M2M100;
  for (const Prefix& p :
       {Prefix{"self_attn_norm.", "self_attn_layer_norm."},
        Prefix{"cross_attn_norm.", m2m ? "encoder_attn_layer_norm." : "cross_attention_layer_norm."},
        Prefix{"ffn_norm.", m2m ? "final_layer_norm." : "ff_layer_norm."},
        Prefix{"ffn.fc1.", m2m ? "fc1." : "ffn.fc1."}, Prefix{"ffn.fc2.", m2m ? "fc2." : "ffn.fc2."}}) {
    if (starts_with(rest, p.from)) {
      const std::string tail = rest.substr(std::string(p.from).size());
      if (tail == "weight" || tail == "bias") return p.to + tail;
      return "";
    }
  }
  if (rest == "moe.router.weight" && !m2m) return "ffn.router.classifier.weight";
  if (starts_with(rest, "self_attn.")) {
    const std::string a = attention_parameter(rest.substr(10));
    return a.empty() ? "" : "self_attn." + a;
  }
  if (starts_with(rest, "cross_attn.")) {
    const std::string a = attention_parameter(rest.substr(11));
    return a.empty() ? "" : (m2m ? "encoder_attn." : "cross_attention.") + a;
  }
  return "";
}

// The architecture's name in messages.
std::string architecture(HfLayout layout) { return layout == HfLayout::M2M100 ? "M2M100" : "NLLB-MoE"; }

}  // namespace

const char* hf_layout_name(HfLayout layout) { return layout == HfLayout::M2M100 ? "m2m100" : "nllb-moe"; }

bool nllb_moe_compatible(const models::ModelConfig& m, std::string* why, const data::SpecialTokens* special,
                         HfLayout layout) {
  const std::string arch = architecture(layout);
  auto fail = [why](const std::string& reason) {
    if (why) *why = reason;
    return false;
  };
  if (layout == HfLayout::M2M100 && m.moe.every > 0) {
    return fail("model.moe.every is " + std::to_string(m.moe.every) + ": M2M100 has no sparse layers (needs 0)");
  }
  if (m.norm != models::NormType::LayerNorm) return fail("model.norm is rmsnorm, " + arch + " needs layernorm");
  if (m.norm_eps != 1e-5) {
    return fail("model.norm_eps is " + std::to_string(m.norm_eps) + ", " + arch + "'s LayerNorm uses 1e-5");
  }
  if (m.position != models::PositionType::SinusoidalFairseq) {
    return fail(std::string("model.position is ") + position_name(m.position) + ", " + arch +
                " needs sinusoidal_fairseq");
  }
  if (m.attention != models::AttentionType::Global) {
    return fail(std::string("model.attention is ") + attention_name(m.attention) + ", " + arch + " needs global");
  }
  if (!m.bias) return fail("model.bias is false, " + arch + "'s projections all have biases");
  if (m.moe.every > 0) {
    if (m.moe.top_k != 2) {
      return fail("model.moe.top_k is " + std::to_string(m.moe.top_k) + ", " + arch + "'s router is top-2");
    }
    if (!m.moe.normalize_top_k) {
      return fail("model.moe.normalize_top_k is false, " + arch + " renormalises the two gates");
    }
    if (m.expert_ffn_dim() != m.d_ff) {
      return fail("model.moe.d_ff_expert is " + std::to_string(m.expert_ffn_dim()) + ", " + arch +
                  "'s experts use d_ff (" + std::to_string(m.d_ff) + ")");
    }
  }
  if (special && special->pad != m.pad_id) {
    return fail("the tokenizer's pad id is " + std::to_string(special->pad) + " but the model numbers positions from " +
                "model.pad_id " + std::to_string(m.pad_id) + " + 1; " + arch + " numbers them from its pad id + 1");
  }
  return true;
}

std::vector<NllbMoeName> nllb_moe_names(const std::vector<std::pair<std::string, int64_t>>& parameters,
                                        const models::ModelConfig& model, HfLayout layout) {
  std::string why;
  if (!nllb_moe_compatible(model, &why, nullptr, layout)) {
    throw std::invalid_argument("not an " + architecture(layout) + " architecture: " + why);
  }
  std::vector<NllbMoeName> out;
  for (const auto& [name, experts] : parameters) {
    if (name == "embed_tokens.weight") {
      out.push_back({"model.shared.weight", name});
      // transformers ties the encoder's and decoder's embeddings to
      // model.shared only together with lm_head (tie_word_embeddings); an
      // untied model's shared embedding is written for both explicitly.
      if (!model.tie_embeddings) {
        out.push_back({"model.encoder.embed_tokens.weight", name});
        out.push_back({"model.decoder.embed_tokens.weight", name});
      }
      continue;
    }
    if (name == "lm_head.weight") {
      out.push_back({"lm_head.weight", name});
      continue;
    }
    std::string mapped;
    for (const char* stack : {"encoder", "decoder"}) {
      const std::string s = stack;
      if (starts_with(name, s + ".final_norm.")) {
        const std::string tail = name.substr(s.size() + 12);
        if (tail == "weight" || tail == "bias") mapped = "model." + s + ".layer_norm." + tail;
      } else if (starts_with(name, s + ".layers.")) {
        const size_t number_end = name.find('.', s.size() + 8);
        if (number_end == std::string::npos) break;
        const std::string layer = name.substr(0, number_end + 1);  // "encoder.layers.N."
        const std::string rest = name.substr(number_end + 1);
        static const char* kExperts[] = {"experts_fc1_weight", "experts_fc1_bias", "experts_fc2_weight",
                                         "experts_fc2_bias"};
        for (const char* e : kExperts) {
          if (rest != std::string("moe.") + e) continue;
          // experts_fcK_{weight,bias} [E, ...] -> ffn.experts.expert_E.fcK.{weight,bias}
          const std::string fc = std::string(e).substr(8, 3);
          const std::string kind = std::string(e).substr(12);
          for (int64_t x = 0; x < experts; ++x) {
            out.push_back(
                {"model." + layer + "ffn.experts.expert_" + std::to_string(x) + "." + fc + "." + kind, name, x});
          }
          mapped = "-";  // written above
        }
        if (mapped.empty()) {
          const std::string p = layer_parameter(rest, layout);
          if (!p.empty()) mapped = "model." + layer + p;
        }
      }
    }
    if (mapped.empty()) {
      throw std::invalid_argument("export: moetrain parameter '" + name + "' has no " + architecture(layout) +
                                  " counterpart");
    }
    if (mapped != "-") out.push_back({mapped, name});
  }
  return out;
}

NamedTensors to_nllb_moe_names(const NamedTensors& moetrain_tensors, const models::ModelConfig& model,
                               HfLayout layout) {
  std::vector<std::pair<std::string, int64_t>> parameters;
  std::map<std::string, torch::Tensor> by_name;
  for (const auto& [name, tensor] : moetrain_tensors) {
    parameters.emplace_back(name, tensor.dim() > 0 ? tensor.size(0) : 0);
    by_name[name] = tensor;
  }
  NamedTensors out;
  for (const auto& n : nllb_moe_names(parameters, model, layout)) {
    const torch::Tensor& tensor = by_name.at(n.moetrain);
    out.emplace_back(n.nllb_moe, n.expert >= 0 ? tensor.select(0, n.expert) : tensor);
  }
  return out;
}

nlohmann::ordered_json m2m100_config_json(const models::ModelConfig& m, const data::SpecialTokens& special,
                                          const std::string& torch_dtype) {
  return nlohmann::ordered_json{
      {"model_type", "m2m_100"},
      {"architectures", {"M2M100ForConditionalGeneration"}},
      {"vocab_size", m.vocab_size},
      {"d_model", m.d_model},
      {"encoder_layers", m.encoder_layers},
      {"decoder_layers", m.decoder_layers},
      {"encoder_attention_heads", m.n_heads},
      {"decoder_attention_heads", m.n_heads},
      {"encoder_ffn_dim", m.d_ff},
      {"decoder_ffn_dim", m.d_ff},
      {"max_position_embeddings", m.max_positions},
      {"activation_function", activation_name(m.activation)},
      {"scale_embedding", m.scale_embeddings},
      {"dropout", m.dropout},
      {"attention_dropout", m.attention_dropout},
      {"activation_dropout", m.dropout},
      {"encoder_layerdrop", 0.0},
      {"decoder_layerdrop", 0.0},
      {"init_std", m.init_std},
      {"pad_token_id", special.pad},
      {"bos_token_id", special.bos},
      {"eos_token_id", special.eos},
      {"decoder_start_token_id", special.decoder_start},
      {"is_encoder_decoder", true},
      {"use_cache", true},
      {"tie_word_embeddings", m.tie_embeddings},
      {"torch_dtype", torch_dtype},
  };
}

nlohmann::ordered_json nllb_moe_config_json(const models::ModelConfig& m, const data::SpecialTokens& special,
                                            const std::string& torch_dtype) {
  const int64_t sparse_step = m.moe.every > 0 ? m.moe.every : 0;
  // transformers applies expert_capacity only while training (in eval every
  // expert has room for all tokens): a sequence of max_positions tokens'
  // share under moetrain's capacity factor, or all of them when dropless.
  const int64_t expert_capacity =
      m.moe.capacity_factor > 0
          ? static_cast<int64_t>(std::ceil(m.moe.capacity_factor * static_cast<double>(m.max_positions * m.moe.top_k) /
                                               static_cast<double>(m.moe.num_experts) -
                                           1e-9))
          : m.max_positions;
  nlohmann::ordered_json config = m2m100_config_json(m, special, torch_dtype);
  config["model_type"] = "nllb-moe";
  config["architectures"] = {"NllbMoeForConditionalGeneration"};
  const nlohmann::ordered_json router = {
      {"num_experts", m.moe.num_experts},
      {"expert_capacity", expert_capacity},
      {"encoder_sparse_step", sparse_step},
      {"decoder_sparse_step", sparse_step},
      {"router_bias", false},
      {"router_dtype", "float32"},
      {"router_ignore_padding_tokens", false},
      {"second_expert_policy", "all"},
      {"normalize_router_prob_before_dropping", false},
      {"batch_prioritized_routing", false},
      {"moe_eval_capacity_token_fraction", 1.0},
      {"moe_token_dropout", m.moe.token_dropout},
      {"router_z_loss_coef", m.moe.z_loss_coef},
      {"router_aux_loss_coef", m.moe.aux_loss_coef},
  };
  for (const auto& [key, value] : router.items()) config[key] = value;
  return config;
}

}  // namespace moetrain::exporting
