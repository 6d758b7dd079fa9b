// The tokenizer of a Hugging Face model folder, as moetrain's Tokenizer
// (data/tokenizer.h) reads it. Two kinds of folder:
//   - tokenizer.model: a SentencePiece model with moetrain's special ids (what
//     `moetrain export` writes), taken as it is;
//   - sentencepiece.bpe.model with tokenizer.json (NLLB's NllbTokenizer, as
//     published and as transformers' save_pretrained writes it): rebuilt in
//     fairseq's id layout with the language codes and <mask> at the ids
//     tokenizer.json gives them (data/nllb_vocabulary.h), so moetrain encodes
//     and decodes to the ids transformers does. tokenizer_config.json, when
//     present, must name NllbTokenizer and the default (non-legacy) language
//     code placement: the code before a sequence's tokens.
#pragma once

#include <cstdint>
#include <string>

#include "data/tokenizer.h"

namespace moetrain::importing {

struct HfTokenizer {
  std::string model_bytes;  // the SentencePiece model moetrain's Tokenizer loads
  std::string source;       // the file it came from, for messages
  data::SpecialTokens special;
  int64_t vocab_size = 0;
  int64_t language_codes = 0;
};

// Reads the tokenizer of `folder`, whose model has `model_vocab_size`
// embedding rows (the tokenizer may have fewer ids, never more). Throws
// ImportError (hf_config.h) naming the file and what is wrong.
HfTokenizer read_hf_tokenizer(const std::string& folder, int64_t model_vocab_size);

}  // namespace moetrain::importing
