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
#include "import/hf_weights.h"
#include "models/seq2seq_transformer.h"

namespace fs = std::filesystem;

namespace moetrain::importing {

namespace {

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

// The source's tokenizer: tokenizer.model with moetrain's special ids, no
// larger than the model's vocabulary.
std::string read_tokenizer(const std::string& from, int64_t vocab_size) {
  const fs::path path = fs::path(from) / "tokenizer.model";
  if (!fs::is_regular_file(path)) {
    throw ImportError(from +
                      ": no tokenizer.model (a SentencePiece model with moetrain's special ids; "
                      "sentencepiece.bpe.model with fairseq's id layout is not supported)");
  }
  try {
    const data::Tokenizer tokenizer = data::Tokenizer::load(path.string());
    if (tokenizer.vocab_size() > vocab_size) {
      throw ImportError(path.string() + ": " + std::to_string(tokenizer.vocab_size()) +
                        " pieces, more than config.json's vocab_size " + std::to_string(vocab_size));
    }
  } catch (const std::runtime_error& e) {
    if (dynamic_cast<const ImportError*>(&e)) throw;
    throw ImportError(e.what());
  }
  return read_bytes(path);
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
  const HfModelConfig hf = read_hf_config((fs::path(o.from) / "config.json").string());
  summary.model_type = hf.model_type;
  summary.notes = hf.notes;
  const std::string tokenizer = read_tokenizer(o.from, hf.model.vocab_size);

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
    weights = from_nllb_moe_names(source, parameters, config.model);
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
    data::write_file_atomically((partial / "tokenizer.model").string(), tokenizer);
    fs::rename(partial, o.out);
  } catch (...) {
    data::remove_tree(partial.string());
    throw;
  }
  summary.checkpoint = (fs::path(o.out) / "checkpoints" / checkpoint::checkpoint_name(0)).string();
  return summary;
}

}  // namespace moetrain::importing
