// dataset.json (tokenize_manifest.h).
#include "data/tokenize_manifest.h"

#include "data/token_shard.h"
#include "data/tokenize_state.h"

namespace moetrain::data {
namespace {

nlohmann::json split_json(const TokenizeSplitSummary& s, bool pairs) {
  nlohmann::json j = {{pairs ? "pairs" : "documents", s.records}, {"tokens", s.tokens}, {"shards", s.shards}};
  if (pairs) {
    j["source_tokens"] = s.source_tokens;
    j["target_tokens"] = s.target_tokens;
  }
  nlohmann::json info = nlohmann::json::array();
  for (const auto& shard : s.shard_info) {
    nlohmann::json one = {{"name", shard.name},     {pairs ? "pairs" : "documents", shard.records},
                          {"tokens", shard.tokens}, {"skipped_empty", shard.skipped_empty},
                          {"bytes", shard.bytes},   {"fnv1a64", checksum_hex(shard.checksum)}};
    if (pairs) {
      one["source_tokens"] = shard.source_tokens;
      one["target_tokens"] = shard.target_tokens;
    }
    info.push_back(std::move(one));
  }
  j["shard_info"] = std::move(info);
  return j;
}

nlohmann::json run_json(const TokenizeSummary& s) {
  const double mb = static_cast<double>(s.encoded_bytes) / 1e6;
  return {{"ranks", s.ranks},
          {"threads", s.threads},
          {"shards_written", s.shards_written},
          {"shards_skipped", s.shards_skipped},
          {"reused_tokenizer", s.reused_tokenizer},
          {"encoded_mb", mb},
          {"encode_seconds", s.encode_seconds},
          {"encode_mb_per_s", s.encode_seconds > 0 ? mb / s.encode_seconds : 0.0},
          {"seconds", s.seconds}};
}

}  // namespace

nlohmann::json make_manifest(const TokenizeOptions& options, const TokenizeSummary& summary,
                             const SpecialTokens& special) {
  const bool pairs = summary.kind == "pairs";
  nlohmann::json manifest = {
      {"format_version", kTokenShardFormatVersion},
      {"kind", summary.kind},
      {"vocab_size", summary.vocab_size},
      {"tokenizer", "tokenizer.model"},
      {"trained_tokenizer", summary.trained_tokenizer},
      {"special_tokens",
       {{"pad", special.pad},
        {"eos", special.eos},
        {"bos", special.bos},
        {"unk", special.unk},
        {"num_sentinels", special.sentinels.size()}}},
      {"inputs", options.inputs},
      {"valid_inputs", options.valid_inputs},
      {"seed", options.seed},
      {"valid_fraction", options.valid_fraction},
      {"docs_per_shard", options.docs_per_shard},
      {"deflate_level", options.deflate_level},
      {"input_records", summary.input_records},
      {"skipped_empty", summary.skipped_empty},
      {"skipped_bad", summary.skipped_bad.count},
      {"checksum", "fnv1a64"},
  };
  if (pairs) {
    manifest["fields"] = {{"source", options.source_field}, {"target", options.target_field}};
    // Each side: its code, or {"field": name} when every record names its own.
    auto language = [](const std::string& code, const std::string& field) {
      return field.empty() ? nlohmann::json(code) : nlohmann::json{{"field", field}};
    };
    if (options.languages()) {
      manifest["languages"] = {{"source", language(options.source_lang, options.source_lang_field)},
                               {"target", language(options.target_lang, options.target_lang_field)}};
    }
  } else
    manifest["fields"] = {{"text", options.text_field}};
  if (summary.trained_tokenizer) {
    manifest["tokenizer_training"] = {{"model_type", options.model_type},
                                      {"requested_vocab_size", options.vocab_size},
                                      {"sentences", summary.training_sentences}};
  } else {
    manifest["tokenizer_source"] = options.tokenizer_model;
  }
  manifest["splits"]["train"] = split_json(summary.train, pairs);
  if (!summary.valid.shards.empty()) manifest["splits"]["valid"] = split_json(summary.valid, pairs);
  manifest["run"] = run_json(summary);
  return manifest;
}

}  // namespace moetrain::data
