// A Hugging Face model folder's config.json read as moetrain's model config:
// which architectures `moetrain import` takes, and every key it checks.
//
// NLLB-MoE (model_type "nllb-moe") maps onto configs/nllb-moe-compatible.yaml's
// architecture, M2M100 (model_type "m2m_100": NLLB-200's dense models and
// M2M100) onto the same without sparse layers, as configs/m2m100-compatible.yaml
// (export/nllb_moe_format.h lists the correspondence). A key
// whose value moetrain cannot reproduce is an ImportError naming the key and
// its value. Keys that only shape training in transformers (dropouts,
// layerdrop, router jitter) are carried over where moetrain has them and
// listed in `notes` where it has not.
#pragma once

#include <nlohmann/json.hpp>

#include <stdexcept>
#include <string>
#include <vector>

#include "data/tokenizer.h"
#include "export/nllb_moe_format.h"
#include "models/model_config.h"

namespace moetrain::importing {

// What in the source moetrain cannot take: one line naming the file, the key
// and the value; `moetrain import` exits 2 with it.
class ImportError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct HfModelConfig {
  std::string model_type;  // "nllb-moe" or "m2m_100"
  exporting::HfLayout layout = exporting::HfLayout::NllbMoe;
  models::ModelConfig model;
  // pad, eos, bos and decoder start as config.json gives them (unk unset).
  data::SpecialTokens special;
  std::vector<std::string> notes;  // what is carried over only approximately
};

// Reads `path` (a config.json). Throws ImportError.
HfModelConfig read_hf_config(const std::string& path);

}  // namespace moetrain::importing
