#include "import/import.h"

#include <yaml-cpp/yaml.h>

#include <filesystem>
#include <fstream>
#include <sstream>

#include "checkpoint/checkpoint.h"
#include "config/load.h"
#include "data/atomic_file.h"
#include "data/tokenizer.h"
#include "import/hf_config.h"
#include "import/hf_tokenizer.h"
#include "import/hf_weights.h"
#include "models/seq2seq_transformer.h"

namespace fs = std::filesystem;

namespace moetrain::importing {

namespace {

// The ids config.json names must be the tokenizer's.
void check_special_ids(const std::string& config_json, const data::SpecialTokens& model, const HfTokenizer& tokenizer) {
  const struct {
    const char* key;
    int64_t model, tokenizer;
    const char* role;
  } ids[] = {{"pad_token_id", model.pad, tokenizer.special.pad, "pad"},
             {"eos_token_id", model.eos, tokenizer.special.eos, "eos"},
             {"bos_token_id", model.bos, tokenizer.special.bos, "bos"},
             {"decoder_start_token_id", model.decoder_start, tokenizer.special.decoder_start, "decoder start"}};
  for (const auto& id : ids) {
    if (id.model != id.tokenizer) {
      throw ImportError(config_json + ": " + id.key + " is " + std::to_string(id.model) + " but the tokenizer's " +
                        id.role + " is " + std::to_string(id.tokenizer) + " (" + tokenizer.source + ")");
    }
  }
}

// The `model:` section of `config` as YAML.
std::string model_section_yaml(const config::Config& config) {
  YAML::Node model;
  model["model"] = YAML::Load(config::config_to_yaml(config))["model"];
  YAML::Emitter out;
  out << model;
  return std::string(out.c_str()) + "\n";
}

}  // namespace

ImportSummary import_hf_model(const ImportOptions& o) {
  if (!fs::is_directory(o.from)) throw ImportError("--from " + o.from + ": not a directory");
  if (fs::exists(o.out)) throw ImportError("--out " + o.out + ": exists already (choose a new directory)");
  ImportSummary summary;
  const std::string config_json = (fs::path(o.from) / "config.json").string();
  const HfModelConfig hf = read_hf_config(config_json);
  summary.model_type = hf.model_type;
  summary.notes = hf.notes;
  const HfTokenizer tokenizer = read_hf_tokenizer(o.from, hf.model.vocab_size);
  check_special_ids(config_json, hf.special, tokenizer);
  summary.language_codes = tokenizer.language_codes;

  config::Config config;
  config.model = hf.model;
  config.data.tokenizer = fs::absolute(fs::path(o.out) / "tokenizer.model").lexically_normal().string();

  // The model's parameter names and shapes, and the source's weights under them.
  std::vector<std::pair<std::string, std::vector<int64_t>>> parameters;
  {
    torch::NoGradGuard no_grad;
    models::Seq2SeqTransformer model(config.model);
    for (const auto& item : model->named_parameters(/*recurse=*/true)) {
      parameters.emplace_back(item.key(), item.value().sizes().vec());
    }
  }
  const exporting::NamedTensors source = read_hf_weights(o.from);
  summary.tensors = static_cast<int64_t>(source.size());
  exporting::NamedTensors weights;
  try {
    weights = from_nllb_moe_names(source, parameters, config.model, hf.layout);
  } catch (const ImportError& e) {
    throw ImportError(o.from + ": " + e.what());
  }
  for (const auto& [name, tensor] : weights) summary.parameters += tensor.numel();

  // Everything under OUT.partial, renamed into place at the end.
  const fs::path partial = fs::path(o.out).string() + ".partial";
  data::remove_tree(partial.string());
  const fs::path checkpoint = partial / "checkpoints" / checkpoint::checkpoint_name(0);
  const nlohmann::json meta = {{"config", config::config_to_yaml(config)},
                               {"imported_from", fs::absolute(o.from).lexically_normal().string()},
                               {"imported_model_type", hf.model_type}};
  try {
    checkpoint::save_weights_checkpoint(checkpoint.string(), 0, weights, meta);
    data::write_file_atomically((partial / "checkpoints" / "latest").string(), checkpoint::checkpoint_name(0) + "\n");
    data::write_file_atomically((partial / "model.yaml").string(), model_section_yaml(config));
    data::write_file_atomically((partial / "tokenizer.model").string(), tokenizer.model_bytes);
    fs::rename(partial, o.out);
  } catch (...) {
    data::remove_tree(partial.string());
    throw;
  }
  summary.checkpoint = (fs::path(o.out) / "checkpoints" / checkpoint::checkpoint_name(0)).string();
  return summary;
}

}  // namespace moetrain::importing
