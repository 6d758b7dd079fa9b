// The NLLB-MoE layout of an export: which architectures qualify (and the
// first mismatch named otherwise), the parameter names with experts unstacked,
// and config.json.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <map>
#include <set>
#include <stdexcept>
#include <string>

#include "config/config.h"
#include "config/load.h"
#include "export/nllb_moe_format.h"
#include "models/seq2seq_transformer.h"

namespace moetrain::exporting {
namespace {

const std::string kPreset = std::string(MOETRAIN_SOURCE_DIR) + "/configs/nllb-moe-compatible.yaml";

models::ModelConfig small_nllb() {
  models::ModelConfig m = config::load_config(kPreset, {}).model;
  m.vocab_size = 31;
  m.d_model = 16;
  m.n_heads = 2;
  m.d_ff = 24;
  m.max_positions = 40;
  m.moe.num_experts = 3;
  return m;
}

std::string mismatch(const models::ModelConfig& m, const data::SpecialTokens* special = nullptr) {
  std::string why;
  return nllb_moe_compatible(m, &why, special) ? "(compatible)" : why;
}

TEST(NllbMoeExport, ThePresetIsCompatibleAndEachDepartureIsNamed) {
  const models::ModelConfig base = config::load_config(kPreset, {}).model;
  data::SpecialTokens special;
  EXPECT_EQ(mismatch(base, &special), "(compatible)");
  EXPECT_EQ(base.moe.every, 2);
  EXPECT_EQ(base.activation, models::Activation::ReLU);

  auto changed = [&base](auto edit) {
    models::ModelConfig m = base;
    edit(m);
    return mismatch(m);
  };
  EXPECT_EQ(changed([](auto& m) { m.position = models::PositionType::Sinusoidal; }),
            "model.position is sinusoidal, NLLB-MoE needs sinusoidal_fairseq");
  EXPECT_EQ(changed([](auto& m) { m.norm = models::NormType::RMSNorm; }),
            "model.norm is rmsnorm, NLLB-MoE needs layernorm");
  EXPECT_NE(changed([](auto& m) { m.norm_eps = 1e-6; }).find("model.norm_eps"), std::string::npos);
  EXPECT_EQ(changed([](auto& m) { m.attention = models::AttentionType::Local; }),
            "model.attention is local, NLLB-MoE needs global");
  EXPECT_EQ(changed([](auto& m) { m.bias = false; }), "model.bias is false, NLLB-MoE's projections all have biases");
  EXPECT_EQ(changed([](auto& m) { m.moe.top_k = 1; }), "model.moe.top_k is 1, NLLB-MoE's router is top-2");
  EXPECT_EQ(changed([](auto& m) { m.moe.normalize_top_k = false; }),
            "model.moe.normalize_top_k is false, NLLB-MoE renormalises the two gates");
  EXPECT_EQ(changed([](auto& m) { m.moe.d_ff_expert = 100; }),
            "model.moe.d_ff_expert is 100, NLLB-MoE's experts use d_ff (512)");
  // A dense model is NLLB-MoE with no sparse layer; activations map by name.
  EXPECT_EQ(changed([](auto& m) {
              m.moe.every = 0;
              m.moe.top_k = 1;
            }),
            "(compatible)");
  EXPECT_EQ(changed([](auto& m) { m.activation = models::Activation::GELU; }), "(compatible)");
  special.pad = 1;
  EXPECT_EQ(mismatch(base, &special),
            "the tokenizer's pad id is 1 but the model numbers positions from model.pad_id 0 + 1; NLLB-MoE numbers "
            "them from its pad id + 1");
  models::ModelConfig fairseq_ids = base;
  fairseq_ids.pad_id = 1;  // an imported NLLB model's
  EXPECT_EQ(mismatch(fairseq_ids, &special), "(compatible)");
}

TEST(NllbMoeExport, NamesFollowNllbMoeWithExpertsOneByOne) {
  const models::ModelConfig cfg = small_nllb();
  torch::manual_seed(5);
  models::Seq2SeqTransformer model(cfg);
  NamedTensors tensors;
  std::map<std::string, torch::Tensor> by_name;
  int64_t numel = 0;
  for (const auto& p : model->named_parameters()) {
    tensors.emplace_back(p.key(), p.value());
    by_name[p.key()] = p.value();
    numel += p.value().numel();
  }
  const NamedTensors out = to_nllb_moe_names(tensors, cfg);
  std::map<std::string, torch::Tensor> mapped;
  int64_t mapped_numel = 0;
  for (const auto& [name, t] : out) {
    EXPECT_TRUE(mapped.emplace(name, t).second) << "written twice: " << name;
    mapped_numel += t.numel();
  }
  EXPECT_EQ(mapped_numel, numel);

  // What NLLB-MoE's modules hold, for 2 + 2 layers with layer 1 sparse.
  std::set<std::string> expected = {"model.shared.weight"};
  for (const std::string stack : {"encoder", "decoder"}) {
    for (const char* w : {"weight", "bias"}) expected.insert("model." + stack + ".layer_norm." + w);
    for (int layer = 0; layer < 2; ++layer) {
      const std::string l = "model." + stack + ".layers." + std::to_string(layer) + ".";
      std::vector<std::string> attention = {"self_attn"};
      if (stack == "decoder") attention.push_back("cross_attention");
      for (const std::string& a : attention) {
        for (const char* proj : {"q_proj", "k_proj", "v_proj", "out_proj"}) {
          for (const char* w : {"weight", "bias"}) expected.insert(l + a + "." + proj + "." + w);
        }
      }
      std::vector<std::string> norms = {"self_attn_layer_norm", "ff_layer_norm"};
      if (stack == "decoder") norms.push_back("cross_attention_layer_norm");
      for (const std::string& n : norms) {
        for (const char* w : {"weight", "bias"}) expected.insert(l + n + "." + w);
      }
      if (layer == 1) {
        expected.insert(l + "ffn.router.classifier.weight");
        for (int e = 0; e < 3; ++e) {
          for (const char* fc : {"fc1", "fc2"}) {
            for (const char* w : {"weight", "bias"}) {
              expected.insert(l + "ffn.experts.expert_" + std::to_string(e) + "." + fc + "." + w);
            }
          }
        }
      } else {
        for (const char* fc : {"fc1", "fc2"}) {
          for (const char* w : {"weight", "bias"}) expected.insert(l + "ffn." + fc + "." + w);
        }
      }
    }
  }
  std::set<std::string> got;
  for (const auto& item : mapped) got.insert(item.first);
  EXPECT_EQ(got, expected);

  EXPECT_TRUE(mapped.at("model.shared.weight").equal(by_name.at("embed_tokens.weight")));
  EXPECT_TRUE(mapped.at("model.decoder.layers.0.cross_attention.out_proj.weight")
                  .equal(by_name.at("decoder.layers.0.cross_attn.o_proj.weight")));
  EXPECT_TRUE(mapped.at("model.encoder.layers.1.ffn.router.classifier.weight")
                  .equal(by_name.at("encoder.layers.1.moe.router.weight")));
  EXPECT_TRUE(mapped.at("model.decoder.layer_norm.bias").equal(by_name.at("decoder.final_norm.bias")));
  for (int64_t e = 0; e < 3; ++e) {
    const std::string x = "model.decoder.layers.1.ffn.experts.expert_" + std::to_string(e) + ".";
    EXPECT_TRUE(mapped.at(x + "fc1.weight").equal(by_name.at("decoder.layers.1.moe.experts_fc1_weight")[e]));
    EXPECT_TRUE(mapped.at(x + "fc1.bias").equal(by_name.at("decoder.layers.1.moe.experts_fc1_bias")[e]));
    EXPECT_TRUE(mapped.at(x + "fc2.weight").equal(by_name.at("decoder.layers.1.moe.experts_fc2_weight")[e]));
    EXPECT_TRUE(mapped.at(x + "fc2.bias").equal(by_name.at("decoder.layers.1.moe.experts_fc2_bias")[e]));
    EXPECT_EQ(mapped.at(x + "fc1.weight").sizes(), (std::vector<int64_t>{24, 16}));
  }
}

TEST(NllbMoeExport, AnUntiedModelWritesItsSharedEmbeddingForEncoderAndDecoderAndItsLmHead) {
  models::ModelConfig cfg = small_nllb();
  cfg.tie_embeddings = false;
  const torch::Tensor embedding = torch::randn({31, 16});
  const torch::Tensor head = torch::randn({31, 16});
  const NamedTensors out = to_nllb_moe_names({{"embed_tokens.weight", embedding}, {"lm_head.weight", head}}, cfg);
  ASSERT_EQ(out.size(), 4u);
  std::map<std::string, torch::Tensor> mapped(out.begin(), out.end());
  for (const char* name :
       {"model.shared.weight", "model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"}) {
    ASSERT_TRUE(mapped.count(name)) << name;
    EXPECT_TRUE(mapped.at(name).equal(embedding)) << name;
  }
  EXPECT_TRUE(mapped.at("lm_head.weight").equal(head));
}

TEST(NllbMoeExport, AParameterWithoutCounterpartOrAnotherArchitectureIsRefused) {
  const models::ModelConfig cfg = small_nllb();
  const NamedTensors extra = {{"encoder.layers.0.self_attn.q_proj.lora_A", torch::zeros({2, 16})}};
  try {
    to_nllb_moe_names(extra, cfg);
    FAIL() << "expected std::invalid_argument";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("'encoder.layers.0.self_attn.q_proj.lora_A' has no NLLB-MoE counterpart"),
              std::string::npos)
        << e.what();
  }
  models::ModelConfig rms = cfg;
  rms.norm = models::NormType::RMSNorm;
  EXPECT_THROW(to_nllb_moe_names({}, rms), std::invalid_argument);
}

TEST(NllbMoeExport, ConfigJsonDescribesTheModelInNllbMoeTerms) {
  models::ModelConfig cfg = small_nllb();
  data::SpecialTokens special;  // pad 0, eos 1, unk 2, bos 3
  const nlohmann::ordered_json j = nllb_moe_config_json(cfg, special, "bfloat16");
  EXPECT_EQ(j["model_type"], "nllb-moe");
  EXPECT_EQ(j["architectures"], nlohmann::ordered_json::array({"NllbMoeForConditionalGeneration"}));
  EXPECT_EQ(j["vocab_size"], 31);
  EXPECT_EQ(j["d_model"], 16);
  EXPECT_EQ(j["encoder_layers"], 2);
  EXPECT_EQ(j["decoder_attention_heads"], 2);
  EXPECT_EQ(j["encoder_ffn_dim"], 24);
  EXPECT_EQ(j["decoder_ffn_dim"], 24);
  EXPECT_EQ(j["max_position_embeddings"], 40);
  EXPECT_EQ(j["num_experts"], 3);
  EXPECT_EQ(j["encoder_sparse_step"], 2);
  EXPECT_EQ(j["decoder_sparse_step"], 2);
  EXPECT_EQ(j["activation_function"], "relu");
  EXPECT_EQ(j["scale_embedding"], true);
  EXPECT_EQ(j["tie_word_embeddings"], true);
  EXPECT_EQ(j["router_bias"], false);
  EXPECT_EQ(j["moe_eval_capacity_token_fraction"], 1.0);
  EXPECT_EQ(j["moe_token_dropout"], 0.0);
  EXPECT_EQ(j["expert_capacity"], 40);  // dropless: all of a max_positions sequence
  EXPECT_EQ(j["pad_token_id"], 0);
  EXPECT_EQ(j["eos_token_id"], 1);
  EXPECT_EQ(j["bos_token_id"], 3);
  EXPECT_EQ(j["decoder_start_token_id"], 3);
  EXPECT_EQ(j["torch_dtype"], "bfloat16");
  cfg.moe.capacity_factor = 1.25;
  cfg.moe.every = 4;
  EXPECT_EQ(nllb_moe_config_json(cfg, special, "float32")["expert_capacity"], 34);  // ceil(1.25 * 40 * 2 / 3)
  EXPECT_EQ(nllb_moe_config_json(cfg, special, "float32")["encoder_sparse_step"], 4);
}

TEST(M2M100Export, ThePresetIsDenseNllbMoeUnderM2M100Names) {
  const std::string preset = std::string(MOETRAIN_SOURCE_DIR) + "/configs/m2m100-compatible.yaml";
  const models::ModelConfig cfg = config::load_config(preset, {}).model;
  std::string why;
  EXPECT_TRUE(nllb_moe_compatible(cfg, &why, nullptr, HfLayout::M2M100)) << why;
  EXPECT_EQ(cfg.moe.every, 0);
  const models::ModelConfig sparse = small_nllb();
  EXPECT_FALSE(nllb_moe_compatible(sparse, &why, nullptr, HfLayout::M2M100));
  EXPECT_EQ(why, "model.moe.every is 2: M2M100 has no sparse layers (needs 0)");
  models::ModelConfig rms = cfg;
  rms.norm = models::NormType::RMSNorm;
  EXPECT_FALSE(nllb_moe_compatible(rms, &why, nullptr, HfLayout::M2M100));
  EXPECT_EQ(why, "model.norm is rmsnorm, M2M100 needs layernorm");

  models::ModelConfig small = small_nllb();
  small.moe.every = 0;
  torch::manual_seed(5);
  models::Seq2SeqTransformer model(small);
  NamedTensors tensors;
  for (const auto& p : model->named_parameters()) tensors.emplace_back(p.key(), p.value());
  std::map<std::string, torch::Tensor> mapped;
  for (const auto& [name, t] : to_nllb_moe_names(tensors, small, HfLayout::M2M100)) mapped.emplace(name, t);
  EXPECT_EQ(mapped.size(), tensors.size());
  for (const char* name :
       {"model.shared.weight", "model.encoder.layers.0.self_attn.out_proj.weight",
        "model.encoder.layers.1.self_attn_layer_norm.weight", "model.encoder.layers.1.fc1.weight",
        "model.encoder.layers.1.fc2.bias", "model.encoder.layers.0.final_layer_norm.bias",
        "model.decoder.layers.1.encoder_attn.k_proj.weight", "model.decoder.layers.0.encoder_attn_layer_norm.weight",
        "model.decoder.layer_norm.weight"}) {
    EXPECT_TRUE(mapped.count(name)) << name;
  }
  EXPECT_TRUE(mapped.at("model.encoder.layers.1.fc1.weight")
                  .equal(model->named_parameters()["encoder.layers.1.ffn.fc1.weight"]));

  data::SpecialTokens fairseq;
  fairseq.bos = 0, fairseq.pad = 1, fairseq.eos = 2, fairseq.unk = 3, fairseq.decoder_start = 2;
  const nlohmann::ordered_json j = m2m100_config_json(small, fairseq, "float32");
  EXPECT_EQ(j["model_type"], "m2m_100");
  EXPECT_EQ(j["architectures"], nlohmann::ordered_json::array({"M2M100ForConditionalGeneration"}));
  EXPECT_EQ(j["encoder_ffn_dim"], 24);
  EXPECT_FALSE(j.contains("num_experts"));
  EXPECT_EQ(j["pad_token_id"], 1);
  EXPECT_EQ(j["decoder_start_token_id"], 2);
  EXPECT_EQ(std::string(hf_layout_name(HfLayout::M2M100)), "m2m100");
}

}  // namespace
}  // namespace moetrain::exporting
