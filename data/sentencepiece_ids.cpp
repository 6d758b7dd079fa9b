#include "data/sentencepiece_ids.h"

#include <model_factory.h>
#include <model_interface.h>
#include <normalizer.h>
#include <sentencepiece_model.pb.h>
#include <sentencepiece_processor.h>

#include <stdexcept>
#include <string>

namespace moetrain::data {
namespace {

std::runtime_error encode_error(const std::string& why) {
  std::string line = "tokenizer encode failed: " + why;
  for (char& c : line)
    if (c == '\n' || c == '\r') c = ' ';
  return std::runtime_error(line);
}

}  // namespace

IdEncoder::IdEncoder(std::shared_ptr<const sentencepiece::SentencePieceProcessor> processor)
    : processor_(std::move(processor)) {
  const auto& proto = processor_->model_proto();
  model_ = sentencepiece::ModelFactory::Create(proto);
  if (!model_->status().ok()) throw std::runtime_error("tokenizer model: " + model_->status().ToString());
  normalizer_ = std::make_unique<sentencepiece::normalizer::Normalizer>(proto.normalizer_spec(), proto.trainer_spec());
  if (!normalizer_->status().ok())
    throw std::runtime_error("tokenizer normalizer: " + normalizer_->status().ToString());
  normalizer_->SetPrefixMatcher(model_->prefix_matcher());
  byte_fallback_ = model_->ByteFallbackEnabled();
  if (byte_fallback_)
    for (int b = 0; b < 256; ++b)
      byte_ids_[static_cast<size_t>(b)] = model_->PieceToId(sentencepiece::ByteToPiece(static_cast<unsigned char>(b)));
}

IdEncoder::~IdEncoder() = default;

std::vector<int32_t> IdEncoder::encode(std::string_view text) const {
  std::string normalized;
  std::vector<size_t> norm_to_orig;  // Normalize requires it; unused here
  auto status = normalizer_->Normalize(absl::string_view(text.data(), text.size()), &normalized, &norm_to_orig);
  if (!status.ok()) throw encode_error(status.ToString());
  const auto pieces = model_->Encode(normalized);
  std::vector<int32_t> ids;
  ids.reserve(pieces.size());
  bool previous_unknown = false;
  for (const auto& [piece, id] : pieces) {
    if (piece.empty()) throw encode_error("the model produced an empty piece");
    const bool unknown = model_->IsUnknown(id);
    if (model_->IsControl(id)) {
      ids.push_back(id);
    } else if (unknown && byte_fallback_) {
      for (char c : piece) ids.push_back(byte_ids_[static_cast<unsigned char>(c)]);
    } else if (!(unknown && previous_unknown)) {
      ids.push_back(id);  // a run of unknown pieces is one <unk>
    }
    previous_unknown = unknown;
  }
  return ids;
}

}  // namespace moetrain::data
