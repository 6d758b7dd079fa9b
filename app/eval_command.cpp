// `moetrain eval`: metrics of hypotheses against references, or a checkpoint's loss on a dataset.
#include "app/commands.h"

#include <boost/program_options.hpp>

#include <cmath>
#include <filesystem>
#include <iomanip>
#include <iostream>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "app/command_line.h"
#include "app/placement.h"
#include "checkpoint/checkpoint_model.h"
#include "data/batch_source.h"
#include "data/tokenizer.h"
#include "eval/dataset_loss.h"
#include "eval/metrics.h"
#include "monitor/progress.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;

namespace moetrain::app {

namespace {

// `moetrain eval --checkpoint --data`: the model's mean cross-entropy per
// target token over every pair (or span-corruption window) of a split, in
// order, and its perplexity.
int eval_dataset_loss(const std::string& checkpoint, const std::string& data_path, const std::string& split,
                      const std::string& tokenizer, int64_t batch_size, int64_t max_samples,
                      const Placement& placement) {
  if (batch_size < 1) throw UsageError("eval: --batch-size must be at least 1");
  check_placement(placement, "eval");
  checkpoint::CheckpointModel m = checkpoint::load_checkpoint_model(checkpoint, tokenizer);
  m.model->place(placement.where(), placement.scalar_type());
  const auto device = placement.where();
  const auto special = data::Tokenizer::load(m.tokenizer).special_tokens();
  data::DataConfig cfg = m.config.data;
  cfg.train = data_path;
  cfg.valid = data_path;
  cfg.mixture.clear();
  cfg.shuffle = false;
  std::optional<data::BatchSource> source;
  try {
    source.emplace(cfg, special, m.config.train.seed, split);
  } catch (const std::runtime_error& e) {
    throw UsageError(std::string("eval: --data: ") + e.what());
  }
  int64_t n = source->num_samples();
  if (max_samples > 0) n = std::min(n, max_samples);
  monitor::Progress progress("eval", "samples", n);
  const eval::LossTotals totals = eval::dataset_loss(m.model, *source, special, n, batch_size, device,
                                                     [&](int64_t done, const eval::LossTotals& t) {
                                                       progress.update(done, {{"tokens", t.tokens}});
                                                     });
  progress.finish();
  std::cout << std::fixed << std::setprecision(4) << "loss " << totals.mean() << " per target token, perplexity "
            << totals.perplexity() << " (" << static_cast<int64_t>(totals.tokens) << " target tokens in " << n
            << " samples of the " << split << " split of " << data_path << ", checkpoint " << m.checkpoint << ")\n";
  return 0;
}

}  // namespace

int eval_command(int argc, char** argv) {
  std::string hypotheses, metrics = "bleu,chrf,chrf++,rouge-l,wer,per";
  std::vector<std::string> references;
  std::string checkpoint, data_path, split = "valid", tokenizer;
  int64_t batch_size = 64, max_samples = 0;
  Placement placement;
  po::options_description options("eval options");
  // clang-format off
  options.add_options()
      ("help,h", "show this help")
      ("checkpoint", po::value(&checkpoint),
       "with --data: report this checkpoint's loss and perplexity (a checkpoint or run directory)")
      ("data", po::value(&data_path), "token shards as `moetrain tokenize` writes them (a directory, .h5 or glob)")
      ("split", po::value(&split)->default_value(split), "valid or train: which shards of --data")
      ("batch-size", po::value(&batch_size)->default_value(batch_size), "samples per forward pass")
      ("max-samples", po::value(&max_samples)->default_value(max_samples), "score only the first N samples (0: all)")
      ("tokenizer", po::value(&tokenizer), "SentencePiece model (default: the one the run's config names)")
      ("hypotheses", po::value(&hypotheses), "text file: one output per line")
      ("references", po::value(&references)->composing(),
       "text file: one reference per line (repeatable for several references; ROUGE-L uses the first; for WER, PER "
       "and SER the closest counts and an empty line is no reference)")
      ("metrics", po::value(&metrics)->default_value(metrics),
       "comma-separated: bleu, chrf, chrf++, rouge-l, wer (word edit distance / reference words), per (the same "
       "over space-separated symbols, e.g. phonemes), ser (share of lines not exactly right)");
  // clang-format on
  add_placement_options(options, placement);  // --checkpoint with --data
  const auto vm = parse_command_line(argc, argv, options, "eval");
  if (vm.count("help")) return 0;
  if (!checkpoint.empty() || !data_path.empty()) {
    if (checkpoint.empty() || data_path.empty()) throw UsageError("eval: --checkpoint DIR and --data PATH go together");
    if (split != "valid" && split != "train") throw UsageError("eval: --split must be valid or train, got " + split);
    return eval_dataset_loss(checkpoint, data_path, split, tokenizer, batch_size, max_samples, placement);
  }
  if (hypotheses.empty() || references.empty()) {
    throw UsageError("eval: --hypotheses FILE and --references FILE are required (or --checkpoint and --data)");
  }
  const auto hyps = read_lines(hypotheses, "eval: --hypotheses");
  std::vector<std::vector<std::string>> refs;
  for (const auto& path : references) {
    refs.push_back(read_lines(path, "eval: --references"));
    if (refs.back().size() != hyps.size()) {
      throw UsageError("eval: " + path + " has " + std::to_string(refs.back().size()) + " lines but " + hypotheses +
                       " has " + std::to_string(hyps.size()));
    }
  }
  std::cout << std::fixed << std::setprecision(4);
  std::stringstream list(metrics);
  for (std::string name; std::getline(list, name, ',');) {
    if (name == "bleu") {
      const auto b = eval::corpus_bleu(hyps, refs);
      std::cout << "BLEU " << b.score << " (" << b.precisions[0] << "/" << b.precisions[1] << "/" << b.precisions[2]
                << "/" << b.precisions[3] << ", BP " << b.brevity_penalty << ", hyp_len " << b.hypothesis_length
                << ", ref_len " << b.reference_length << ")\n";
    } else if (name == "chrf" || name == "chrf++") {
      eval::ChrfOptions o;
      o.word_order = name == "chrf" ? 0 : 2;
      std::cout << (name == "chrf" ? "chrF " : "chrF++ ") << eval::corpus_chrf(hyps, refs, o) << "\n";
    } else if (name == "rouge-l") {
      std::cout << "ROUGE-L " << eval::rouge_l(hyps, refs[0]) << "\n";
    } else if (name == "wer" || name == "per") {
      const auto e = eval::token_error_rate(hyps, refs);
      std::cout << (name == "wer" ? "WER " : "PER ") << 100 * e.rate() << "% (" << e.errors << " edits / " << e.total
                << " reference tokens)\n";
    } else if (name == "ser") {
      const auto e = eval::segment_error_rate(hyps, refs);
      std::cout << "SER " << 100 * e.rate() << "% (" << e.errors << " of " << e.total << " lines wrong)\n";
    } else {
      throw UsageError("eval: --metrics: unknown metric '" + name + "' (bleu, chrf, chrf++, rouge-l, wer, per, ser)");
    }
  }
  return 0;
}

}  // namespace moetrain::app
