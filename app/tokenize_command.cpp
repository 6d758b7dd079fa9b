// `moetrain tokenize`: a SentencePiece model and HDF5 token shards
// (data/tokenize.h), on one process or on every rank of an mpirun job; this
// file supplies the job's ranks over parallel/'s communicator.
#include "app/commands.h"

#include <torch/torch.h>
#include <boost/program_options.hpp>

#include <cstdio>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <memory>

#include "app/command_line.h"
#include "data/tokenize.h"
#include "data/tokenize_workers.h"
#include "data/tokenizer.h"
#include "monitor/progress.h"
#include "parallel/byte_exchange.h"
#include "parallel/mpi_communicator.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace moetrain::app {
namespace {

// The tokenize job's ranks over the world communicator. Its collectives wait
// as long as rank 0's tokenizer training or the slowest rank's shards take,
// so it is not watched by the collective timeout.
class CommunicatorRanks : public data::TokenizeRanks {
 public:
  CommunicatorRanks() : world_(parallel::make_world_communicator(/*timeout_s=*/0)) {}
  int rank() const override { return static_cast<int>(world_->rank()); }
  int size() const override { return static_cast<int>(world_->size()); }
  std::string broadcast_from_rank0(const std::string& bytes) override {
    torch::Tensor size = torch::tensor({static_cast<int64_t>(bytes.size())}, torch::kInt64);
    world_->broadcast(size, 0);
    torch::Tensor data = torch::empty({size.item<int64_t>()}, torch::kUInt8);
    if (world_->rank() == 0) std::memcpy(data.data_ptr(), bytes.data(), bytes.size());
    world_->broadcast(data, 0);
    return std::string(static_cast<const char*>(data.data_ptr()), static_cast<size_t>(data.numel()));
  }
  std::vector<std::string> all_gather(const std::string& mine) override {
    const auto gathered = parallel::all_gather_bytes(*world_, parallel::ByteMessage(mine.begin(), mine.end()));
    std::vector<std::string> out;
    for (const auto& m : gathered) out.emplace_back(m.begin(), m.end());
    return out;
  }

 private:
  std::unique_ptr<parallel::Communicator> world_;
};

void print_summary(const data::TokenizeSummary& s) {
  std::cout << (s.trained_tokenizer ? "trained " : "loaded ") << "tokenizer " << s.tokenizer_path << " (vocab "
            << s.vocab_size;
  if (s.trained_tokenizer) std::cout << ", " << s.training_sentences << " training sentences";
  if (s.reused_tokenizer) std::cout << ", kept from the interrupted run";
  std::cout << ")\n" << s.input_records << " " << s.kind << " read, " << s.skipped_empty << " empty skipped";
  if (s.skipped_bad.count > 0) {
    std::cout << ", " << s.skipped_bad.count << " bad skipped (--strict makes a bad record fatal):";
    for (const auto& line : s.skipped_bad.first) std::cout << "\n  " << line;
    if (s.skipped_bad.count > static_cast<int64_t>(s.skipped_bad.first.size()))
      std::cout << "\n  ... and " << s.skipped_bad.count - static_cast<int64_t>(s.skipped_bad.first.size()) << " more";
  }
  std::cout << "\n";
  for (const auto* split : {&s.train, &s.valid}) {
    if (split->shards.empty()) continue;
    std::cout << (split == &s.train ? "train" : "valid") << ": " << split->records << " " << s.kind << ", "
              << split->tokens << " tokens in " << split->shards.size() << " shard(s)\n";
  }
  const double mb = static_cast<double>(s.encoded_bytes) / 1e6;
  char rate[160];
  std::snprintf(rate, sizeof(rate), "encoded %.1f MB of text in %.1f s (%.2f MB/s)", mb, s.encode_seconds,
                s.encode_seconds > 0 ? mb / s.encode_seconds : 0.0);
  std::cout << s.shards_written << " shard(s) written, " << s.shards_skipped << " already done by an earlier run; "
            << rate << " with " << s.ranks << " rank(s) x " << s.threads << " thread(s)\n";
  std::cout << "wrote " << s.dataset_json << std::endl;
}

}  // namespace

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
      ("src-lang", po::value(&o.source_lang), "pairs mode: language code written before each source (an imported NLLB tokenizer's, e.g. eng_Latn)")
      ("tgt-lang", po::value(&o.target_lang), "pairs mode: language code written before each target (with --src-lang)")
      ("src-lang-field", po::value(&o.source_lang_field), "pairs mode: JSONL field naming each record's source language code (instead of --src-lang)")
      ("tgt-lang-field", po::value(&o.target_lang_field), "pairs mode: JSONL field naming each record's target language code (instead of --tgt-lang)")
      ("tokenizer", po::value(&o.tokenizer_model), "use this existing SentencePiece .model instead of training one")
      ("model-type", po::value(&o.model_type)->default_value(o.model_type), "unigram or bpe")
      ("valid-fraction", po::value(&o.valid_fraction)->default_value(o.valid_fraction), "fraction of documents held out as the valid split")
      ("valid-input", po::value(&o.valid_inputs)->multitoken(), "files whose records all go to the valid split (not used to train the tokenizer)")
      ("docs-per-shard", po::value(&o.docs_per_shard)->default_value(o.docs_per_shard), "documents (or pairs) per HDF5 shard")
      ("compression-level", po::value(&o.deflate_level)->default_value(o.deflate_level), "0: uncompressed token arrays; 1-9: shuffle + deflate at this zlib level")
      ("max-sentences", po::value(&o.max_training_sentences)->default_value(o.max_training_sentences), "cap on sentences used to train the tokenizer")
      ("seed", po::value(&o.seed)->default_value(o.seed), "seed for the valid split and tokenizer training")
      ("threads", po::value(&o.threads)->default_value(o.threads), "encoding threads per rank (the output does not depend on it)")
      ("strict", po::bool_switch(&o.strict), "a bad record (invalid JSON or UTF-8, a missing field) is fatal instead of skipped");
  // clang-format on
  const auto vm = parse_command_line(argc, argv, options, "tokenize");
  if (vm.count("help")) return 0;
  if (o.source_field.empty() != o.target_field.empty()) {
    throw UsageError("tokenize: --source-field and --target-field go together");
  }
  if (!o.source_lang.empty() && !o.source_lang_field.empty())
    throw UsageError("tokenize: give --src-lang or --src-lang-field, not both");
  if (!o.target_lang.empty() && !o.target_lang_field.empty())
    throw UsageError("tokenize: give --tgt-lang or --tgt-lang-field, not both");
  if (o.source_language() != o.target_language())
    throw UsageError(
        "tokenize: a source language (--src-lang or --src-lang-field) needs a target language, and the other way "
        "round");
  if (o.languages() && o.source_field.empty()) {
    throw UsageError(
        "tokenize: languages (--src-lang, --src-lang-field) are for pairs mode (--source-field, --target-field)");
  }
  if (o.threads < 1) throw UsageError("tokenize: --threads must be at least 1");
  if (o.docs_per_shard < 1) throw UsageError("tokenize: --docs-per-shard must be at least 1");
  if (o.deflate_level < 0 || o.deflate_level > 9) throw UsageError("tokenize: --compression-level must be 0 to 9");
  for (const auto& input : o.inputs) {
    if (!fs::is_regular_file(input)) throw UsageError("tokenize: input not found: " + input);
  }
  for (const auto& input : o.valid_inputs) {
    if (!fs::is_regular_file(input)) throw UsageError("tokenize: --valid-input not found: " + input);
  }
  if (!o.tokenizer_model.empty() && !fs::is_regular_file(o.tokenizer_model)) {
    throw UsageError("tokenize: --tokenizer not found: " + o.tokenizer_model);
  }
  if (o.languages()) {
    if (o.tokenizer_model.empty()) {
      throw UsageError(
          "tokenize: languages (--src-lang, --src-lang-field) need --tokenizer, one with language codes (an "
          "imported NLLB model's tokenizer.model)");
    }
    try {
      data::language_prefix(data::Tokenizer::load(o.tokenizer_model), o);
    } catch (const std::invalid_argument& e) {
      throw UsageError(std::string(e.what()) + " (--tokenizer " + o.tokenizer_model + ")");
    }
  }
  CommunicatorRanks ranks;
  // Rank 0's share of pass 2 (shards are dealt round robin, so it stands for
  // the job's progress), on stderr.
  std::unique_ptr<monitor::Progress> progress;
  if (ranks.rank() == 0) {
    o.progress = [&progress, &ranks](const data::TokenizeProgress& p) {
      if (!progress) {
        const std::string what = ranks.size() > 1 ? "tokenize, rank 0 of " + std::to_string(ranks.size()) : "tokenize";
        progress = std::make_unique<monitor::Progress>(what, "records", p.records);
      }
      progress->update(p.records_done, {{"MB", static_cast<double>(p.text_bytes) / 1e6}});
    };
  }
  const auto s = data::tokenize_corpus(o, ranks);
  if (progress) progress->finish();
  if (ranks.rank() == 0) print_summary(s);
  return 0;
}

}  // namespace moetrain::app
