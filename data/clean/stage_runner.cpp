// StageRunner: resources and application of the cleaning steps (see stage_runner.h).
#include "data/clean/stage_runner.h"

#include <stdexcept>

#include "data/clean/mail_extract.h"
#include "data/clean/normalize.h"
#include "data/clean/quality.h"
#include "data/clean/text_units.h"

namespace moetrain::data::clean {

StageRunner::StageRunner(const CleanConfig& c, const std::vector<Shard>& shards) : c_(c), shards_(shards) {
  if (c.extract == "mail") steps_.push_back("extract");
  steps_.push_back("normalize");
  for (const auto& s : c.stages) steps_.push_back(s);
  if (has("pii")) pii_ = std::make_unique<PiiScrubber>(c.pii_types);
  if (has("quality") && !c.quality_classifier.model.empty())
    quality_model_ = std::make_unique<FastTextClassifier>(FastTextClassifier::load(c.quality_classifier.model));
  if (has("domain")) {
    if (!c.domain_classifier.model.empty())
      domain_model_ = std::make_unique<FastTextClassifier>(FastTextClassifier::load(c.domain_classifier.model));
    for (const auto& [name, words] : c.domain_keywords) domains_[name] = KeywordMatcher(words);
    for (const auto& [name, path] : c.domain_keyword_files)
      for (const auto& w : read_term_list(path)) domains_[name].add(w);
  }
  if (has("toxicity")) {
    if (c.toxicity_builtin_list) toxic_ = KeywordMatcher(builtin_toxic_terms());
    if (!c.toxicity_word_list.empty())
      for (const auto& w : read_term_list(c.toxicity_word_list)) toxic_.add(w);
    if (!c.toxicity_classifier.model.empty())
      toxicity_model_ = std::make_unique<FastTextClassifier>(FastTextClassifier::load(c.toxicity_classifier.model));
  }
  if (has("dedup")) minhash_ = std::make_unique<MinHasher>(c.minhash);
}

void StageRunner::band_entries(const Doc& doc, std::vector<BandEntry>& out) const {
  if (c_.dedup_exact) out.push_back({exact_hash(doc.text), doc.number, kExactBand});
  if (c_.dedup_near) {
    const auto keys = minhash_->band_keys(doc.text);
    for (size_t b = 0; b < keys.size(); ++b) out.push_back({keys[b], doc.number, static_cast<uint32_t>(b)});
  }
}

std::optional<Removal> StageRunner::apply(const std::string& step, Doc& doc, StageStats* stats) {
  if (step == "extract") {
    doc.text = extract_mail_text(doc.text);
    if (trim(doc.text).empty()) return Removal{"empty_after_extraction"};
    return std::nullopt;
  }
  if (step == "normalize") {
    NormalizeCounts counts;
    doc.text = normalize_text(doc.text, &counts);
    if (stats) {
      if (counts.escapes) stats->replaced["escape_sequences"] += counts.escapes;
      if (counts.controls) stats->replaced["control_chars"] += counts.controls;
    }
    if (doc.text.empty()) return Removal{"empty_after_normalization"};
    return std::nullopt;
  }
  if (step == "dedup") {
    auto it = duplicates_.find(doc.number);
    if (it == duplicates_.end()) return std::nullopt;
    const Shard& kept = shards_[it->second.kept >> 32];
    Removal r{it->second.exact ? "exact_duplicate" : "near_duplicate"};
    r.details["duplicate_of"] = kept.path + ":" + std::to_string(it->second.kept & 0xffffffffULL);
    return r;
  }
  if (step == "quality") return quality(doc);
  if (step == "domain") return domain(doc);
  if (step == "toxicity") return toxicity(doc, stats);
  if (step == "pii") {
    std::map<std::string, long> counts;
    pii_->scrub(doc.text, &counts);
    if (!counts.empty()) {
      doc.meta["pii"] = counts;
      if (stats)
        for (const auto& [type, n] : counts) stats->replaced[type] += n;
    }
    return std::nullopt;
  }
  throw std::logic_error("unknown step " + step);
}

std::optional<Removal> StageRunner::quality(Doc& doc) {
  std::string reason = gopher_repetition(doc.text, c_.repetition);
  if (reason.empty()) reason = gopher_quality(doc.text, c_.gopher);
  if (reason.empty()) reason = c4_quality(doc.text, c_.c4);
  if (reason.empty()) reason = fineweb_quality(doc.text, c_.fineweb);
  if (!reason.empty()) return Removal{reason};
  if (quality_model_) {
    const double p = quality_model_->probability(doc.text, c_.quality_classifier.label);
    doc.meta["quality_score"] = p;
    if (p < c_.quality_classifier.threshold) {
      Removal r{"classifier_below_threshold"};
      r.details["score"] = p;
      return r;
    }
  }
  return std::nullopt;
}

std::optional<Removal> StageRunner::domain(Doc& doc) {
  std::string best = "other";
  double score = 0;
  if (domain_model_) {
    const auto predictions = domain_model_->predict(doc.text);
    if (!predictions.empty() && predictions[0].second >= c_.domain_classifier.threshold) {
      best = predictions[0].first;
      score = predictions[0].second;
    }
  } else {
    const double words = static_cast<double>(std::max<size_t>(1, split_words(doc.text).size()));
    for (const auto& [name, matcher] : domains_) {
      const double s = static_cast<double>(matcher.count(doc.text)) / words;
      if (s > score) {
        score = s;
        best = name;
      }
    }
    if (score < c_.domain_min_keyword_fraction) {
      best = "other";
      score = 0;
    }
  }
  doc.meta["domain"] = best;
  doc.meta["domain_score"] = score;
  const auto& allowed = c_.domain_allowed;
  if (!allowed.empty() && std::find(allowed.begin(), allowed.end(), best) == allowed.end()) {
    Removal r{"domain_not_allowed"};
    r.details["domain"] = best;
    r.details["score"] = score;
    return r;
  }
  return std::nullopt;
}

std::optional<Removal> StageRunner::toxicity(Doc& doc, StageStats* stats) {
  const auto matches = toxic_.find_all(doc.text);
  nlohmann::json info = {{"matches", matches.size()}};
  double p = 0;
  if (toxicity_model_) {
    p = toxicity_model_->probability(doc.text, c_.toxicity_classifier.label);
    info["score"] = p;
  }
  doc.meta["toxicity"] = info;
  const bool model_says = toxicity_model_ && p >= c_.toxicity_classifier.threshold;
  if (c_.toxicity_mode == "document" || model_says) {
    if (model_says) {
      Removal r{"toxic_classifier"};
      r.details["score"] = p;
      return r;
    }
    const double words = static_cast<double>(std::max<size_t>(1, split_words(doc.text).size()));
    if (!matches.empty() && (static_cast<int64_t>(matches.size()) > c_.toxicity_max_matches ||
                             static_cast<double>(matches.size()) / words > c_.toxicity_max_fraction)) {
      Removal r{"toxic_words"};
      r.details["matches"] = matches.size();
      return r;
    }
    return std::nullopt;
  }
  if (matches.empty()) return std::nullopt;
  // Sentence mode: drop every sentence holding a match.
  std::string out;
  size_t m = 0, removed = 0, cursor = 0;
  for (auto sentence : split_sentences(doc.text)) {
    const size_t begin = static_cast<size_t>(sentence.data() - doc.text.data());
    const size_t end = begin + sentence.size();
    while (m < matches.size() && matches[m].end <= begin) ++m;
    const bool toxic = m < matches.size() && matches[m].begin < end;
    // Keep the separator (space or line break) before a kept sentence.
    if (toxic) {
      ++removed;
    } else {
      if (!out.empty()) out += doc.text.find('\n', cursor) < begin ? "\n" : " ";
      out.append(sentence);
    }
    cursor = end;
  }
  if (stats) stats->replaced["sentences_removed"] += static_cast<int64_t>(removed);
  doc.text = out;
  if (trim(doc.text).empty()) return Removal{"toxic_all_sentences"};
  return std::nullopt;
}

}  // namespace moetrain::data::clean
