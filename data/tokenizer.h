// Tokenizer: a SentencePiece model with moetrain's fixed special tokens.
//
// Every model trained here has
//   pad = 0 "<pad>", eos = 1 "</s>", unk = 2 "<unk>", bos = 3 "<s>" (the
//   decoder start token), and 100 sentinels "<extra_id_0>".."<extra_id_99>"
//   (user-defined symbols, ids 4..103) for span corruption,
// byte fallback on (text in any script encodes without <unk>), and is trained
// deterministically: the same sentences and options give the same model bytes.
// A loaded model is only required to define pad, eos, bos and unk; it may have
// fewer sentinels (num_sentinels() says how many, counted from <extra_id_0>).
//
// One other layout is recognised by its ids: fairseq's, as NLLB and M2M100
// number their tokens (bos 0 "<s>", pad 1, eos 2, unk 3; built from NLLB's
// SentencePiece model by data/nllb_vocabulary.h). Such a model has language
// codes (eng_Latn, ...): control pieces other than the four specials and
// <mask>. Its decoder starts with eos, not bos, then the target language
// code, and a source is its language code, the text's pieces and eos, as
// transformers' NllbTokenizer writes them.
//
// encode() returns the raw pieces of the text: no BOS/EOS is added, that is the
// objectives' job. Text is normalised by SentencePiece's default nmt_nfkc rule
// (NFKC, whitespace runs collapsed, newlines become spaces), so decode(encode(t))
// is the normalised t. Its ids are exactly SentencePieceProcessor::Encode's,
// computed without the per-piece protocol buffer Encode builds (see IdEncoder
// in tokenizer.cpp).
//
// A Tokenizer is cheap to copy (the model is shared) and encode/decode are
// safe to call from several threads.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
}

namespace moetrain::data {

class IdEncoder;

// The ids the objectives and the model need, without the SentencePiece model.
struct SpecialTokens {
  int64_t pad = 0;
  int64_t eos = 1;
  int64_t bos = 3;
  int64_t unk = 2;
  // The first token the decoder reads: bos, or eos in fairseq's layout.
  int64_t decoder_start = 3;
  std::vector<int64_t> sentinels;  // sentinels[i] is <extra_id_i>
};

struct TokenizerTrainOptions {
  int64_t vocab_size = 8000;            // including specials, sentinels and the 256 bytes
  std::string model_type = "unigram";   // or "bpe"
  double character_coverage = 0.9995;   // characters outside it fall back to bytes
  int64_t max_sentence_length = 16384;  // bytes; longer training sentences are skipped
  uint64_t seed = 1234;
};

class Tokenizer {
 public:
  static constexpr int64_t kNumSentinels = 100;

  // Trains a model on `sentences` (in memory; each one a line of text).
  // Throws std::runtime_error with SentencePiece's reason on failure (e.g. a
  // vocab_size too small for the specials and bytes).
  static Tokenizer train(const std::vector<std::string>& sentences, const TokenizerTrainOptions& options);
  // Loads a .model file; a missing or corrupt file throws naming the path.
  static Tokenizer load(const std::string& path);
  // Loads from the bytes of a .model file; `what` names them in errors.
  static Tokenizer from_bytes(const std::string& bytes, const std::string& what);

  // Writes the model to `path` and a "piece<TAB>score" listing next to it
  // (`path` with .model replaced by .vocab), each through a temporary file
  // renamed into place.
  void save(const std::string& path) const;
  // The serialized model: what save() writes, byte for byte.
  const std::string& model_bytes() const { return bytes_; }

  std::vector<int32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids) const;
  std::string decode(const std::vector<int64_t>& ids) const;

  int64_t vocab_size() const;
  int64_t pad_id() const { return special_.pad; }
  int64_t eos_id() const { return special_.eos; }
  int64_t bos_id() const { return special_.bos; }
  int64_t unk_id() const { return special_.unk; }
  int64_t sentinel_id(int64_t i) const;  // <extra_id_i>; throws when absent
  int64_t num_sentinels() const { return static_cast<int64_t>(special_.sentinels.size()); }
  const SpecialTokens& special_tokens() const { return special_; }
  std::string piece(int64_t id) const;

  // Fairseq's layout (see above): bos 0, pad 1, eos 2, unk 3.
  bool fairseq_layout() const;
  // The language codes, in id order (none in moetrain's layout).
  const std::vector<std::string>& language_codes() const { return language_codes_; }
  // The id of language code `code`; throws std::invalid_argument naming it
  // (and a few of the codes there are) when the tokenizer has no such code.
  int64_t language_code_id(const std::string& code) const;

 private:
  Tokenizer() = default;
  void init_from_bytes(const std::string& what);

  std::shared_ptr<sentencepiece::SentencePieceProcessor> sp_;  // training, decode, pieces
  std::shared_ptr<const IdEncoder> encoder_;                   // encode
  std::string bytes_;
  SpecialTokens special_;
  std::vector<std::string> language_codes_;
};

}  // namespace moetrain::data
