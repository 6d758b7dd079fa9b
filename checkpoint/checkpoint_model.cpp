#include "checkpoint/checkpoint_model.h"

#include <filesystem>
#include <stdexcept>
#include <utility>
#include <vector>

#include "checkpoint/checkpoint.h"
#include "data/batch_source.h"
#include "optim/flat_parameters.h"

namespace fs = std::filesystem;

namespace moetrain::checkpoint {

CheckpointModel load_checkpoint_model(const std::string& checkpoint, const std::string& tokenizer, bool dropless_moe) {
  CheckpointModel m;
  m.checkpoint = resolve_checkpoint_path(checkpoint);
  const fs::path meta_path = fs::path(m.checkpoint) / "meta.json";
  auto config = read_checkpoint_config(m.checkpoint);
  if (!config) {
    throw CheckpointError(meta_path.string() + ": no run config recorded (written by an older moetrain?)");
  }
  m.config = std::move(*config);
  if (m.config.model.vocab_size <= 0) {
    throw CheckpointError(meta_path.string() + ": the recorded config has no vocabulary size");
  }
  if (dropless_moe) m.config.model.moe.capacity_factor = 0;
  m.tokenizer = tokenizer;
  if (m.tokenizer.empty()) {
    try {
      m.tokenizer = data::resolve_tokenizer_path(m.config.data);
    } catch (const std::runtime_error& e) {
      throw config::ConfigError(std::string(e.what()) + " (pass --tokenizer PATH)");
    }
  } else if (!fs::is_regular_file(m.tokenizer)) {
    throw config::ConfigError("--tokenizer: no such file: " + m.tokenizer);
  }
  // The whole model, filled from the checkpoint's pieces.
  torch::NoGradGuard no_grad;
  m.model = models::Seq2SeqTransformer(m.config.model);
  if (m.config.finetune.mode == config::FinetuneMode::Lora) m.model->add_lora(m.config.lora);
  std::vector<std::pair<std::string, torch::Tensor>> named;
  for (const auto& item : m.model->named_parameters(/*recurse=*/true)) named.emplace_back(item.key(), item.value());
  optim::FlatParameters params(named, torch::kFloat32, [](const std::string&, const torch::Tensor&) { return false; });
  m.step = load_checkpoint(m.checkpoint, params, nullptr, 0, nullptr).step;
  params.copy_master_to_model();
  m.model->eval();
  return m;
}

}  // namespace moetrain::checkpoint
