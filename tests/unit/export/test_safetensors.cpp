// safetensors: what write_safetensors writes reads back bit for bit (several
// dtypes, an empty and a scalar tensor, metadata), the header is 8-byte
// aligned JSON, the sharded writer splits whole tensors and indexes them, and
// damaged files are errors naming the file.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include <cstring>
#include <filesystem>
#include <fstream>

#include <unistd.h>

#include "data/atomic_file.h"
#include "export/safetensors.h"

namespace fs = std::filesystem;
using namespace moetrain::data;
using namespace moetrain::exporting;

namespace {

struct TempDir {
  std::string path;
  TempDir() {
    path = (fs::temp_directory_path() / ("moetrain_safetensors_" + std::to_string(::getpid()))).string();
    remove_tree(path);
    fs::create_directories(path);
  }
  ~TempDir() { remove_tree(path); }
};

NamedTensors sample_tensors() {
  torch::manual_seed(3);
  return {{"embed.weight", torch::randn({7, 5})},
          {"layer.bias", torch::randn({5}).to(torch::kBFloat16)},
          {"layer.half", torch::randn({2, 3}).to(torch::kFloat16)},
          {"counts", torch::arange(6, torch::kInt64).reshape({3, 2})},
          {"empty", torch::empty({0, 4})},
          {"scalar", torch::tensor(2.5)}};
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

TEST(Safetensors, RoundTripsDtypesShapesAndMetadata) {
  TempDir dir;
  const auto tensors = sample_tensors();
  const std::string path = dir.path + "/m.safetensors";
  write_safetensors(path, tensors, {{"format", "pt"}});
  const auto bytes = read_bytes(path);
  uint64_t header = 0;
  for (int i = 0; i < 8; ++i) header |= static_cast<uint64_t>(static_cast<uint8_t>(bytes[i])) << (8 * i);
  EXPECT_EQ(header % 8, 0u);
  const auto json = nlohmann::json::parse(bytes.substr(8, header));
  EXPECT_EQ(json["__metadata__"]["format"], "pt");
  EXPECT_EQ(json["layer.bias"]["dtype"], "BF16");
  EXPECT_EQ(json["counts"]["shape"], (std::vector<int64_t>{3, 2}));

  const auto file = read_safetensors(path);
  EXPECT_EQ(file.metadata.at("format"), "pt");
  ASSERT_EQ(file.tensors.size(), tensors.size());
  for (size_t i = 0; i < tensors.size(); ++i) {
    EXPECT_EQ(file.tensors[i].first, tensors[i].first);
    EXPECT_EQ(file.tensors[i].second.scalar_type(), tensors[i].second.scalar_type());
    EXPECT_TRUE(torch::equal(file.tensors[i].second, tensors[i].second)) << tensors[i].first;
  }
  EXPECT_THROW(write_safetensors(path, {{"a", torch::ones({1})}, {"a", torch::ones({1})}}), std::invalid_argument);
}

TEST(Safetensors, ShardsWholeTensorsWithAnIndex) {
  TempDir dir;
  NamedTensors tensors;
  for (int i = 0; i < 5; ++i) tensors.emplace_back("t" + std::to_string(i), torch::full({100}, i, torch::kFloat32));
  // 400 bytes each, at most 900 per shard: 2 + 2 + 1.
  const auto files = write_safetensors_sharded(dir.path, "model", tensors, 900, {{"format", "pt"}});
  ASSERT_EQ(files.size(), 4u);
  EXPECT_EQ(files[0], "model-00001-of-00003.safetensors");
  const auto index = nlohmann::json::parse(read_bytes(dir.path + "/model.safetensors.index.json"));
  EXPECT_EQ(index["metadata"]["total_size"], 2000);
  EXPECT_EQ(index["weight_map"]["t4"], "model-00003-of-00003.safetensors");
  EXPECT_EQ(read_safetensors(dir.path + "/model-00002-of-00003.safetensors").tensors.at(1).first, "t3");
  // Under the limit: one file, no index.
  const auto one = write_safetensors_sharded(dir.path, "small", tensors, 1 << 20);
  EXPECT_EQ(one, (std::vector<std::string>{"small.safetensors"}));
  EXPECT_FALSE(fs::exists(dir.path + "/small.safetensors.index.json"));
}

TEST(Safetensors, DamagedFilesAreErrorsNamingTheFile) {
  TempDir dir;
  const std::string path = dir.path + "/m.safetensors";
  write_safetensors(path, sample_tensors());
  const auto bytes = read_bytes(path);
  auto expect_error = [&](const std::string& content, const std::string& what) {
    write_file_atomically(path, content);
    try {
      read_safetensors(path);
      ADD_FAILURE() << "no error for " << what;
    } catch (const std::runtime_error& e) {
      EXPECT_NE(std::string(e.what()).find(path), std::string::npos) << e.what();
      EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
    }
  };
  expect_error(bytes.substr(0, 5), "truncated");
  expect_error(bytes.substr(0, bytes.size() - 10), "byte range");
  std::string bad_json = bytes;
  bad_json[9] = '#';
  expect_error(bad_json, "not JSON");
  std::string huge = bytes;
  huge[6] = '\x7f';
  expect_error(huge, "runs past the file");
  EXPECT_THROW(read_safetensors(dir.path + "/none.safetensors"), std::runtime_error);
}

// A file with `header` (JSON) and `data_bytes` bytes of data.
std::string raw_file(const nlohmann::ordered_json& header, size_t data_bytes) {
  const std::string text = header.dump();
  std::string out(8, '\0');
  for (int i = 0; i < 8; ++i) out[static_cast<size_t>(i)] = static_cast<char>((text.size() >> (8 * i)) & 0xff);
  return out + text + std::string(data_bytes, '\x01');
}

TEST(Safetensors, ByteRangesMustTileTheDataWithoutOverlapOrHole) {
  TempDir dir;
  const std::string path = dir.path + "/m.safetensors";
  auto entry = [](int64_t begin, int64_t end) {
    return nlohmann::ordered_json{{"dtype", "F32"}, {"shape", {(end - begin) / 4}}, {"data_offsets", {begin, end}}};
  };
  auto error_of = [&](const nlohmann::ordered_json& header, size_t data_bytes) -> std::string {
    write_file_atomically(path, raw_file(header, data_bytes));
    try {
      read_safetensors(path);
      return "(read)";
    } catch (const std::runtime_error& e) {
      return e.what();
    }
  };
  EXPECT_EQ(error_of({{"a", entry(0, 16)}, {"b", entry(16, 24)}}, 24), "(read)");
  EXPECT_EQ(error_of({{"b", entry(16, 24)}, {"a", entry(0, 16)}}, 24), "(read)");  // any header order
  EXPECT_EQ(error_of({{"a", entry(0, 16)}, {"b", entry(8, 24)}}, 24),
            path + ": a and b overlap (bytes 0..16 and 8..24 of the data)");
  EXPECT_EQ(error_of({{"a", entry(0, 8)}, {"b", entry(16, 24)}}, 24),
            path + ": bytes 8..16 of the data belong to no tensor (the header does not describe the file)");
  EXPECT_EQ(error_of({{"a", entry(0, 16)}}, 24),
            path + ": bytes 16..24 of the data belong to no tensor (the header does not describe the file)");
  // The values come out of the mapping whole.
  write_file_atomically(path, raw_file({{"a", entry(0, 16)}}, 16));
  const auto read = read_safetensors(path);
  ASSERT_EQ(read.tensors.size(), 1u);
  const float one = [] {
    float f;
    const uint32_t bits = 0x01010101;
    std::memcpy(&f, &bits, 4);
    return f;
  }();
  EXPECT_TRUE(read.tensors[0].second.eq(one).all().item<bool>());
}

}  // namespace
