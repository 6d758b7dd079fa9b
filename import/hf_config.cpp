#include "import/hf_config.h"

#include <cmath>
#include <fstream>
#include <sstream>

namespace moetrain::importing {

namespace {

// Typed access to config.json's keys, each error one line naming the key.
class Keys {
 public:
  Keys(const nlohmann::json& json, std::string path) : json_(json), path_(std::move(path)) {}

  [[noreturn]] void fail(const std::string& key, const std::string& why) const {
    const std::string value = json_.contains(key) ? json_.at(key).dump() : "absent";
    throw ImportError(path_ + ": " + key + " is " + value + ": " + why);
  }

  template <typename T>
  T get(const std::string& key, const T& fallback) const {
    if (!json_.contains(key) || json_.at(key).is_null()) return fallback;
    try {
      return json_.at(key).get<T>();
    } catch (const nlohmann::json::exception&) {
      fail(key, "not of the expected type");
    }
  }

  int64_t positive(const std::string& key, int64_t fallback) const {
    const auto v = get<int64_t>(key, fallback);
    if (v < 1) fail(key, "must be at least 1");
    return v;
  }

  // The encoder's and decoder's values of a key moetrain has once.
  int64_t same(const std::string& encoder_key, const std::string& decoder_key, int64_t fallback) const {
    const int64_t e = get<int64_t>(encoder_key, fallback), d = get<int64_t>(decoder_key, fallback);
    if (e != d) fail(decoder_key, "differs from " + encoder_key + " (" + std::to_string(e) + "); moetrain has one");
    return e;
  }

 private:
  const nlohmann::json& json_;
  std::string path_;
};

// A setting's value as config.json would write it (0.1, not 0.100000).
std::string number(double value) {
  std::ostringstream out;
  out << value;
  return out.str();
}

models::Activation activation_of(const Keys& k) {
  const auto name = k.get<std::string>("activation_function", "relu");
  if (name == "relu") return models::Activation::ReLU;
  if (name == "gelu") return models::Activation::GELU;
  if (name == "silu" || name == "swish") return models::Activation::SiLU;
  k.fail("activation_function", "moetrain has relu, gelu and silu");
}

// The router and experts: top-2 with renormalised gates, no router bias,
// every expert as wide as the dense FFN, dropless at inference.
void read_moe(const Keys& k, models::ModelConfig& m, std::vector<std::string>& notes) {
  m.moe.num_experts = k.positive("num_experts", 128);
  m.moe.every = k.same("encoder_sparse_step", "decoder_sparse_step", 4);
  if (m.moe.every < 0) k.fail("encoder_sparse_step", "must be 0 (dense) or more");
  m.moe.top_k = 2;
  m.moe.normalize_top_k = true;
  m.moe.d_ff_expert = 0;
  m.moe.z_loss_coef = k.get<double>("router_z_loss_coef", 0.001);
  m.moe.aux_loss_coef = k.get<double>("router_aux_loss_coef", 0.001);
  if (k.get<bool>("router_bias", false)) k.fail("router_bias", "moetrain's router has no bias");
  if (k.get<std::string>("second_expert_policy", "all") != "all") {
    k.fail("second_expert_policy", "moetrain always uses the second expert (all)");
  }
  m.moe.token_dropout = k.get<double>("moe_token_dropout", 0.2);
  if (m.moe.token_dropout < 0 || m.moe.token_dropout >= 1) k.fail("moe_token_dropout", "must be in [0, 1)");
  if (k.get<double>("moe_eval_capacity_token_fraction", 1.0) < 1.0) {
    k.fail("moe_eval_capacity_token_fraction", "moetrain's inference is dropless (needs 1.0 or more)");
  }
  // Training capacity: transformers gives each expert `expert_capacity`
  // tokens; as a factor of a max_positions sequence's fair share. A capacity
  // for every token is dropless.
  const auto capacity = k.get<int64_t>("expert_capacity", 64);
  const double fair_share = static_cast<double>(m.max_positions * m.moe.top_k) / static_cast<double>(m.moe.num_experts);
  m.moe.capacity_factor = capacity >= m.max_positions ? 0.0 : static_cast<double>(capacity) / fair_share;
  if (m.moe.every > 0) {
    notes.push_back("expert_capacity " + std::to_string(capacity) + " trains as " +
                    (m.moe.capacity_factor > 0 ? "moe.capacity_factor " + number(m.moe.capacity_factor)
                                               : std::string("dropless experts")));
  }
}

// The special ids the model was trained with (transformers' defaults for
// NLLB: fairseq's layout); import checks them against the tokenizer's.
data::SpecialTokens special_ids(const Keys& k) {
  data::SpecialTokens s;
  s.pad = k.get<int64_t>("pad_token_id", 1);
  s.eos = k.get<int64_t>("eos_token_id", 2);
  s.bos = k.get<int64_t>("bos_token_id", 0);
  s.unk = -1;  // config.json does not say
  s.decoder_start = k.get<int64_t>("decoder_start_token_id", 2);
  return s;
}

}  // namespace

HfModelConfig read_hf_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw ImportError(path + ": cannot read (a Hugging Face model folder has a config.json)");
  nlohmann::json json;
  try {
    json = nlohmann::json::parse(in);
  } catch (const nlohmann::json::exception& e) {
    throw ImportError(path + ": not JSON: " + e.what());
  }
  if (!json.is_object()) throw ImportError(path + ": not a JSON object");
  const Keys k(json, path);
  HfModelConfig out;
  out.model_type = k.get<std::string>("model_type", "");
  if (out.model_type != "nllb-moe" && out.model_type != "m2m_100") {
    k.fail("model_type", "moetrain imports nllb-moe and m2m_100");
  }
  out.layout = out.model_type == "m2m_100" ? exporting::HfLayout::M2M100 : exporting::HfLayout::NllbMoe;

  models::ModelConfig& m = out.model;
  m.vocab_size = k.positive("vocab_size", 128112);
  m.d_model = k.positive("d_model", 1024);
  m.n_heads = k.same("encoder_attention_heads", "decoder_attention_heads", 16);
  if (m.n_heads < 1 || m.d_model % m.n_heads != 0) k.fail("encoder_attention_heads", "must divide d_model");
  m.d_ff = k.same("encoder_ffn_dim", "decoder_ffn_dim", 4096);
  m.encoder_layers = k.positive("encoder_layers", 12);
  m.decoder_layers = k.positive("decoder_layers", 12);
  m.max_positions = k.positive("max_position_embeddings", 1024);
  m.norm = models::NormType::LayerNorm;
  m.norm_eps = 1e-5;
  m.position = models::PositionType::SinusoidalFairseq;
  m.attention = models::AttentionType::Global;
  m.activation = activation_of(k);
  m.bias = true;
  m.tie_embeddings = k.get<bool>("tie_word_embeddings", true);
  m.scale_embeddings = k.get<bool>("scale_embedding", true);
  m.dropout = k.get<double>("dropout", 0.1);
  m.attention_dropout = k.get<double>("attention_dropout", 0.1);
  m.init_std = k.get<double>("init_std", 0.02);
  if (out.layout == exporting::HfLayout::NllbMoe) {
    read_moe(k, m, out.notes);
  } else {
    m.moe.every = 0;  // M2M100: every layer dense
  }
  out.special = special_ids(k);
  m.pad_id = out.special.pad;
  if (m.pad_id < 0) k.fail("pad_token_id", "must be >= 0");

  const double activation_dropout = k.get<double>("activation_dropout", 0.0);
  if (activation_dropout != m.dropout) {
    out.notes.push_back("activation_dropout " + number(activation_dropout) + " trains as model.dropout " +
                        number(m.dropout) + " (moetrain has one rate)");
  }
  for (const char* key : {"encoder_layerdrop", "decoder_layerdrop"}) {
    const double layerdrop = k.get<double>(key, 0.05);
    if (layerdrop > 0) {
      out.notes.push_back(std::string(key) + " " + number(layerdrop) + " is dropped (moetrain has no layerdrop)");
    }
  }
  return out;
}

}  // namespace moetrain::importing
