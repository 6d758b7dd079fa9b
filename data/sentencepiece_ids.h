// IdEncoder: the ids SentencePieceProcessor::Encode(text, &ids) returns,
// computed without the SentencePieceText message Encode builds on the way.
//
// Encode makes a protocol-buffer message per piece (piece, surface, offsets)
// and a normalized-to-original offset map, then keeps only the ids: about half
// of its time on ordinary text. IdEncoder runs the processor's normalizer
// (with the same user-defined-symbol matcher) and model, and turns the model's
// pieces into ids by Encode's rules: an unknown piece becomes the pieces of
// its UTF-8 bytes under byte fallback; otherwise a run of unknown pieces is
// one <unk>. Tests compare the two on real text and edge cases.
//
// Compiled apart from LibTorch (whose include folder carries a protobuf other
// than SentencePiece's bundled one). encode() is safe from several threads.
#pragma once

#include <array>
#include <cstdint>
#include <memory>
#include <string_view>
#include <vector>

namespace sentencepiece {
class SentencePieceProcessor;
class ModelInterface;
namespace normalizer {
class Normalizer;
}
}  // namespace sentencepiece

namespace moetrain::data {

class IdEncoder {
 public:
  // Shares the processor: its model proto, which the model points into.
  // Throws std::runtime_error when the model cannot be built.
  explicit IdEncoder(std::shared_ptr<const sentencepiece::SentencePieceProcessor> processor);
  ~IdEncoder();
  IdEncoder(const IdEncoder&) = delete;
  IdEncoder& operator=(const IdEncoder&) = delete;

  // Throws std::runtime_error with SentencePiece's reason on failure.
  std::vector<int32_t> encode(std::string_view text) const;

 private:
  std::shared_ptr<const sentencepiece::SentencePieceProcessor> processor_;
  std::unique_ptr<sentencepiece::ModelInterface> model_;
  std::unique_ptr<sentencepiece::normalizer::Normalizer> normalizer_;
  bool byte_fallback_ = false;
  std::array<int32_t, 256> byte_ids_{};  // byte b's piece <0xBB>, under byte fallback
};

}  // namespace moetrain::data
