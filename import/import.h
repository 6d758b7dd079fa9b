// `moetrain import`: a Hugging Face model folder as a moetrain checkpoint.
//
// OUT receives
//   checkpoints/step-000000/  the weights (fp32, no optimizer state; see
//                             checkpoint::save_weights_checkpoint), with the
//                             run config in meta.json;
//   model.yaml                the `model:` section that reproduces the
//                             architecture, for a training config;
//   tokenizer.model           the source's tokenizer as a SentencePiece model
//                             (import/hf_tokenizer.h; NLLB's in fairseq's id
//                             layout, language codes included).
// `moetrain train --init-from OUT` starts from it under any layout, LoRA or
// full; export, generate and eval take OUT as a checkpoint. OUT is built as
// OUT.partial and renamed into place: a failed import leaves nothing.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

namespace moetrain::importing {

struct ImportOptions {
  std::string from;  // the Hugging Face folder
  std::string out;   // must not exist
};

struct ImportSummary {
  std::string model_type;
  int64_t tensors = 0;         // read from the source
  int64_t parameters = 0;      // elements
  int64_t language_codes = 0;  // in the tokenizer
  std::string checkpoint;      // OUT/checkpoints/step-000000
  std::vector<std::string> notes;
};

// Throws ImportError (hf_config.h) for what the source holds that moetrain
// cannot take.
ImportSummary import_hf_model(const ImportOptions& options);

}  // namespace moetrain::importing
