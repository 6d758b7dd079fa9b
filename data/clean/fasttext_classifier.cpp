// fastText supervised training and prediction (see fasttext_classifier.h).
#include "data/clean/fasttext_classifier.h"

#include <fasttext/args.h>
#include <fasttext/fasttext.h>

#include <cstdio>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "data/clean/text_units.h"
#include "data/portable_rng.h"

namespace moetrain::data::clean {

namespace {
const std::string kPrefix = "__label__";
}

std::string prepare_fasttext_text(const std::string& text) {
  std::string out;
  out.reserve(text.size() + 16);
  const std::string lower = lowercase(text);  // the words below are views into it
  for (auto w : split_words(lower)) {
    if (!out.empty()) out.push_back(' ');
    out.append(w);
  }
  return out;
}

FastTextClassifier::FastTextClassifier() : model_(std::make_unique<fasttext::FastText>()) {}
FastTextClassifier::FastTextClassifier(FastTextClassifier&&) noexcept = default;
FastTextClassifier& FastTextClassifier::operator=(FastTextClassifier&&) noexcept = default;
FastTextClassifier::~FastTextClassifier() = default;

FastTextClassifier FastTextClassifier::load(const std::string& path) {
  FastTextClassifier c;
  std::ifstream probe(path, std::ios::binary);
  if (!probe) throw std::runtime_error(path + ": cannot read the fastText model");
  try {
    c.model_->loadModel(path);
  } catch (const std::exception& e) {
    throw std::runtime_error(path + ": not a fastText model: " + e.what());
  }
  return c;
}

FastTextClassifier FastTextClassifier::train(const std::vector<LabelledText>& examples, const FastTextTrainOptions& o,
                                             const std::string& work_path) {
  if (examples.empty()) throw std::invalid_argument("train-classifier: no labelled examples");
  const std::string input = work_path + ".train.txt";
  {
    std::ofstream out(input, std::ios::binary);
    if (!out) throw std::runtime_error(input + ": cannot write the training file");
    // fastText reads its file in order with a decaying learning rate: a file
    // sorted by label would leave the model leaning to the last label.
    std::vector<size_t> order(examples.size());
    for (size_t i = 0; i < order.size(); ++i) order[i] = i;
    PortableRng rng(combine_seeds({static_cast<uint64_t>(o.seed), 0x66617374746578ULL}));
    for (size_t i = order.size(); i > 1; --i) std::swap(order[i - 1], order[rng.uniform(i)]);
    for (size_t i : order)
      out << kPrefix << examples[i].label << ' ' << prepare_fasttext_text(examples[i].text) << '\n';
    if (!out) throw std::runtime_error(input + ": write failed");
  }
  fasttext::Args args;
  args.input = input;
  args.model = fasttext::model_name::sup;
  args.loss = fasttext::loss_name::softmax;
  args.lr = o.lr;
  args.dim = o.dim;
  args.epoch = o.epoch;
  args.wordNgrams = o.word_ngrams;
  args.minCount = o.min_count;
  args.minn = 0;
  args.maxn = 0;
  args.bucket = o.word_ngrams > 1 ? o.bucket : 0;
  args.thread = o.threads;
  args.seed = o.seed;
  args.verbose = 0;
  FastTextClassifier c;
  try {
    c.model_->train(args);
  } catch (const std::exception& e) {
    std::remove(input.c_str());
    throw std::runtime_error(std::string("train-classifier: fastText training failed: ") + e.what());
  }
  std::remove(input.c_str());
  return c;
}

void FastTextClassifier::save(const std::string& path) const { model_->saveModel(path); }

std::vector<std::pair<std::string, double>> FastTextClassifier::predict(const std::string& text) const {
  std::istringstream in(prepare_fasttext_text(text) + "\n");
  std::vector<std::pair<fasttext::real, std::string>> predictions;
  model_->predictLine(in, predictions, -1, 0.0);
  std::vector<std::pair<std::string, double>> out;
  for (const auto& [p, label] : predictions)
    out.emplace_back(label.compare(0, kPrefix.size(), kPrefix) == 0 ? label.substr(kPrefix.size()) : label, p);
  return out;
}

double FastTextClassifier::probability(const std::string& text, const std::string& label) const {
  for (const auto& [l, p] : predict(text))
    if (l == label) return p;
  return 0.0;
}

std::vector<std::string> FastTextClassifier::labels() const {
  std::vector<std::string> out;
  const auto dict = model_->getDictionary();
  for (int32_t i = 0; i < dict->nlabels(); ++i) {
    std::string l = dict->getLabel(i);
    out.push_back(l.compare(0, kPrefix.size(), kPrefix) == 0 ? l.substr(kPrefix.size()) : l);
  }
  return out;
}

}  // namespace moetrain::data::clean
