// TensorBoard event files: the checksum, the record framing, and the
// scalars a metrics line becomes. (tests/e2e/test_tensorboard.sh reads a
// run's files with the tensorboard package itself.)
#include <gtest/gtest.h>

#include <unistd.h>

#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "monitor/crc32c.h"
#include "monitor/metrics_logger.h"
#include "monitor/tensorboard_writer.h"
#include "tests/unit/data/data_test_support.h"

namespace fs = std::filesystem;
using namespace moetrain::monitor;

namespace {

// The payloads of a file of records, each record's two checksums verified.
std::vector<std::string> read_records(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::vector<std::string> records;
  size_t at = 0;
  while (at < bytes.size()) {
    EXPECT_LE(at + 12, bytes.size()) << "a torn record header";
    uint64_t length = 0;
    uint32_t length_crc = 0, data_crc = 0;
    std::memcpy(&length, bytes.data() + at, 8);
    std::memcpy(&length_crc, bytes.data() + at + 8, 4);
    EXPECT_EQ(length_crc, masked_crc32c(bytes.data() + at, 8));
    EXPECT_LE(at + 16 + length, bytes.size()) << "a torn record";
    records.push_back(bytes.substr(at + 12, length));
    std::memcpy(&data_crc, bytes.data() + at + 12 + length, 4);
    EXPECT_EQ(data_crc, masked_crc32c(records.back().data(), length));
    at += 16 + length;
  }
  return records;
}

}  // namespace

TEST(Crc32c, MatchesTheCastagnoliCheckValue) {
  // The standard check value of CRC-32C over the ASCII digits 1..9.
  EXPECT_EQ(crc32c("123456789", 9), 0xE3069283u);
  EXPECT_EQ(crc32c("", 0), 0u);
  const uint32_t crc = crc32c("123456789", 9);
  EXPECT_EQ(masked_crc32c("123456789", 9), ((crc >> 15) | (crc << 17)) + 0xA282EAD8u);
}

TEST(TensorBoardWriter, WritesChecksummedRecordsStartingWithTheFileVersion) {
  moetrain::data::test_support::TempDir temp;
  const fs::path dir = temp.path();
  std::string path;
  {
    TensorBoardWriter writer((dir / "nested").string(), 11);
    writer.add_scalars(11, {{"train/loss", 2.5}, {"train/lr", 1e-3}});
    path = writer.path();
  }
  EXPECT_NE(fs::path(path).filename().string().find("tfevents"), std::string::npos);
  const auto records = read_records(path);
  ASSERT_EQ(records.size(), 3u);  // file version, session start, one summary
  EXPECT_NE(records[0].find("brain.Event:2"), std::string::npos);
  // Event.step = 11 (field 2, varint), in every record.
  for (const auto& r : records) EXPECT_NE(r.find(std::string("\x10\x0b", 2)), std::string::npos);
  EXPECT_NE(records[1].find(std::string("\x3a\x02\x08\x01", 4)), std::string::npos) << "session_log { status: START }";
  const float loss = 2.5f;
  std::string loss_value("\x0a\x0atrain/loss\x15", 13);
  loss_value.append(reinterpret_cast<const char*>(&loss), 4);
  EXPECT_NE(records[2].find(loss_value), std::string::npos) << "value { tag: \"train/loss\" simple_value: 2.5 }";
}

TEST(TensorBoardWriter, AnUnwritableFolderIsOneErrorNamingIt) {
  try {
    TensorBoardWriter writer("/proc/no/such/folder", 1);
    FAIL() << "expected an error";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find("/proc/no/such/folder"), std::string::npos) << e.what();
  }
}

TEST(TensorBoardScalars, NameEveryNumberOfAMetricsLine) {
  const nlohmann::json record = {{"step", 20},       {"loss", 3.5},       {"skipped", true},
                                 {"phase", "adapt"}, {"eval_loss", 4.25}, {"comm", {{"dp", {{"bytes", 64}}}}},
                                 {"event", "a text"}};
  const auto scalars = tensorboard_scalars(record);
  const std::vector<std::pair<std::string, double>> expected = {
      {"train/comm/dp/bytes", 64}, {"eval/loss", 4.25}, {"train/loss", 3.5}, {"train/skipped", 1}};
  EXPECT_EQ(scalars, expected);
}
