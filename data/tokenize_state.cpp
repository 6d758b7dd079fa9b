// Resume state and shard checksums of tokenize_corpus (tokenize_state.h).
#include "data/tokenize_state.h"

#include <sys/stat.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <stdexcept>

#include "data/atomic_file.h"
#include "data/token_shard.h"

namespace moetrain::data {
namespace {

namespace fs = std::filesystem;

constexpr uint64_t kFnvOffset = 0xcbf29ce484222325ULL;
constexpr uint64_t kFnvPrime = 0x100000001b3ULL;
constexpr int kStateVersion = 1;

uint64_t fnv1a64_update(uint64_t h, const char* data, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    h ^= static_cast<unsigned char>(data[i]);
    h *= kFnvPrime;
  }
  return h;
}

// Path, size and modification time: a rerun on a changed input starts over.
nlohmann::json file_identity(const std::string& path) {
  struct stat st {};
  if (::stat(path.c_str(), &st) != 0) throw std::runtime_error(path + ": " + std::strerror(errno));
  const int64_t mtime_ns = static_cast<int64_t>(st.st_mtim.tv_sec) * 1000000000 + st.st_mtim.tv_nsec;
  return {{"path", path}, {"size", static_cast<int64_t>(st.st_size)}, {"mtime_ns", mtime_ns}};
}

std::optional<nlohmann::json> read_json_file(const std::string& path) {
  std::ifstream in(path);
  if (!in) return std::nullopt;
  std::stringstream text;
  text << in.rdbuf();
  try {
    return nlohmann::json::parse(text.str());
  } catch (const nlohmann::json::exception&) {
    return std::nullopt;  // a damaged file counts as absent
  }
}

bool is_temporary_name(const std::string& name) { return name.find(".tmp-") != std::string::npos; }

}  // namespace

uint64_t fnv1a64(const std::string& bytes) { return fnv1a64_update(kFnvOffset, bytes.data(), bytes.size()); }

uint64_t fnv1a64_file(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "rb");
  if (f == nullptr) throw std::runtime_error("cannot read " + path + ": " + std::strerror(errno));
  std::string buffer(1 << 20, '\0');
  uint64_t h = kFnvOffset;
  size_t n;
  while ((n = std::fread(buffer.data(), 1, buffer.size(), f)) > 0) h = fnv1a64_update(h, buffer.data(), n);
  const bool failed = std::ferror(f) != 0;
  std::fclose(f);
  if (failed) throw std::runtime_error("cannot read " + path);
  return h;
}

std::string checksum_hex(uint64_t checksum) {
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(checksum));
  return text;
}

nlohmann::json run_fingerprint(const TokenizeOptions& o) {
  nlohmann::json inputs = nlohmann::json::array(), valid_inputs = nlohmann::json::array();
  for (const auto& path : o.inputs) inputs.push_back(file_identity(path));
  for (const auto& path : o.valid_inputs) valid_inputs.push_back(file_identity(path));
  nlohmann::json fp = {
      {"state_version", kStateVersion},
      {"format_version", kTokenShardFormatVersion},
      {"inputs", inputs},
      {"valid_inputs", valid_inputs},
      {"text_field", o.text_field},
      {"source_field", o.source_field},
      {"target_field", o.target_field},
      {"source_lang", o.source_lang},
      {"target_lang", o.target_lang},
      {"source_lang_field", o.source_lang_field},
      {"target_lang_field", o.target_lang_field},
      {"valid_fraction", o.valid_fraction},
      {"docs_per_shard", o.docs_per_shard},
      {"deflate_level", o.deflate_level},
      {"strict", o.strict},
      {"seed", o.seed},
  };
  if (o.tokenizer_model.empty()) {
    fp["tokenizer_training"] = {
        {"vocab_size", o.vocab_size}, {"model_type", o.model_type}, {"max_sentences", o.max_training_sentences}};
  } else {
    fp["tokenizer_model"] = {{"path", o.tokenizer_model}, {"fnv1a64", checksum_hex(fnv1a64_file(o.tokenizer_model))}};
  }
  return fp;
}

nlohmann::json shard_to_json(const TokenizedShard& s) {
  return {{"name", s.name},
          {"records", s.records},
          {"tokens", s.tokens},
          {"source_tokens", s.source_tokens},
          {"target_tokens", s.target_tokens},
          {"skipped_empty", s.skipped_empty},
          {"bytes", s.bytes},
          {"fnv1a64", checksum_hex(s.checksum)}};
}

TokenizedShard shard_from_json(const nlohmann::json& j) {
  TokenizedShard s;
  s.name = j.at("name").get<std::string>();
  s.records = j.at("records").get<int64_t>();
  s.tokens = j.at("tokens").get<int64_t>();
  s.source_tokens = j.at("source_tokens").get<int64_t>();
  s.target_tokens = j.at("target_tokens").get<int64_t>();
  s.skipped_empty = j.at("skipped_empty").get<int64_t>();
  s.bytes = j.at("bytes").get<int64_t>();
  s.checksum = std::stoull(j.at("fnv1a64").get<std::string>(), nullptr, 16);
  return s;
}

TokenizeState::TokenizeState(const std::string& output_dir)
    : output_dir_(output_dir), state_dir_((fs::path(output_dir) / ".tokenize").string()) {}

std::optional<SavedTokenizer> TokenizeState::saved_tokenizer(const nlohmann::json& fingerprint) const {
  const auto run = read_json_file(state_dir_ + "/run.json");
  if (!run || !run->is_object() || run->value("fingerprint", nlohmann::json()) != fingerprint) return std::nullopt;
  try {
    SavedTokenizer saved;
    saved.checksum = std::stoull(run->at("tokenizer_fnv1a64").get<std::string>(), nullptr, 16);
    saved.training_sentences = run->at("training_sentences").get<int64_t>();
    return saved;
  } catch (const std::exception&) {
    return std::nullopt;
  }
}

void TokenizeState::clear() const {
  remove_temporaries();
  remove_tree(state_dir_);
}

void TokenizeState::remove_temporaries() const {
  for (const std::string& dir : {output_dir_, state_dir_}) {
    std::error_code ec;
    for (const auto& entry : fs::directory_iterator(dir, ec)) {
      std::error_code ignored;
      if (entry.is_regular_file(ignored) && is_temporary_name(entry.path().filename().string()))
        fs::remove(entry.path(), ignored);
    }
  }
}

void TokenizeState::begin(const nlohmann::json& fingerprint, const SavedTokenizer& tokenizer) const {
  std::error_code ec;
  fs::create_directories(state_dir_, ec);
  if (ec) throw std::runtime_error("cannot create " + state_dir_ + ": " + ec.message());
  const nlohmann::json run = {{"fingerprint", fingerprint},
                              {"tokenizer_fnv1a64", checksum_hex(tokenizer.checksum)},
                              {"training_sentences", tokenizer.training_sentences}};
  write_file_atomically(state_dir_ + "/run.json", run.dump(1) + "\n");
}

std::optional<TokenizedShard> TokenizeState::finished(const std::string& name) const {
  const auto marker = read_json_file(state_dir_ + "/" + name + ".json");
  if (!marker) return std::nullopt;
  TokenizedShard shard;
  try {
    shard = shard_from_json(*marker);
  } catch (const std::exception&) {
    return std::nullopt;
  }
  const std::string path = (fs::path(output_dir_) / name).string();
  struct stat st {};
  if (shard.name != name || ::stat(path.c_str(), &st) != 0 || st.st_size != shard.bytes) return std::nullopt;
  if (fnv1a64_file(path) != shard.checksum) return std::nullopt;
  return shard;
}

void TokenizeState::mark_finished(const TokenizedShard& shard) const {
  write_file_atomically(state_dir_ + "/" + shard.name + ".json", shard_to_json(shard).dump() + "\n");
}

}  // namespace moetrain::data
