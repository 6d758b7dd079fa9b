// Tokenizer over SentencePiece 0.2.1 (built with moetrain, see
// cmake/sentencepiece.cmake): training through the kwargs API with a sentence
// iterator (no temporary corpus file), loading from serialized bytes, and
// encoding through SentencePiece's normalizer and model directly
// (data/sentencepiece_ids.h).
#include "data/tokenizer.h"

#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <stdexcept>
#include <type_traits>
#include <unordered_map>

#include "data/atomic_file.h"
#include "data/sentencepiece_ids.h"

namespace moetrain::data {
namespace {

static_assert(std::is_same_v<int, int32_t>, "SentencePiece ids are int; moetrain stores int32");

std::string sentinel_piece(int64_t i) { return "<extra_id_" + std::to_string(i) + ">"; }

std::string one_line(std::string s) {
  for (char& c : s)
    if (c == '\n' || c == '\r') c = ' ';
  while (!s.empty() && s.back() == ' ') s.pop_back();
  return s;
}

// Feeds in-memory sentences to the trainer.
class VectorSentenceIterator : public sentencepiece::SentenceIterator {
 public:
  explicit VectorSentenceIterator(const std::vector<std::string>& sentences) : sentences_(sentences) {}
  bool done() const override { return index_ >= sentences_.size(); }
  void Next() override { ++index_; }
  const std::string& value() const override { return sentences_[index_]; }
  sentencepiece::util::Status status() const override { return {}; }

 private:
  const std::vector<std::string>& sentences_;
  size_t index_ = 0;
};

std::string vocab_path_for(const std::string& model_path) {
  const std::string suffix = ".model";
  if (model_path.size() > suffix.size() &&
      model_path.compare(model_path.size() - suffix.size(), suffix.size(), suffix) == 0)
    return model_path.substr(0, model_path.size() - suffix.size()) + ".vocab";
  return model_path + ".vocab";
}

}  // namespace

Tokenizer Tokenizer::train(const std::vector<std::string>& sentences, const TokenizerTrainOptions& options) {
  if (options.model_type != "unigram" && options.model_type != "bpe")
    throw std::invalid_argument("tokenizer model_type must be unigram or bpe, got '" + options.model_type + "'");
  if (sentences.empty()) throw std::invalid_argument("no sentences to train the tokenizer on");

  std::string sentinels;
  for (int64_t i = 0; i < kNumSentinels; ++i) {
    if (i > 0) sentinels += ',';
    sentinels += sentinel_piece(i);
  }
  std::ostringstream coverage;
  coverage.precision(17);
  coverage << options.character_coverage;

  const std::unordered_map<std::string, std::string> args = {
      {"model_type", options.model_type},
      {"vocab_size", std::to_string(options.vocab_size)},
      {"pad_id", "0"},
      {"eos_id", "1"},
      {"unk_id", "2"},
      {"bos_id", "3"},
      {"pad_piece", "<pad>"},
      {"eos_piece", "</s>"},
      {"unk_piece", "<unk>"},
      {"bos_piece", "<s>"},
      {"user_defined_symbols", sentinels},
      {"byte_fallback", "true"},
      {"character_coverage", coverage.str()},
      {"max_sentence_length", std::to_string(options.max_sentence_length)},
      // Determinism: one thread (the EM sums are then always added in the same
      // order), and no sampling inside SentencePiece: callers choose the
      // sentences themselves (tokenize_corpus samples with its own seed).
      {"num_threads", "1"},
      {"input_sentence_size", "0"},
      {"shuffle_input_sentence", "false"},
      // A small corpus may not support vocab_size pieces; a smaller vocabulary
      // is better than a failed run.
      {"hard_vocab_limit", "false"},
      // Only warnings and errors; training progress is not worth a screenful.
      {"minloglevel", "1"},
  };
  sentencepiece::SetRandomGeneratorSeed(static_cast<unsigned int>(options.seed));
  VectorSentenceIterator iterator(sentences);
  Tokenizer tokenizer;
  auto status = sentencepiece::SentencePieceTrainer::Train(args, &iterator, &tokenizer.bytes_);
  if (!status.ok()) throw std::runtime_error(one_line("tokenizer training failed: " + status.ToString()));
  tokenizer.init_from_bytes("trained tokenizer");
  return tokenizer;
}

Tokenizer Tokenizer::load(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot open tokenizer model " + path + ": " + std::strerror(errno));
  std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  if (in.bad()) throw std::runtime_error("cannot read tokenizer model " + path);
  return from_bytes(bytes, path);
}

Tokenizer Tokenizer::from_bytes(const std::string& bytes, const std::string& what) {
  Tokenizer tokenizer;
  tokenizer.bytes_ = bytes;
  tokenizer.init_from_bytes(what);
  return tokenizer;
}

void Tokenizer::init_from_bytes(const std::string& what) {
  sp_ = std::make_shared<sentencepiece::SentencePieceProcessor>();
  auto status = sp_->LoadFromSerializedProto(bytes_);
  if (!status.ok())
    throw std::runtime_error(
        one_line("tokenizer model " + what + " is not a valid SentencePiece model: " + status.ToString()));
  encoder_ = std::make_shared<const IdEncoder>(sp_);
  special_.pad = sp_->pad_id();
  special_.eos = sp_->eos_id();
  special_.bos = sp_->bos_id();
  special_.unk = sp_->unk_id();
  const char* names[] = {"pad", "eos", "bos", "unk"};
  const int64_t ids[] = {special_.pad, special_.eos, special_.bos, special_.unk};
  for (int i = 0; i < 4; ++i)
    if (ids[i] < 0)
      throw std::runtime_error("tokenizer model " + what + " defines no " + names[i] +
                               " token; moetrain needs pad, eos, bos and unk");
  special_.decoder_start = fairseq_layout() ? special_.eos : special_.bos;
  language_codes_.clear();
  for (int id = 0; id < sp_->GetPieceSize(); ++id) {
    const bool special = id == special_.pad || id == special_.eos || id == special_.bos || id == special_.unk;
    if (sp_->IsControl(id) && !special && sp_->IdToPiece(id) != "<mask>") language_codes_.push_back(sp_->IdToPiece(id));
  }
  // PieceToId answers unk for a piece the model lacks.
  special_.sentinels.clear();
  for (int64_t i = 0; i < kNumSentinels; ++i) {
    int id = sp_->PieceToId(sentinel_piece(i));
    if (id == sp_->unk_id()) break;
    special_.sentinels.push_back(id);
  }
}

void Tokenizer::save(const std::string& path) const {
  write_file_atomically(path, bytes_);
  std::string vocab;
  for (int id = 0; id < sp_->GetPieceSize(); ++id) {
    std::ostringstream line;
    line << sp_->IdToPiece(id) << '\t' << sp_->GetScore(id) << '\n';
    vocab += line.str();
  }
  write_file_atomically(vocab_path_for(path), vocab);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const { return encoder_->encode(text); }

std::string Tokenizer::decode(const std::vector<int32_t>& ids) const {
  const int64_t n = vocab_size();
  for (int32_t id : ids)
    if (id < 0 || id >= n)
      throw std::out_of_range("token id " + std::to_string(id) + " outside the vocabulary [0, " + std::to_string(n) +
                              ")");
  std::string text;
  auto status = sp_->Decode(ids, &text);
  if (!status.ok()) throw std::runtime_error(one_line("tokenizer decode failed: " + status.ToString()));
  return text;
}

std::string Tokenizer::decode(const std::vector<int64_t>& ids) const {
  std::vector<int32_t> narrow;
  narrow.reserve(ids.size());
  for (int64_t id : ids) {
    if (id < 0 || id >= vocab_size())
      throw std::out_of_range("token id " + std::to_string(id) + " outside the vocabulary [0, " +
                              std::to_string(vocab_size()) + ")");
    narrow.push_back(static_cast<int32_t>(id));
  }
  return decode(narrow);
}

int64_t Tokenizer::vocab_size() const { return sp_->GetPieceSize(); }

int64_t Tokenizer::sentinel_id(int64_t i) const {
  if (i < 0 || i >= num_sentinels())
    throw std::out_of_range("sentinel <extra_id_" + std::to_string(i) + "> not in the tokenizer (it has " +
                            std::to_string(num_sentinels()) + ")");
  return special_.sentinels[static_cast<size_t>(i)];
}

bool Tokenizer::fairseq_layout() const {
  return special_.bos == 0 && special_.pad == 1 && special_.eos == 2 && special_.unk == 3;
}

int64_t Tokenizer::language_code_id(const std::string& code) const {
  const int id = sp_->PieceToId(code);
  const bool is_code = id != special_.unk && sp_->IsControl(id) &&
                       std::find(language_codes_.begin(), language_codes_.end(), code) != language_codes_.end();
  if (is_code) return id;
  std::string known;
  for (size_t i = 0; i < language_codes_.size() && i < 5; ++i) known += (i ? ", " : "") + language_codes_[i];
  if (language_codes_.size() > 5) known += ", ...";
  throw std::invalid_argument("language code '" + code + "' is not in the tokenizer" +
                              (language_codes_.empty()
                                   ? std::string(" (it has no language codes)")
                                   : " (its " + std::to_string(language_codes_.size()) + " codes: " + known + ")"));
}

std::string Tokenizer::piece(int64_t id) const {
  if (id < 0 || id >= vocab_size())
    throw std::out_of_range("token id " + std::to_string(id) + " outside the vocabulary");
  return sp_->IdToPiece(static_cast<int>(id));
}

}  // namespace moetrain::data
