// `moetrain tokenize`: a SentencePiece model and HDF5 token shards (data/tokenize.h).
#include "app/commands.h"

#include <boost/program_options.hpp>

#include <filesystem>
#include <iostream>

#include "app/command_line.h"
#include "data/tokenize.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace moetrain::app {

int tokenize_command(int argc, char** argv) {
  data::TokenizeOptions o;
  po::options_description options("tokenize options");
  // clang-format off
  options.add_options()
      ("help,h", "show this help")
      ("input,i", po::value(&o.inputs)->multitoken()->required(), ".jsonl, .jsonl.zst or text files (text: documents separated by blank lines)")
      ("output,o", po::value(&o.output_dir)->required(), "output directory: tokenizer.model, train-*.h5, valid-*.h5, dataset.json")
      ("vocab-size", po::value(&o.vocab_size)->default_value(o.vocab_size), "SentencePiece vocabulary size when training one")
      ("text-field", po::value(&o.text_field)->default_value(o.text_field), "JSONL field holding a document")
      ("source-field", po::value(&o.source_field), "JSONL field of the source side (pairs mode, with --target-field)")
      ("target-field", po::value(&o.target_field), "JSONL field of the target side (pairs mode)")
      ("tokenizer", po::value(&o.tokenizer_model), "use this existing SentencePiece .model instead of training one")
      ("model-type", po::value(&o.model_type)->default_value(o.model_type), "unigram or bpe")
      ("valid-fraction", po::value(&o.valid_fraction)->default_value(o.valid_fraction), "fraction of documents held out as the valid split")
      ("valid-input", po::value(&o.valid_inputs)->multitoken(), "files whose records all go to the valid split (not used to train the tokenizer)")
      ("docs-per-shard", po::value(&o.docs_per_shard)->default_value(o.docs_per_shard), "documents (or pairs) per HDF5 shard")
      ("max-sentences", po::value(&o.max_training_sentences)->default_value(o.max_training_sentences), "cap on sentences used to train the tokenizer")
      ("seed", po::value(&o.seed)->default_value(o.seed), "seed for the valid split and tokenizer training");
  // clang-format on
  const auto vm = parse_command_line(argc, argv, options, "tokenize");
  if (vm.count("help")) return 0;
  if (o.source_field.empty() != o.target_field.empty()) {
    throw UsageError("tokenize: --source-field and --target-field go together");
  }
  for (const auto& input : o.inputs) {
    if (!fs::is_regular_file(input)) throw UsageError("tokenize: input not found: " + input);
  }
  for (const auto& input : o.valid_inputs) {
    if (!fs::is_regular_file(input)) throw UsageError("tokenize: --valid-input not found: " + input);
  }
  const auto s = data::tokenize_corpus(o);
  std::cout << (s.trained_tokenizer ? "trained " : "loaded ") << "tokenizer " << s.tokenizer_path << " (vocab "
            << s.vocab_size;
  if (s.trained_tokenizer) std::cout << ", " << s.training_sentences << " training sentences";
  std::cout << ")\n" << s.input_records << " " << s.kind << " read, " << s.skipped_empty << " empty skipped\n";
  for (const auto* split : {&s.train, &s.valid}) {
    if (split->records == 0) continue;
    std::cout << (split == &s.train ? "train" : "valid") << ": " << split->records << " " << s.kind << ", "
              << split->tokens << " tokens in " << split->shards.size() << " shard(s)\n";
  }
  std::cout << "wrote " << s.dataset_json << std::endl;
  return 0;
}

}  // namespace moetrain::app
