#include "export/export.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "config/config.h"
#include "config/load.h"
#include "data/atomic_file.h"
#include "data/batch_source.h"
#include "data/tokenizer.h"
#include "export/nllb_moe_format.h"
#include "export/safetensors.h"
#include "models/lora.h"
#include "models/seq2seq_transformer.h"
#include "monitor/progress.h"
#include "optim/flat_parameters.h"

namespace fs = std::filesystem;

namespace moetrain::exporting {

namespace {

torch::ScalarType export_dtype(const std::string& name) {
  try {
    return config::to_scalar_type(config::parse_compute_dtype(name));
  } catch (const std::invalid_argument& e) {
    throw config::ConfigError(std::string("export: --dtype ") + e.what());
  }
}

// A YAML scalar as the JSON value it reads as (integer, number, boolean or
// string); maps and lists recursively.
nlohmann::ordered_json yaml_to_json(const YAML::Node& node) {
  if (node.IsMap()) {
    nlohmann::ordered_json out = nlohmann::ordered_json::object();
    for (const auto& item : node) out[item.first.as<std::string>()] = yaml_to_json(item.second);
    return out;
  }
  if (node.IsSequence()) {
    nlohmann::ordered_json out = nlohmann::ordered_json::array();
    for (const auto& item : node) out.push_back(yaml_to_json(item));
    return out;
  }
  if (!node.IsScalar()) return nullptr;
  const std::string text = node.Scalar();
  int64_t i = 0;
  double d = 0;
  bool b = false;
  if (YAML::convert<int64_t>::decode(node, i) && text.find_first_of(".eE") == std::string::npos) return i;
  if (YAML::convert<double>::decode(node, d)) return d;
  if (YAML::convert<bool>::decode(node, b)) return b;
  return text;
}

const char* torch_dtype_name(torch::ScalarType dtype) {
  return dtype == torch::kBFloat16 ? "bfloat16" : dtype == torch::kFloat16 ? "float16" : "float32";
}

// The Hugging Face layout to write (see ExportOptions::format), or none for
// moetrain's names; `reason` says why not when auto falls back to moetrain's.
std::optional<HfLayout> hf_layout(const std::string& format, const models::ModelConfig& model,
                                  const data::SpecialTokens& special, std::string* reason) {
  if (format == "moetrain") return std::nullopt;
  const HfLayout layout = format == "m2m100" ? HfLayout::M2M100 : HfLayout::NllbMoe;
  std::string why;
  if (nllb_moe_compatible(model, &why, &special, layout)) return layout;
  if (format != "auto") {
    throw config::ConfigError("export: --format " + format + ": the model does not have the " +
                              (layout == HfLayout::M2M100 ? "M2M100" : "NLLB-MoE") + " architecture: " + why);
  }
  *reason = why;
  return std::nullopt;
}

// The adapters of `named` (a LoRA model's parameters) as a PEFT adapter in
// `out`: adapter_model.safetensors and adapter_config.json, with the
// module names of the export format.
void write_peft_adapter(const std::string& out, const NamedTensors& named, const config::Config& config,
                        std::optional<HfLayout> layout, torch::ScalarType dtype, ExportSummary& summary) {
  NamedTensors adapters;
  std::set<std::string> modules;
  for (const auto& [name, value] : named) {
    if (!models::is_lora_parameter(name)) continue;
    const std::string which = name.substr(name.size() - std::string("lora_A").size());
    // Named as the weight it adapts, so the format's naming (and its
    // splitting of stacked experts) applies to it.
    NamedTensors as_weight = {{models::lora_base_weight_name(name), value.to(dtype).contiguous()}};
    if (layout) as_weight = to_nllb_moe_names(as_weight, config.model, *layout);
    for (const auto& [weight, tensor] : as_weight) {
      // "P.q_proj.weight" -> module "P.q_proj"; a stacked expert weight
      // kept whole ("P.moe.experts_fc1_weight") -> "P.moe.experts_fc1".
      const std::string module = weight.substr(0, weight.size() - std::string(".weight").size());
      modules.insert(module);
      adapters.emplace_back("base_model.model." + module + "." + which + ".weight", tensor);
      summary.parameters += tensor.numel();
      summary.bytes += static_cast<int64_t>(tensor.nbytes());
    }
  }
  summary.tensors = static_cast<int64_t>(adapters.size());
  write_safetensors((fs::path(out) / "adapter_model.safetensors").string(), adapters, {{"format", "pt"}});
  summary.files = {"adapter_model.safetensors"};
  const auto& l = config.lora;
  const nlohmann::ordered_json cfg = {{"peft_type", "LORA"},
                                      {"task_type", "SEQ_2_SEQ_LM"},
                                      {"r", l.r},
                                      {"lora_alpha", l.alpha},
                                      {"lora_dropout", l.dropout},
                                      {"use_rslora", l.rslora},
                                      {"target_modules", std::vector<std::string>(modules.begin(), modules.end())},
                                      {"bias", "none"},
                                      {"fan_in_fan_out", false},
                                      {"inference_mode", true},
                                      {"init_lora_weights", true},
                                      {"modules_to_save", nullptr},
                                      {"base_model_name_or_path", nullptr}};
  data::write_file_atomically((fs::path(out) / "adapter_config.json").string(), cfg.dump(2) + "\n");
  summary.files.push_back("adapter_config.json");
}

}  // namespace

ExportSummary export_checkpoint(const ExportOptions& options) {
  const torch::ScalarType dtype = export_dtype(options.dtype);
  if (options.format != "auto" && options.format != "moetrain" && options.format != "nllb-moe" &&
      options.format != "m2m100") {
    throw config::ConfigError("export: --format '" + options.format +
                              "' is not one of: auto, moetrain, nllb-moe, m2m100");
  }
  const checkpoint::CheckpointModel m = checkpoint::load_checkpoint_model(options.checkpoint, options.tokenizer);
  const config::Config& config = m.config;
  const std::string& tokenizer = m.tokenizer;
  ExportSummary summary;
  summary.checkpoint = m.checkpoint;
  summary.step = m.step;
  const data::SpecialTokens special = data::Tokenizer::load(tokenizer).special_tokens();
  const std::optional<HfLayout> layout = hf_layout(options.format, config.model, special, &summary.format_reason);
  summary.format = layout ? hf_layout_name(*layout) : "moetrain";
  torch::NoGradGuard no_grad;
  const bool lora = config.finetune.mode == config::FinetuneMode::Lora;
  if (options.adapter_only && !lora) {
    throw config::ConfigError("export: --adapter-only: " + m.checkpoint +
                              " holds no LoRA adapters (finetune.mode is full)");
  }
  if (lora) summary.lora_scale = config.lora.scale();
  NamedTensors named;
  for (const auto& item : m.model->named_parameters(/*recurse=*/true))
    named.emplace_back(item.key(), item.value().detach());
  fs::create_directories(options.out);
  if (options.adapter_only) {
    write_peft_adapter(options.out, named, config, layout, dtype, summary);
    return summary;
  }
  if (lora) named = models::merge_lora(named, summary.lora_scale);  // in fp32, before the cast
  NamedTensors tensors;
  for (const auto& [name, value] : named) {
    tensors.emplace_back(name, value.to(dtype).contiguous());
    summary.parameters += value.numel();
    summary.bytes += static_cast<int64_t>(tensors.back().second.nbytes());
  }
  if (layout) tensors = to_nllb_moe_names(tensors, config.model, *layout);
  summary.tensors = static_cast<int64_t>(tensors.size());

  monitor::Progress progress("export", "MB", summary.bytes / 1000000);
  double written_bytes = 0;
  summary.files = write_safetensors_sharded(options.out, "model", tensors, options.max_shard_bytes, {{"format", "pt"}},
                                            [&](int64_t bytes) {
                                              written_bytes += static_cast<double>(bytes);
                                              progress.update(static_cast<int64_t>(written_bytes / 1e6));
                                            });
  progress.finish();

  nlohmann::ordered_json cfg;
  if (layout == HfLayout::NllbMoe) {
    cfg = nllb_moe_config_json(config.model, special, torch_dtype_name(dtype));
  } else if (layout == HfLayout::M2M100) {
    cfg = m2m100_config_json(config.model, special, torch_dtype_name(dtype));
  } else {
    cfg = {{"model_type", "moetrain"},
           {"architectures", {"MoetrainSeq2SeqMoE"}},
           {"torch_dtype", torch_dtype_name(dtype)},
           {"tie_word_embeddings", config.model.tie_embeddings},
           {"vocab_size", config.model.vocab_size}};
    const YAML::Node full = YAML::Load(config::config_to_yaml(config));
    const nlohmann::ordered_json model_section = yaml_to_json(full["model"]);
    for (const auto& [key, value] : model_section.items()) {
      if (!cfg.contains(key)) cfg[key] = value;
    }
  }
  cfg["moetrain_step"] = summary.step;
  data::write_file_atomically((fs::path(options.out) / "config.json").string(), cfg.dump(2) + "\n");
  summary.files.push_back("config.json");

  std::ifstream tok(tokenizer, std::ios::binary);
  std::ostringstream tok_bytes;
  tok_bytes << tok.rdbuf();
  data::write_file_atomically((fs::path(options.out) / "tokenizer.model").string(), tok_bytes.str());
  summary.files.push_back("tokenizer.model");
  return summary;
}

}  // namespace moetrain::exporting
