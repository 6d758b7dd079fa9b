// EDA operations and entity replacement (see augment.h).
#include "data/clean/augment.h"

#include <algorithm>
#include <cctype>
#include <fstream>
#include <stdexcept>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "data/atomic_file.h"
#include "data/clean/record_io.h"
#include "data/clean/text_units.h"
#include "data/portable_rng.h"

namespace moetrain::data::clean {
namespace {

// A small built-in synonym table of common English words (extended by
// AugmentOptions::synonym_file).
const char* const kSynonyms[] = {"big large huge great",
                                 "small little tiny minor",
                                 "good fine excellent decent",
                                 "bad poor awful terrible",
                                 "fast quick rapid swift",
                                 "slow sluggish unhurried",
                                 "happy glad cheerful pleased",
                                 "sad unhappy gloomy",
                                 "begin start commence",
                                 "end finish conclude",
                                 "help assist aid support",
                                 "show display exhibit reveal",
                                 "make create build produce",
                                 "get obtain acquire receive",
                                 "use employ utilize apply",
                                 "say state declare",
                                 "tell inform notify",
                                 "think believe consider",
                                 "look glance gaze",
                                 "important significant crucial vital",
                                 "easy simple effortless",
                                 "hard difficult tough",
                                 "old aged ancient elderly",
                                 "new fresh novel recent",
                                 "many numerous several various",
                                 "often frequently regularly",
                                 "quickly rapidly swiftly",
                                 "buy purchase acquire",
                                 "answer reply response",
                                 "problem issue difficulty trouble",
                                 "idea notion concept thought",
                                 "job work task duty",
                                 "money cash funds",
                                 "house home dwelling residence",
                                 "road street way route",
                                 "child kid youngster",
                                 "man gentleman fellow",
                                 "woman lady",
                                 "car automobile vehicle",
                                 "city town municipality",
                                 "country nation state",
                                 "said stated remarked noted",
                                 "went travelled moved proceeded",
                                 "came arrived",
                                 "saw noticed observed spotted",
                                 "asked inquired queried",
                                 "large big sizable",
                                 "little small slight",
                                 "very really extremely",
                                 "also too additionally",
                                 "clear obvious evident plain",
                                 "strange odd unusual peculiar",
                                 "rich wealthy affluent",
                                 "smart clever intelligent bright",
                                 "angry mad furious irate",
                                 "quiet silent calm",
                                 "begin commence initiate",
                                 "try attempt endeavour",
                                 "need require",
                                 "want desire wish"};

const std::vector<std::string>& stop_words() {
  static const std::vector<std::string> words = {"a",    "an",   "the", "and",  "or", "but", "of",  "to",   "in", "on",
                                                 "at",   "by",   "for", "with", "is", "are", "was", "were", "be", "it",
                                                 "this", "that", "i",   "you",  "he", "she", "we",  "they"};
  return words;
}

struct Token {
  std::string lead, core, trail;  // punctuation before, word, punctuation after
};

std::vector<Token> tokenize(const std::string& text) {
  std::vector<Token> tokens;
  size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && (text[i] == ' ' || text[i] == '\n' || text[i] == '\t')) ++i;
    if (i >= text.size()) break;
    size_t e = i;
    while (e < text.size() && text[e] != ' ' && text[e] != '\n' && text[e] != '\t') ++e;
    std::string w = text.substr(i, e - i);
    i = e;
    Token t;
    size_t b = 0, f = w.size();
    while (b < f && std::ispunct(static_cast<unsigned char>(w[b]))) ++b;
    while (f > b && std::ispunct(static_cast<unsigned char>(w[f - 1]))) --f;
    t.lead = w.substr(0, b);
    t.core = w.substr(b, f - b);
    t.trail = w.substr(f);
    tokens.push_back(std::move(t));
  }
  return tokens;
}

std::string join(const std::vector<Token>& tokens) {
  std::string out;
  for (const auto& t : tokens) {
    if (t.lead.empty() && t.core.empty() && t.trail.empty()) continue;
    if (!out.empty()) out.push_back(' ');
    out += t.lead + t.core + t.trail;
  }
  return out;
}

// Keeps the capitalisation of the word being replaced.
std::string match_case(const std::string& like, std::string word) {
  if (!like.empty() && std::isupper(static_cast<unsigned char>(like[0])) && !word.empty())
    word[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(word[0])));
  return word;
}

std::vector<std::string> read_lines(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw std::runtime_error(path + ": cannot read");
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    auto t = trim(line);
    if (!t.empty() && t[0] != '#') lines.emplace_back(t);
  }
  return lines;
}

}  // namespace

Augmenter::Augmenter(const AugmentOptions& o) : o_(o) {
  auto add_group = [&](const std::string& line) {
    std::vector<std::string> words;
    size_t i = 0;
    while (i < line.size()) {
      while (i < line.size() && line[i] == ' ') ++i;
      size_t e = line.find(' ', i);
      if (e == std::string::npos) e = line.size();
      if (e > i) words.push_back(lowercase(line.substr(i, e - i)));
      i = e;
    }
    if (words.size() < 2) return;
    auto& syn = synonyms_[words[0]];
    for (size_t k = 1; k < words.size(); ++k)
      if (std::find(syn.begin(), syn.end(), words[k]) == syn.end()) syn.push_back(words[k]);
  };
  for (const char* g : kSynonyms) add_group(g);
  if (!o.synonym_file.empty())
    for (const auto& line : read_lines(o.synonym_file)) add_group(line);
  for (const auto& file : o.name_files) {
    name_lists_.push_back(read_lines(file));
    for (const auto& n : name_lists_.back()) name_list_of_.emplace(n, name_lists_.size() - 1);
  }
  for (const auto& op : o.ops)
    if (op != "synonym" && op != "insert" && op != "delete" && op != "swap" && op != "entity")
      throw std::invalid_argument("augment: unknown operation '" + op + "' (synonym, insert, delete, swap, entity)");
  if (o.ops.empty()) throw std::invalid_argument("augment: no operations given");
  if (std::find(o.ops.begin(), o.ops.end(), "entity") != o.ops.end() && name_lists_.empty())
    throw std::invalid_argument("augment: the entity operation needs --names FILE");
}

std::string Augmenter::op_for(const std::string& id, int copy) const {
  const uint64_t offset = combine_seeds({o_.seed, XXH3_64bits(id.data(), id.size())}) % o_.ops.size();
  return o_.ops[(offset + static_cast<uint64_t>(copy)) % o_.ops.size()];
}

std::string Augmenter::apply(const std::string& text, const std::string& op, const std::string& id, int copy) const {
  PortableRng rng(combine_seeds(
      {o_.seed, XXH3_64bits(id.data(), id.size()), static_cast<uint64_t>(copy), XXH3_64bits(op.data(), op.size())}));
  auto tokens = tokenize(text);
  if (tokens.empty()) return text;
  const size_t n_change = std::max<size_t>(1, static_cast<size_t>(o_.alpha * static_cast<double>(tokens.size())));
  auto synonyms_of = [&](const std::string& core) -> const std::vector<std::string>* {
    auto it = synonyms_.find(lowercase(core));
    return it == synonyms_.end() ? nullptr : &it->second;
  };
  if (op == "synonym") {
    std::vector<size_t> candidates;
    for (size_t i = 0; i < tokens.size(); ++i) {
      const auto lower = lowercase(tokens[i].core);
      if (synonyms_of(tokens[i].core) &&
          std::find(stop_words().begin(), stop_words().end(), lower) == stop_words().end())
        candidates.push_back(i);
    }
    for (size_t k = 0; k < n_change && !candidates.empty(); ++k) {
      const size_t pick = rng.uniform(candidates.size());
      Token& t = tokens[candidates[pick]];
      const auto& syn = *synonyms_of(t.core);
      t.core = match_case(t.core, syn[rng.uniform(syn.size())]);
      candidates.erase(candidates.begin() + static_cast<long>(pick));
    }
  } else if (op == "insert") {
    std::vector<std::string> pool;
    for (const auto& t : tokens)
      if (auto s = synonyms_of(t.core)) pool.insert(pool.end(), s->begin(), s->end());
    for (size_t k = 0; k < n_change && !pool.empty(); ++k) {
      Token t;
      t.core = pool[rng.uniform(pool.size())];
      tokens.insert(tokens.begin() + static_cast<long>(rng.uniform(tokens.size() + 1)), t);
    }
  } else if (op == "swap") {
    for (size_t k = 0; k < n_change && tokens.size() > 1; ++k) {
      const size_t a = rng.uniform(tokens.size()), b = rng.uniform(tokens.size());
      std::swap(tokens[a].core, tokens[b].core);
    }
  } else if (op == "delete") {
    if (tokens.size() == 1) return text;
    std::vector<Token> kept;
    for (auto& t : tokens)
      if (rng.uniform_double() >= o_.delete_probability) kept.push_back(t);
    if (kept.empty()) kept.push_back(tokens[rng.uniform(tokens.size())]);
    tokens = std::move(kept);
  } else if (op == "entity") {
    std::unordered_map<std::string, std::string> replacement;
    for (auto& t : tokens) {
      auto it = name_list_of_.find(t.core);
      if (it == name_list_of_.end()) continue;
      auto r = replacement.find(t.core);
      if (r == replacement.end()) {
        const auto& list = name_lists_[it->second];
        std::string other;
        do {
          other = list[rng.uniform(list.size())];
        } while (other == t.core && list.size() > 1);
        r = replacement.emplace(t.core, other).first;
      }
      t.core = r->second;
    }
  } else {
    throw std::invalid_argument("augment: unknown operation '" + op + "'");
  }
  return join(tokens);
}

AugmentSummary augment_files(const std::vector<std::string>& inputs, const std::string& output,
                             const AugmentOptions& o) {
  Augmenter augmenter(o);
  AugmentSummary summary;
  const std::string tmp = temporary_path_for(output);
  {
    LineWriter out(tmp);
    for (const auto& path : inputs) {
      RecordReader reader(path, o.text_field, o.id_field);
      InputRecord rec;
      std::string reason;
      ReadStatus status;
      while ((status = reader.next(rec, reason)) != ReadStatus::End) {
        ++summary.records;
        if (status == ReadStatus::Bad) {
          ++summary.bad;
          continue;
        }
        if (o.keep_original) {
          out.write(compose_output_line(rec, o.text_field, o.id_field, rec.text, nlohmann::json::object()));
          ++summary.written;
        }
        for (int k = 1; k <= o.copies; ++k) {
          const std::string op = augmenter.op_for(rec.id, k);
          InputRecord copy = rec;
          copy.id = rec.id + "#aug" + std::to_string(k);
          copy.has_id = false;  // the id field is written anew below
          nlohmann::json meta = {{"augment", {{"op", op}, {"copy", k}, {"seed", o.seed}, {"source_id", rec.id}}}};
          std::string line =
              compose_output_line(copy, o.text_field, "", augmenter.apply(rec.text, op, rec.id, k), meta);
          // Replace the original id value with the copy's.
          nlohmann::ordered_json j = nlohmann::ordered_json::parse(line);
          j[o.id_field.empty() ? "id" : o.id_field] = copy.id;
          out.write(j.dump());
          ++summary.written;
          ++summary.by_op[op];
        }
      }
    }
    out.close();
  }
  commit_temporary(tmp, output);
  return summary;
}

}  // namespace moetrain::data::clean
