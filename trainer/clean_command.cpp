// `moetrain clean`, `moetrain clean train-classifier`, `moetrain augment`
// (see clean_command.h).
#include "trainer/clean_command.h"
#include "trainer/command_line.h"

#include <boost/program_options.hpp>
#include <nlohmann/json.hpp>

#include <algorithm>
#include <climits>
#include <cstdint>
#include <filesystem>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "data/atomic_file.h"
#include "data/clean/augment.h"
#include "data/clean/clean_config.h"
#include "data/clean/exchange.h"
#include "data/clean/fasttext_classifier.h"
#include "data/clean/mail_extract.h"
#include "data/clean/normalize.h"
#include "data/clean/pipeline.h"
#include "data/clean/record_io.h"
#include "data/clean/stats.h"
#include "data/portable_rng.h"
#include "parallel/mpi_runtime.h"

namespace po = boost::program_options;
namespace fs = std::filesystem;
namespace clean = moetrain::data::clean;

namespace moetrain::trainer {
namespace {

// data::clean::Exchange over MPI_COMM_WORLD.
class MpiExchange : public clean::Exchange {
 public:
  MpiExchange() : rank_(parallel::world_rank()), size_(parallel::world_size()) {}
  int rank() const override { return rank_; }
  int size() const override { return size_; }

  std::vector<clean::Bytes> all_to_all(const std::vector<clean::Bytes>& send) override {
    std::vector<int> send_counts(size_), recv_counts(size_), send_displs(size_), recv_displs(size_);
    clean::Bytes flat;
    for (int r = 0; r < size_; ++r) {
      send_counts[r] = checked_count(send[r].size());
      send_displs[r] = checked_count(flat.size());
      flat.insert(flat.end(), send[r].begin(), send[r].end());
    }
    MOETRAIN_MPI_CHECK(MPI_Alltoall(send_counts.data(), 1, MPI_INT, recv_counts.data(), 1, MPI_INT, MPI_COMM_WORLD));
    size_t total = 0;
    for (int r = 0; r < size_; ++r) {
      recv_displs[r] = checked_count(total);
      total += static_cast<size_t>(recv_counts[r]);
    }
    checked_count(total);
    clean::Bytes received(std::max<size_t>(total, 1));
    MOETRAIN_MPI_CHECK(MPI_Alltoallv(flat.data(), send_counts.data(), send_displs.data(), MPI_BYTE, received.data(),
                                     recv_counts.data(), recv_displs.data(), MPI_BYTE, MPI_COMM_WORLD));
    std::vector<clean::Bytes> out(size_);
    for (int r = 0; r < size_; ++r)
      out[r].assign(received.begin() + recv_displs[r], received.begin() + recv_displs[r] + recv_counts[r]);
    return out;
  }

  std::vector<clean::Bytes> all_gather(const clean::Bytes& mine) override {
    int count = checked_count(mine.size());
    std::vector<int> counts(size_), displs(size_);
    MOETRAIN_MPI_CHECK(MPI_Allgather(&count, 1, MPI_INT, counts.data(), 1, MPI_INT, MPI_COMM_WORLD));
    size_t total = 0;
    for (int r = 0; r < size_; ++r) {
      displs[r] = checked_count(total);
      total += static_cast<size_t>(counts[r]);
    }
    checked_count(total);
    clean::Bytes received(std::max<size_t>(total, 1));
    clean::Bytes send = mine;
    send.resize(std::max<size_t>(send.size(), 1));
    MOETRAIN_MPI_CHECK(MPI_Allgatherv(send.data(), count, MPI_BYTE, received.data(), counts.data(), displs.data(),
                                      MPI_BYTE, MPI_COMM_WORLD));
    std::vector<clean::Bytes> out(size_);
    for (int r = 0; r < size_; ++r)
      out[r].assign(received.begin() + displs[r], received.begin() + displs[r] + counts[r]);
    return out;
  }

 private:
  static int checked_count(size_t n) {
    if (n > static_cast<size_t>(INT_MAX))
      throw std::runtime_error("clean: a dedup exchange exceeds 2 GiB per rank; run with more ranks");
    return static_cast<int>(n);
  }
  int rank_, size_;
};

std::vector<std::string> split_list(const std::string& s) {
  std::vector<std::string> out;
  std::stringstream ss(s);
  std::string item;
  while (std::getline(ss, item, ','))
    if (!item.empty()) out.push_back(item);
  return out;
}

int clean_main(int argc, char** argv) {
  std::string config_path, output, stages, text_field, extract;
  std::vector<std::string> inputs, overrides;
  po::options_description options("clean options");
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
  const auto vm = parse_command_line(argc, argv, options, "clean");
  if (vm.count("help")) return 0;

  clean::CleanConfig config = config_path.empty() ? clean::CleanConfig{} : clean::load_clean_config(config_path);
  if (!inputs.empty()) config.inputs = inputs;
  if (!output.empty()) config.output = output;
  if (vm.count("stages")) config.stages = split_list(stages);
  if (!text_field.empty()) config.text_field = text_field;
  if (!extract.empty()) config.extract = extract;
  if (vm.count("strict")) config.strict = true;
  for (const auto& o : overrides) clean::apply_override(config, o);

  MpiExchange exchange;
  const auto result = clean::run_clean_pipeline(config, exchange);
  if (exchange.rank() == 0) {
    std::cout << clean::format_stats_table(result.stats);
    std::cout << "wrote " << config.output << "/stats.json (" << result.shards << " shard(s), "
              << exchange.size() << " rank(s))" << std::endl;
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
  const auto vm = parse_command_line(argc, argv, options, "clean train-classifier");
  if (vm.count("help")) return 0;
  if (!(valid_fraction >= 0 && valid_fraction < 1))
    throw UsageError("clean train-classifier: --valid-fraction must be in [0, 1)");
  if (extract != "none" && extract != "mail") throw UsageError("clean train-classifier: --extract must be none or mail");
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
      const std::string text =
          clean::normalize_text(extract == "mail" ? clean::extract_mail_text(rec.text) : rec.text);
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

int augment_main(int argc, char** argv) {
  clean::AugmentOptions o;
  std::vector<std::string> inputs;
  std::string output, ops, names;
  po::options_description options("augment options");
  options.add_options()
      ("help,h", "show this help")
      ("input,i", po::value(&inputs)->multitoken()->required(), "JSONL or text files")
      ("output,o", po::value(&output)->required(), "JSONL file to write")
      ("ops", po::value(&ops), "operations used in turn: synonym,insert,delete,swap,entity (default all; entity needs --names)")
      ("copies", po::value(&o.copies)->default_value(o.copies), "augmented copies per record")
      ("alpha", po::value(&o.alpha)->default_value(o.alpha), "share of words changed by synonym, insert and swap")
      ("delete-probability", po::value(&o.delete_probability)->default_value(o.delete_probability), "chance of deleting each word")
      ("names", po::value(&names), "name list files, comma separated (one name a line), for entity replacement")
      ("synonyms", po::value(&o.synonym_file), "synonym file: 'word syn1 syn2 ...' a line")
      ("seed", po::value(&o.seed)->default_value(o.seed), "seed: the same seed gives the same output")
      ("no-original", "write only the augmented copies")
      ("text-field", po::value(&o.text_field)->default_value(o.text_field), "field holding the text")
      ("id-field", po::value(&o.id_field)->default_value(o.id_field), "field holding the id");
  const auto vm = parse_command_line(argc, argv, options, "augment");
  if (vm.count("help")) return 0;
  if (vm.count("ops")) o.ops = split_list(ops);
  else if (names.empty()) o.ops = {"synonym", "insert", "delete", "swap"};
  o.name_files = split_list(names);
  if (vm.count("no-original")) o.keep_original = false;
  if (o.copies < 0) throw UsageError("augment: --copies must be >= 0");
  for (const auto& p : inputs)
    if (!fs::is_regular_file(p)) throw UsageError("augment: input not found: " + p);
  for (const auto& p : o.name_files)
    if (!fs::is_regular_file(p)) throw UsageError("augment: name list not found: " + p);
  const auto s = clean::augment_files(inputs, output, o);
  std::cout << s.records << " records read (" << s.bad << " bad skipped), " << s.written << " written";
  for (const auto& [op, n] : s.by_op) std::cout << ", " << op << " " << n;
  std::cout << "\nwrote " << output << std::endl;
  return 0;
}

// Runs `body` and turns its exceptions into an exit code and one line.
template <class F>
int guarded(const std::string& command, F&& body) {
  auto world = [] {
    int up = 0, fin = 0, size = 1, rank = 0;
    MPI_Initialized(&up);
    MPI_Finalized(&fin);
    if (up && !fin) {
      MPI_Comm_size(MPI_COMM_WORLD, &size);
      MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    }
    return std::pair<int, int>{rank, size};
  };
  try {
    return body();
  } catch (const UsageError& e) {
    if (world().first == 0) std::cerr << "moetrain: " << e.what() << std::endl;
    return 2;
  } catch (const clean::CleanConfigError& e) {
    // Every rank sees the same config and inputs: rank 0 alone reports.
    if (world().first == 0) std::cerr << "moetrain: " << command << ": config error: " << e.what() << std::endl;
    return 2;
  } catch (const clean::CleanInputError& e) {
    const auto [rank, size] = world();
    if (size > 1) parallel::abort_job(command + ": " + e.what(), 2);
    std::cerr << "moetrain: " << command << ": " << e.what() << std::endl;
    return 2;
  } catch (const std::exception& e) {
    const auto [rank, size] = world();
    if (size > 1) parallel::abort_job(command + " failed: " + e.what(), 1);
    std::cerr << "moetrain: " << command << " failed: " << e.what() << std::endl;
    return 1;
  }
}

}  // namespace

int run_clean_command(int argc, char** argv) {
  if (argc >= 2 && std::string(argv[1]) == "train-classifier")
    return guarded("clean train-classifier", [&] { return train_classifier_main(argc - 1, argv + 1); });
  return guarded("clean", [&] { return clean_main(argc, argv); });
}

int run_augment_command(int argc, char** argv) {
  return guarded("augment", [&] { return augment_main(argc, argv); });
}

}  // namespace moetrain::trainer
