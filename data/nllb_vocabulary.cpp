// Built apart from LibTorch, like sentencepiece_ids.cpp: SentencePiece's model
// proto brings its bundled protobuf.
#include "data/nllb_vocabulary.h"

#include <sentencepiece_model.pb.h>

#include <stdexcept>
#include <unordered_set>

namespace moetrain::data {
namespace {

using Piece = sentencepiece::ModelProto::SentencePiece;

void add_piece(sentencepiece::ModelProto& proto, const std::string& text, Piece::Type type, float score = 0.0f) {
  Piece* piece = proto.add_pieces();
  piece->set_piece(text);
  piece->set_type(type);
  piece->set_score(score);
}

}  // namespace

std::string nllb_layout_model(const std::string& sentencepiece_bytes, const std::vector<std::string>& added_tokens,
                              const std::string& what) {
  sentencepiece::ModelProto source;
  if (!source.ParseFromString(sentencepiece_bytes) || source.pieces_size() < 4) {
    throw std::runtime_error(what + ": not a SentencePiece model");
  }
  // NLLB's model: <unk> 0, <s> 1, </s> 2, no <pad>.
  const struct {
    const char* text;
    Piece::Type type;
  } expected[] = {{"<unk>", Piece::UNKNOWN}, {"<s>", Piece::CONTROL}, {"</s>", Piece::CONTROL}};
  for (int id = 0; id < 3; ++id) {
    const Piece& piece = source.pieces(id);
    if (piece.piece() != expected[id].text || piece.type() != expected[id].type) {
      throw std::runtime_error(what + ": piece " + std::to_string(id) + " is '" + piece.piece() + "', not " +
                               expected[id].text + " (NLLB's SentencePiece model has <unk> 0, <s> 1, </s> 2)");
    }
  }
  std::unordered_set<std::string> taken;
  for (int id = 3; id < source.pieces_size(); ++id) {
    const Piece& piece = source.pieces(id);
    if (piece.type() == Piece::UNKNOWN || piece.type() == Piece::CONTROL) {
      throw std::runtime_error(what + ": piece " + std::to_string(id) + " '" + piece.piece() +
                               "' is a second special piece (NLLB's model has only <unk>, <s> and </s>)");
    }
    taken.insert(piece.piece());
  }
  for (const char* special : {"<pad>", "<mask>"}) {
    if (taken.count(special)) throw std::runtime_error(what + ": has a piece " + special + " of its own");
  }

  sentencepiece::ModelProto layout;
  *layout.mutable_normalizer_spec() = source.normalizer_spec();
  if (source.has_denormalizer_spec()) *layout.mutable_denormalizer_spec() = source.denormalizer_spec();
  *layout.mutable_trainer_spec() = source.trainer_spec();
  add_piece(layout, "<s>", Piece::CONTROL);
  add_piece(layout, "<pad>", Piece::CONTROL);
  add_piece(layout, "</s>", Piece::CONTROL);
  add_piece(layout, "<unk>", Piece::UNKNOWN);
  for (int id = 3; id < source.pieces_size(); ++id) *layout.add_pieces() = source.pieces(id);
  taken.insert({"<s>", "<pad>", "</s>", "<unk>"});
  for (const std::string& token : added_tokens) {
    if (token.empty()) throw std::runtime_error(what + ": an empty added token");
    if (!taken.insert(token).second) {
      throw std::runtime_error(what + ": added token '" + token + "' is repeated or already a piece");
    }
    add_piece(layout, token, Piece::CONTROL);
  }

  auto* spec = layout.mutable_trainer_spec();
  spec->set_bos_id(0);
  spec->set_pad_id(1);
  spec->set_eos_id(2);
  spec->set_unk_id(3);
  spec->set_bos_piece("<s>");
  spec->set_pad_piece("<pad>");
  spec->set_eos_piece("</s>");
  spec->set_unk_piece("<unk>");
  spec->set_vocab_size(layout.pieces_size());
  spec->set_unk_surface("");  // <unk> decodes to nothing, as NllbTokenizer's skip_special_tokens has it
  return layout.SerializeAsString();
}

}  // namespace moetrain::data
