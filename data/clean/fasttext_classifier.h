// fastText supervised text classifiers (the model CCNet, Dolma, DCLM and
// datatrove use for language, quality and toxicity scores), on top of
// Debian's libfasttext. Texts are prepared the same way for training and
// prediction (prepare_fasttext_text): lower-cased, punctuation split from
// words, one line.
//
// Training is single-threaded by default so that a seed gives the same model
// every time (fastText's multi-threaded training is not deterministic).
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace fasttext {
class FastText;
}

namespace moetrain::data::clean {

std::string prepare_fasttext_text(const std::string& text);

struct FastTextTrainOptions {
  int epoch = 25;  // fastText's defaults (5, 0.1) underfit corpora of a few thousand texts
  double lr = 0.5;
  int dim = 100;
  int word_ngrams = 2;
  int min_count = 1;
  int bucket = 200000;  // word n-gram hash buckets (fastText's 2M costs 800 MB at dim 100)
  int threads = 1;
  int seed = 0;
};

struct LabelledText {
  std::string label;  // without the "__label__" prefix
  std::string text;
};

class FastTextClassifier {
 public:
  // Loads a model saved by train() or by the fastText tool; throws
  // std::runtime_error naming the file when it cannot.
  static FastTextClassifier load(const std::string& path);
  // Trains on `examples` (a temporary file beside `work_path` holds them
  // during training).
  static FastTextClassifier train(const std::vector<LabelledText>& examples, const FastTextTrainOptions& options,
                                  const std::string& work_path);

  FastTextClassifier(FastTextClassifier&&) noexcept;
  FastTextClassifier& operator=(FastTextClassifier&&) noexcept;
  ~FastTextClassifier();

  void save(const std::string& path) const;

  // Probability of every label (without "__label__"), most likely first.
  std::vector<std::pair<std::string, double>> predict(const std::string& text) const;
  // Probability of one label (0 when it is not among the model's labels).
  double probability(const std::string& text, const std::string& label) const;
  std::vector<std::string> labels() const;

 private:
  FastTextClassifier();
  std::unique_ptr<fasttext::FastText> model_;
};

}  // namespace moetrain::data::clean
