#include "import/hf_weights.h"

#include <nlohmann/json.hpp>

#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <sstream>

#include "export/nllb_moe_format.h"
#include "import/hf_config.h"

namespace fs = std::filesystem;

namespace moetrain::importing {

namespace {

exporting::SafetensorsFile read_file(const fs::path& path) {
  try {
    return exporting::read_safetensors(path.string());
  } catch (const std::exception& e) {
    throw ImportError(e.what());
  }
}

std::string shape_text(c10::IntArrayRef shape) {
  std::ostringstream out;
  out << shape;
  return out.str();
}

// The index's weight_map: tensor name -> shard file.
std::map<std::string, std::string> read_weight_map(const fs::path& index) {
  std::ifstream in(index);
  try {
    const auto json = nlohmann::json::parse(in);
    return json.at("weight_map").get<std::map<std::string, std::string>>();
  } catch (const nlohmann::json::exception& e) {
    throw ImportError(index.string() + ": not a safetensors index (" + e.what() + ")");
  }
}

}  // namespace

exporting::NamedTensors read_hf_weights(const std::string& dir) {
  const fs::path single = fs::path(dir) / "model.safetensors";
  const fs::path index = fs::path(dir) / "model.safetensors.index.json";
  if (!fs::exists(index)) {
    if (!fs::exists(single)) throw ImportError(dir + ": no model.safetensors or model.safetensors.index.json");
    return read_file(single).tensors;
  }
  const auto weight_map = read_weight_map(index);
  std::map<std::string, std::vector<std::string>> by_shard;
  for (const auto& [name, shard] : weight_map) by_shard[shard].push_back(name);
  exporting::NamedTensors out;
  std::set<std::string> seen;
  for (const auto& [shard, names] : by_shard) {
    const fs::path path = fs::path(dir) / shard;
    if (!fs::is_regular_file(path)) {
      throw ImportError(index.string() + ": shard " + shard + " (holding " + names.front() + ") is missing");
    }
    const auto file = read_file(path);
    for (const auto& [name, tensor] : file.tensors) {
      if (!seen.insert(name).second) throw ImportError(path.string() + ": " + name + " is also in another shard");
      out.emplace_back(name, tensor);
    }
    for (const auto& name : names) {
      if (!seen.count(name)) throw ImportError(index.string() + ": " + name + " is not in its shard " + shard);
    }
  }
  return out;
}

exporting::NamedTensors from_nllb_moe_names(const exporting::NamedTensors& source,
                                            const std::vector<std::pair<std::string, std::vector<int64_t>>>& parameters,
                                            const models::ModelConfig& model, exporting::HfLayout layout) {
  std::map<std::string, torch::Tensor> tensors;
  for (const auto& [name, tensor] : source) tensors[name] = tensor;
  std::set<std::string> used;
  // transformers may store the shared embedding under any of its tied names.
  const std::vector<std::string> embedding_names = {"model.shared.weight", "model.encoder.embed_tokens.weight",
                                                    "model.decoder.embed_tokens.weight"};
  auto find = [&](const std::string& name) -> torch::Tensor {
    auto it = tensors.find(name);
    if (it == tensors.end() && name == embedding_names[0]) {
      for (const auto& alias : embedding_names) {
        if ((it = tensors.find(alias)) != tensors.end()) break;
      }
    }
    if (it == tensors.end()) throw ImportError("the weights have no " + name);
    used.insert(it->first);
    return it->second;
  };

  std::vector<std::pair<std::string, int64_t>> first_dims;
  std::map<std::string, std::vector<int64_t>> shapes;
  for (const auto& [name, shape] : parameters) {
    first_dims.emplace_back(name, shape.empty() ? 0 : shape[0]);
    shapes[name] = shape;
  }
  std::map<std::string, std::vector<torch::Tensor>> pieces;  // moetrain name -> tensors (experts in order)
  for (const auto& n : exporting::nllb_moe_names(first_dims, model, layout)) {
    const torch::Tensor t = find(n.nllb_moe);
    auto expected = shapes.at(n.moetrain);
    if (n.expert >= 0) expected.erase(expected.begin());
    if (t.sizes() != c10::IntArrayRef(expected)) {
      throw ImportError(n.nllb_moe + " has shape " + shape_text(t.sizes()) + " but the model needs " +
                        shape_text(expected));
    }
    auto& list = pieces[n.moetrain];
    if (n.expert < 0 && !list.empty()) {
      // An untied model's embedding copies: moetrain has one embedding.
      if (!torch::equal(list.front(), t)) {
        throw ImportError(n.nllb_moe +
                          " differs from model.shared.weight (moetrain's encoder and decoder share "
                          "one embedding)");
      }
      continue;
    }
    list.push_back(t);
  }
  for (const auto& [name, tensor] : source) {
    if (used.count(name)) continue;
    // Tied copies transformers may store alongside model.shared.weight.
    const bool tied_copy =
        model.tie_embeddings && (name == "lm_head.weight" || name == embedding_names[1] || name == embedding_names[2]);
    if (tied_copy && torch::equal(tensor, pieces.at("embed_tokens.weight").front())) continue;
    throw ImportError(name + " has no counterpart in the model" +
                      (tied_copy ? " (it differs from the tied embedding)" : ""));
  }
  exporting::NamedTensors out;
  for (const auto& [name, shape] : parameters) {
    const auto& list = pieces.at(name);
    const torch::Tensor value =
        list.size() == 1 && shape.size() == static_cast<size_t>(list[0].dim()) ? list[0] : torch::stack(list);
    out.emplace_back(name, value.to(torch::kFloat32).contiguous());
  }
  return out;
}

}  // namespace moetrain::importing
