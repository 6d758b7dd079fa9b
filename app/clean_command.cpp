// `moetrain clean` (stages in config order over the inputs, split by shard
// across the ranks of an mpirun job) and `moetrain clean train-classifier`
// (a fastText model from labelled JSONL). The stages are data/clean's; this
// file supplies their exchange between ranks over parallel/'s communicator.
#include "app/commands.h"

#include "app/command_line.h"

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <vector>

#include "data/atomic_file.h"
#include "data/clean/clean_config.h"
#include "data/clean/exchange.h"
#include "data/clean/fasttext_classifier.h"
#include "data/clean/mail_extract.h"
#include "data/clean/normalize.h"
#include "data/clean/pipeline.h"
#include "data/clean/record_io.h"
#include "data/clean/stats.h"
#include "data/portable_rng.h"
#include "monitor/progress.h"
#include "parallel/byte_exchange.h"
#include "parallel/mpi_communicator.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
namespace clean = moetrain::data::clean;

namespace moetrain::app {
namespace {

// The cleaning pipeline's exchange over the world communicator. Its
// collectives wait as long as the slowest rank takes over its shards, so
// they are not watched by the collective timeout.
class CommunicatorExchange : public clean::Exchange {
 public:
  CommunicatorExchange() : world_(parallel::make_world_communicator(/*timeout_s=*/0)) {}
  int rank() const override { return static_cast<int>(world_->rank()); }
  int size() const override { return static_cast<int>(world_->size()); }
  std::vector<clean::Bytes> all_to_all(const std::vector<clean::Bytes>& send) override {
    return parallel::all_to_all_bytes(*world_, send);
  }
  std::vector<clean::Bytes> all_gather(const clean::Bytes& mine) override {
    return parallel::all_gather_bytes(*world_, mine);
  }

 private:
  std::unique_ptr<parallel::Communicator> world_;
};

int clean_main(int argc, char** argv) {
  std::string config_path, output, stages, text_field, extract;
  std::vector<std::string> inputs, overrides;
  po::options_description options("clean options");
  // clang-format off
  options.add_options()
      ("help,h", "show this help")
      ("input,i", po::value(&inputs)->multitoken(), "input files or folders: .jsonl, .jsonl.zst, or text (documents separated by blank lines)")
      ("output,o", po::value(&output), "output folder: kept/, rejected/, stats.json")
      ("config,c", po::value(&config_path), "YAML config (see configs/clean.yaml)")
      ("stages", po::value(&stages), "stages in order, e.g. dedup,quality,domain,toxicity,pii (normalisation always runs first)")
      ("text-field", po::value(&text_field), "JSONL field holding the text (default text)")
      ("extract", po::value(&extract), "none, or mail: turn raw RFC-822 messages into plain text first")
      ("strict", "a bad record (invalid JSON or UTF-8, missing or empty text) is fatal")
      ("set", po::value(&overrides)->composing(), "override a config key: --set quality.gopher_quality.min_doc_words=20 (repeatable)");
  // clang-format on
  const auto vm = parse_command_line(argc, argv, options, "clean");
  if (vm.count("help")) return 0;

  clean::CleanConfig config = config_path.empty() ? clean::CleanConfig{} : clean::load_clean_config(config_path);
  if (!inputs.empty()) config.inputs = inputs;
  if (!output.empty()) config.output = output;
  if (vm.count("stages")) config.stages = split_comma_list(stages);
  if (!text_field.empty()) config.text_field = text_field;
  if (!extract.empty()) config.extract = extract;
  if (vm.count("strict")) config.strict = true;
  for (const auto& o : overrides) clean::apply_override(config, o);

  CommunicatorExchange exchange;
  // Rank 0's share of the work, on stderr: one progress line per pass.
  std::unique_ptr<monitor::Progress> progress;
  clean::CleanProgressFn on_progress;
  if (exchange.rank() == 0) {
    on_progress = [&progress, pass = 0](const clean::CleanProgress& p) mutable {
      if (p.pass != pass) {
        pass = p.pass;
        if (progress) progress->finish();
        const std::string what = p.passes == 1 ? "clean"
                                 : p.pass == 1 ? "clean, pass 1 of 2 (dedup keys)"
                                               : "clean, pass 2 of 2";
        progress = std::make_unique<monitor::Progress>(what, "shards", p.shards);
      }
      progress->update(p.shards_done,
                       {{"documents", static_cast<double>(p.documents)}, {"MB", static_cast<double>(p.bytes) / 1e6}});
    };
  }
  const auto result = clean::run_clean_pipeline(config, exchange, on_progress);
  if (progress) progress->finish();
  if (exchange.rank() == 0) {
    std::cout << clean::format_stats_table(result.stats);
    std::cout << "wrote " << config.output << "/stats.json (" << result.shards << " shard(s), " << exchange.size()
              << " rank(s))" << std::endl;
  }
  return 0;
}

int train_classifier_main(int argc, char** argv) {
  std::vector<std::string> inputs;
  std::string output, text_field = "text", label_field = "label", extract = "none";
  double valid_fraction = 0.1;
  clean::FastTextTrainOptions t;
  uint64_t split_seed = 1;
  po::options_description options("clean train-classifier options");
  // clang-format off
  options.add_options()
      ("help,h", "show this help")
      ("input,i", po::value(&inputs)->multitoken()->required(), "labelled JSONL files")
      ("output,o", po::value(&output)->required(), "model file to write (fastText .bin)")
      ("text-field", po::value(&text_field)->default_value(text_field), "field holding the text")
      ("label-field", po::value(&label_field)->default_value(label_field), "field holding the label")
      ("extract", po::value(&extract)->default_value(extract), "none, or mail (raw RFC-822 messages)")
      ("valid-fraction", po::value(&valid_fraction)->default_value(valid_fraction), "share held out to report accuracy")
      ("epoch", po::value(&t.epoch)->default_value(t.epoch), "training epochs")
      ("lr", po::value(&t.lr)->default_value(t.lr), "learning rate")
      ("dim", po::value(&t.dim)->default_value(t.dim), "embedding size")
      ("word-ngrams", po::value(&t.word_ngrams)->default_value(t.word_ngrams), "word n-gram features")
      ("threads", po::value(&t.threads)->default_value(t.threads), "training threads (1 is reproducible)")
      ("seed", po::value(&split_seed)->default_value(split_seed), "seed of the held-out split and of training");
  // clang-format on
  const auto vm = parse_command_line(argc, argv, options, "clean train-classifier");
  if (vm.count("help")) return 0;
  if (!(valid_fraction >= 0 && valid_fraction < 1))
    throw UsageError("clean train-classifier: --valid-fraction must be in [0, 1)");
  if (extract != "none" && extract != "mail")
    throw UsageError("clean train-classifier: --extract must be none or mail");
  t.seed = static_cast<int>(split_seed);

  std::vector<clean::LabelledText> train, valid;
  data::PortableRng rng(split_seed);
  int64_t bad = 0;
  for (const auto& path : inputs) {
    if (!fs::is_regular_file(path)) throw UsageError("clean train-classifier: input not found: " + path);
    clean::RecordReader reader(path, text_field, "");
    clean::InputRecord rec;
    std::string reason;
    clean::ReadStatus status;
    while ((status = reader.next(rec, reason)) != clean::ReadStatus::End) {
      if (status != clean::ReadStatus::Ok || rec.raw.empty()) {
        ++bad;
        continue;
      }
      const auto record = nlohmann::json::parse(rec.raw);
      const auto it = record.find(label_field);
      if (it == record.end() || !it->is_string() || it->get<std::string>().empty()) {
        ++bad;
        continue;
      }
      std::string label = it->get<std::string>();
      std::replace(label.begin(), label.end(), ' ', '_');
      const std::string text = clean::normalize_text(extract == "mail" ? clean::extract_mail_text(rec.text) : rec.text);
      (rng.uniform_double() < valid_fraction ? valid : train).push_back({label, text});
    }
  }
  if (train.empty()) throw UsageError("clean train-classifier: no labelled records in the input");
  auto model = clean::FastTextClassifier::train(train, t, output);
  const std::string tmp = data::temporary_path_for(output);
  model.save(tmp);
  data::commit_temporary(tmp, output);
  std::cout << "trained on " << train.size() << " records (" << bad << " bad skipped), labels:";
  for (const auto& l : model.labels()) std::cout << ' ' << l;
  std::cout << "\n";
  if (!valid.empty()) {
    int64_t correct = 0;
    std::map<std::string, std::pair<int64_t, int64_t>> per_label;  // correct, total
    for (const auto& ex : valid) {
      const auto p = model.predict(ex.text);
      const bool ok = !p.empty() && p[0].first == ex.label;
      correct += ok;
      per_label[ex.label].first += ok;
      per_label[ex.label].second += 1;
    }
    std::cout << "held-out accuracy: " << correct << "/" << valid.size() << " = "
              << static_cast<double>(correct) / valid.size();
    for (const auto& [label, c] : per_label) std::cout << "; " << label << " " << c.first << "/" << c.second;
    std::cout << "\n";
  }
  std::cout << "wrote " << output << std::endl;
  return 0;
}

}  // namespace

int clean_command(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "train-classifier") return train_classifier_main(argc - 1, argv + 1);
  return clean_main(argc, argv);
}

}  // namespace moetrain::app
