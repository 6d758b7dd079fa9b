// A Hugging Face model folder's weights: model.safetensors, or the shards a
// model.safetensors.index.json lists, read whole and checked against the
// index; and those weights under moetrain's parameter names, following the
// same NLLB-MoE name map export writes with (export/nllb_moe_format.h).
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "export/nllb_moe_format.h"
#include "export/safetensors.h"
#include "models/model_config.h"

namespace moetrain::importing {

// Every tensor of the folder `dir`, in file order. Throws ImportError naming
// the file: no weights, a malformed or truncated file, a shard the index
// names that is missing, a tensor the index places in a shard that lacks it,
// a tensor in two shards.
exporting::NamedTensors read_hf_weights(const std::string& dir);

// The weights of a model whose parameters are `parameters` (moetrain names
// and shapes, in order), taken from `source` tensors named as in `layout`
// (NLLB-MoE or M2M100): experts stacked, everything fp32. Throws ImportError naming the key of a missing,
// misshapen or unexpected tensor, or of an embedding copy that differs from
// model.shared.weight (moetrain's encoder and decoder share one embedding).
exporting::NamedTensors from_nllb_moe_names(const exporting::NamedTensors& source,
                                            const std::vector<std::pair<std::string, std::vector<int64_t>>>& parameters,
                                            const models::ModelConfig& model, exporting::HfLayout layout);

}  // namespace moetrain::importing
