#include "import/hf_tokenizer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>

#include "data/nllb_vocabulary.h"
#include "import/hf_config.h"

namespace fs = std::filesystem;

namespace moetrain::importing {
namespace {

std::string read_bytes(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw ImportError(path.string() + ": cannot read");
  std::ostringstream bytes;
  bytes << in.rdbuf();
  return bytes.str();
}

nlohmann::json read_json(const fs::path& path) {
  std::ifstream in(path);
  if (!in) throw ImportError(path.string() + ": cannot read");
  try {
    nlohmann::json json = nlohmann::json::parse(in);
    if (!json.is_object()) throw ImportError(path.string() + ": not a JSON object");
    return json;
  } catch (const nlohmann::json::exception& e) {
    throw ImportError(path.string() + ": not JSON: " + e.what());
  }
}

// tokenizer_config.json, when there is one: NllbTokenizer, codes before the text.
void check_tokenizer_config(const fs::path& path) {
  if (!fs::exists(path)) return;
  const nlohmann::json config = read_json(path);
  const auto tokenizer_class = config.value("tokenizer_class", std::string("NllbTokenizer"));
  if (tokenizer_class != "NllbTokenizer" && tokenizer_class != "NllbTokenizerFast") {
    throw ImportError(path.string() + ": tokenizer_class is \"" + tokenizer_class +
                      "\": moetrain imports NllbTokenizer's layout (sentencepiece.bpe.model with tokenizer.json)");
  }
  if (config.contains("legacy_behaviour") && config["legacy_behaviour"] == true) {
    throw ImportError(path.string() +
                      ": legacy_behaviour is true (language code after the text): moetrain writes the code before "
                      "the text, as NllbTokenizer does by default");
  }
}

// tokenizer.json's added tokens from id `first` on, in id order; the four
// specials below it must be fairseq's.
std::vector<std::string> added_tokens(const fs::path& path, int64_t first) {
  const nlohmann::json json = read_json(path);
  if (!json.contains("added_tokens") || !json["added_tokens"].is_array()) {
    throw ImportError(path.string() + ": no added_tokens list");
  }
  std::map<int64_t, std::string> by_id;
  for (const auto& token : json["added_tokens"]) {
    if (!token.is_object() || !token.contains("id") || !token["id"].is_number_integer() || !token.contains("content") ||
        !token["content"].is_string()) {
      throw ImportError(path.string() + ": an added token without an integer id and a content string: " + token.dump());
    }
    const auto id = token["id"].get<int64_t>();
    if (!by_id.emplace(id, token["content"].get<std::string>()).second) {
      throw ImportError(path.string() + ": two added tokens have id " + std::to_string(id));
    }
  }
  const char* specials[] = {"<s>", "<pad>", "</s>", "<unk>"};
  for (int64_t id = 0; id < 4; ++id) {
    const auto it = by_id.find(id);
    if (it == by_id.end() || it->second != specials[id]) {
      throw ImportError(path.string() + ": id " + std::to_string(id) + " is " +
                        (it == by_id.end() ? std::string("not an added token") : "'" + it->second + "'") + ", not " +
                        specials[id] + " (fairseq's layout: <s> 0, <pad> 1, </s> 2, <unk> 3)");
    }
  }
  std::vector<std::string> tokens;
  for (const auto& [id, content] : by_id) {
    if (id < 4) continue;
    const int64_t expected = first + static_cast<int64_t>(tokens.size());
    if (id != expected) {
      throw ImportError(path.string() + ": added token '" + content + "' has id " + std::to_string(id) +
                        ", but NLLB's layout gives the next added token id " + std::to_string(expected) +
                        " (after the SentencePiece model's pieces)");
    }
    tokens.push_back(content);
  }
  return tokens;
}

HfTokenizer load(std::string bytes, const std::string& source, int64_t model_vocab_size) {
  HfTokenizer out;
  try {
    const data::Tokenizer tokenizer = data::Tokenizer::from_bytes(bytes, source);
    out.special = tokenizer.special_tokens();
    out.vocab_size = tokenizer.vocab_size();
    out.language_codes = static_cast<int64_t>(tokenizer.language_codes().size());
  } catch (const std::runtime_error& e) {
    throw ImportError(e.what());
  }
  if (out.vocab_size > model_vocab_size) {
    throw ImportError(source + ": " + std::to_string(out.vocab_size) +
                      " token ids, more than config.json's vocab_size " + std::to_string(model_vocab_size));
  }
  out.model_bytes = std::move(bytes);
  out.source = source;
  return out;
}

}  // namespace

HfTokenizer read_hf_tokenizer(const std::string& folder, int64_t model_vocab_size) {
  const fs::path dir(folder);
  const fs::path native = dir / "tokenizer.model", nllb = dir / "sentencepiece.bpe.model";
  if (fs::is_regular_file(native)) return load(read_bytes(native), native.string(), model_vocab_size);
  if (!fs::is_regular_file(nllb)) {
    throw ImportError(folder +
                      ": no tokenizer (moetrain reads tokenizer.model, a SentencePiece model with moetrain's special "
                      "ids, or NLLB's sentencepiece.bpe.model with tokenizer.json)");
  }
  check_tokenizer_config(dir / "tokenizer_config.json");  // first: it names a tokenizer of another layout
  const fs::path tokenizer_json = dir / "tokenizer.json";
  if (!fs::is_regular_file(tokenizer_json)) {
    throw ImportError(folder + ": sentencepiece.bpe.model without tokenizer.json, which gives the language codes' ids");
  }
  const std::string spm = read_bytes(nllb);
  // Probe the piece count through the layout with no added tokens.
  int64_t pieces = 0;
  try {
    pieces = data::Tokenizer::from_bytes(data::nllb_layout_model(spm, {}, nllb.string()), nllb.string()).vocab_size();
  } catch (const std::runtime_error& e) {
    throw ImportError(e.what());
  }
  const std::vector<std::string> added = added_tokens(tokenizer_json, pieces);
  std::string layout;
  try {
    layout = data::nllb_layout_model(spm, added, nllb.string());
  } catch (const std::runtime_error& e) {
    throw ImportError(e.what());
  }
  return load(std::move(layout), nllb.string() + " (with " + tokenizer_json.filename().string() + ")",
              model_vocab_size);
}

}  // namespace moetrain::importing
