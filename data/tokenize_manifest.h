// dataset.json, the manifest of a finished tokenize run (written last, by
// rank 0; BatchSource trusts it).
//
//   format_version, kind, vocab_size, tokenizer, trained_tokenizer,
//   special_tokens, inputs, valid_inputs, seed, valid_fraction,
//   docs_per_shard, input_records, skipped_empty, fields,
//   tokenizer_training (trained) or tokenizer_source (loaded),
//   splits: {train, valid (when it has shards)}: documents (or pairs),
//           tokens, [source_tokens, target_tokens,] shards (file names, in
//           order), shard_info (per shard: name, records, tokens,
//           skipped_empty, bytes, fnv1a64),
//   checksum: "fnv1a64" (what shard_info's checksums are),
//   run: ranks, threads, shards_written, shards_skipped, encoded_mb,
//        encode_seconds, encode_mb_per_s, seconds.
// Everything but `run` is the same for the same inputs and options, however
// many threads or ranks ran, and whether or not the run was interrupted.
#pragma once

#include <nlohmann/json.hpp>

#include "data/tokenize.h"
#include "data/tokenizer.h"

namespace moetrain::data {

nlohmann::json make_manifest(const TokenizeOptions& options, const TokenizeSummary& summary,
                             const SpecialTokens& special);

}  // namespace moetrain::data
