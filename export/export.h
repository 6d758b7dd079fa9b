// `moetrain export`: a checkpoint of any layout as files for serving:
//   model.safetensors (or model-0000k-of-0000n.safetensors shards and
//     model.safetensors.index.json past --max-shard-bytes, 5 GB by default),
//     every parameter of the whole model under its moetrain name, in the
//     chosen dtype; `__metadata__` {"format": "pt"}; the tied embedding once
//     (there is no lm_head.weight when it is tied);
//   config.json: the model's architecture (moetrain's model section as JSON,
//     with model_type "moetrain", torch_dtype and tie_word_embeddings);
//   tokenizer.model: the run's SentencePiece model.
// A LoRA checkpoint is exported merged, or with --adapter-only as a PEFT
// adapter (see ExportOptions::adapter_only).
// In the nllb-moe format (--format nllb-moe, or auto for a model with
// NLLB-MoE's architecture: export/nllb_moe_format.h) the weights carry
// NLLB-MoE's names, experts one tensor each, and config.json is NLLB-MoE's,
// so transformers' NllbMoeForConditionalGeneration.from_pretrained loads the
// folder.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "checkpoint/checkpoint_model.h"

namespace moetrain::exporting {

struct ExportOptions {
  std::string checkpoint;      // a checkpoint directory, or a run directory (its newest)
  std::string out;             // created if missing
  std::string dtype = "fp32";  // fp32 | bf16 | fp16
  std::string tokenizer;       // empty: the one the checkpoint's config names
  int64_t max_shard_bytes = 5'000'000'000;
  // moetrain | nllb-moe | m2m100 | auto (nllb-moe when the model is
  // nllb_moe_compatible, else moetrain). nllb-moe or m2m100 (a dense model)
  // for another architecture is a ConfigError naming the first mismatch.
  std::string format = "auto";
  // A LoRA checkpoint's adapters alone, PEFT-style: adapter_config.json and
  // adapter_model.safetensors (keys base_model.model.<module>.lora_A.weight
  // and .lora_B.weight, in the chosen format's module names; experts one
  // module each in the nllb-moe format). Without it a LoRA checkpoint is
  // exported with its adapters merged: W + scale * B A, computed in fp32,
  // then cast to dtype.
  bool adapter_only = false;
};

struct ExportSummary {
  std::string checkpoint;  // the checkpoint directory exported
  int64_t step = 0;
  int64_t tensors = 0;
  int64_t parameters = 0;
  int64_t bytes = 0;               // tensor bytes written
  std::vector<std::string> files;  // under out
  std::string format;              // the names and config.json written: moetrain, nllb-moe or m2m100
  std::string format_reason;       // auto and moetrain written: why not nllb-moe
  double lora_scale = 0;           // > 0: a LoRA checkpoint, merged or (adapter_only) not
};

// Throws ConfigError / CheckpointError / std::runtime_error naming what is
// wrong (an unknown dtype, a missing checkpoint or tokenizer). Files are
// written atomically, so a failed export leaves no partial file under a
// final name.
ExportSummary export_checkpoint(const ExportOptions& options);

}  // namespace moetrain::exporting
