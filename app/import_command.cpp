// `moetrain import`: a Hugging Face model folder as a moetrain checkpoint
// (import/import.h).
#include "app/commands.h"

#include <boost/program_options.hpp>

#include <iostream>

#include "app/command_line.h"
#include "import/import.h"

namespace po = boost::program_options;

namespace moetrain::app {

int import_command(int argc, char** argv) {
  importing::ImportOptions o;
  po::options_description options("import options");
  // clang-format off
  options.add_options()
      ("help,h", "show this help")
      ("from", po::value(&o.from), "a Hugging Face model folder: config.json, model.safetensors (or "
       "model.safetensors.index.json and its shards) and its tokenizer: tokenizer.model, or NLLB's "
       "sentencepiece.bpe.model with tokenizer.json")
      ("out", po::value(&o.out), "the directory to create: checkpoints/step-000000, model.yaml, tokenizer.model");
  // clang-format on
  const auto vm = parse_command_line(argc, argv, options, "import");
  if (vm.count("help")) return 0;
  if (o.from.empty() || o.out.empty()) throw UsageError("import: --from DIR and --out DIR are required");
  const importing::ImportSummary s = importing::import_hf_model(o);
  std::cout << "imported " << o.from << " (" << s.model_type << "): " << s.tensors << " tensors, " << s.parameters
            << " parameters -> " << s.checkpoint << "; its model: section is in " << o.out << "/model.yaml"
            << std::endl;
  if (s.language_codes > 0) {
    std::cout << "its tokenizer has " << s.language_codes
              << " language codes: give them to tokenize and generate with --src-lang and --tgt-lang" << std::endl;
  }
  for (const auto& note : s.notes) std::cout << "note: " << note << std::endl;
  return 0;
}

}  // namespace moetrain::app
