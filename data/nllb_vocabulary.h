// The vocabulary layout of fairseq's NLLB-200 and NLLB-MoE tokenizer, built as
// a SentencePiece model of its own so that moetrain's Tokenizer reads it like
// any other (data/tokenizer.h).
//
// NLLB ships a plain SentencePiece model (`sentencepiece.bpe.model`: <unk> 0,
// <s> 1, </s> 2, then the pieces) and numbers tokens the fairseq way, as
// transformers' NllbTokenizer does:
//   0 <s>, 1 <pad>, 2 </s>, 3 <unk>,
//   4 ..      the SentencePiece pieces from id 3 on, each one id higher,
//   then      the added tokens: the language codes (eng_Latn, fra_Latn, ...)
//             and <mask>, in the order the tokenizer's tokenizer.json gives
//             them ids (the published models put <mask> last; transformers
//             building a tokenizer from the SentencePiece model alone puts it
//             first).
// nllb_layout_model() writes exactly that table as a SentencePiece model: the
// same normalizer, pieces, scores and types, so the same segmentation, with
// the four specials and the added tokens as control pieces (never produced
// from text, decoded to nothing). Its trainer spec names bos 0, pad 1, eos 2
// and unk 3, which is how Tokenizer recognises the layout, and <unk> decodes
// to nothing too (SentencePiece's unk_surface), so decoding gives the text
// NllbTokenizer's decode(..., skip_special_tokens=True) gives.
#pragma once

#include <string>
#include <vector>

namespace moetrain::data {

// The serialized SentencePiece model of the layout above, from the bytes of
// NLLB's SentencePiece model and the added tokens in id order (the first has
// id pieces + 1). `what` names the source in errors. Throws
// std::runtime_error when the bytes are not a SentencePiece model, when its
// first three pieces are not <unk>, <s>, </s> (with those roles), when it has
// another special piece, a <pad> or a <mask>, or when an added token is
// empty, repeated or already a piece.
std::string nllb_layout_model(const std::string& sentencepiece_bytes, const std::vector<std::string>& added_tokens,
                              const std::string& what);

}  // namespace moetrain::data
