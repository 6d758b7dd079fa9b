// `moetrain export`: a checkpoint as files for serving (export/export.h).
#include "app/commands.h"

#include <boost/program_options.hpp>

#include <filesystem>
#include <iostream>

#include "app/command_line.h"
#include "export/export.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace moetrain::app {

int export_command(int argc, char** argv) {
  exporting::ExportOptions o;
  po::options_description options("export options");
  // clang-format off
  options.add_options()
      ("help,h", "show this help")
      ("checkpoint", po::value(&o.checkpoint), "checkpoint directory, or a run directory (its newest checkpoint)")
      ("out", po::value(&o.out), "output directory (created if missing)")
      ("dtype", po::value(&o.dtype)->default_value(o.dtype), "fp32, bf16 or fp16")
      ("tokenizer", po::value(&o.tokenizer), "SentencePiece model to ship (default: the one the run's config names)")
      ("max-shard-bytes", po::value(&o.max_shard_bytes)->default_value(o.max_shard_bytes),
       "split model.safetensors into shards of at most this many bytes, with an index")
      ("format", po::value(&o.format)->default_value(o.format),
       "auto, moetrain, nllb-moe or m2m100: parameter names and config.json (auto: NLLB-MoE's when the architecture "
       "is NLLB-MoE's; m2m100: the dense layout of NLLB-200's dense models and M2M100)")
      ("adapter-only", po::bool_switch(&o.adapter_only),
       "a LoRA checkpoint's adapters alone, PEFT-style (adapter_config.json, adapter_model.safetensors); without "
       "it LoRA is merged into the weights");
  // clang-format on
  const auto vm = parse_command_line(argc, argv, options, "export");
  if (vm.count("help")) return 0;
  if (o.checkpoint.empty() || o.out.empty()) throw UsageError("export: --checkpoint DIR and --out DIR are required");
  if (!fs::exists(o.checkpoint)) throw UsageError("export: --checkpoint: not found: " + o.checkpoint);
  if (o.max_shard_bytes < 1) throw UsageError("export: --max-shard-bytes must be positive");
  const exporting::ExportSummary s = exporting::export_checkpoint(o);
  std::cout << "exported " << s.checkpoint << " (step " << s.step << "): " << s.tensors << " tensors, " << s.parameters
            << " parameters, " << s.bytes << " bytes as " << o.dtype << " with " << s.format << " names -> " << o.out
            << ":";
  for (const auto& f : s.files) std::cout << " " << f;
  std::cout << std::endl;
  if (!s.format_reason.empty()) std::cout << "not in the nllb-moe format: " << s.format_reason << std::endl;
  if (s.lora_scale > 0) {
    std::cout << (o.adapter_only ? "LoRA adapters written alone (PEFT layout), scale "
                                 : "LoRA adapters merged into the weights in fp32: W + scale * B A, scale ")
              << s.lora_scale << std::endl;
  }
  return 0;
}

}  // namespace moetrain::app
