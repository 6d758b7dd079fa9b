// LineReader: lines of plain and zstd files, numbered from 1; errors name the
// file.
#include "data/line_reader.h"

#include <gtest/gtest.h>

#include <cerrno>
#include <cstring>
#include <utility>

#include "tests/unit/data/data_test_support.h"

namespace moetrain::data {
namespace {

using test_support::TempDir;
using test_support::write_file;
using test_support::zstd_compress;

// Every line with the number the reader gave it.
std::vector<std::pair<int64_t, std::string>> read_lines(const std::string& path) {
  LineReader reader(path);
  std::vector<std::pair<int64_t, std::string>> out;
  std::string line;
  while (reader.next(line)) out.emplace_back(reader.line_number(), line);
  EXPECT_FALSE(reader.next(line)) << "the end stays the end";
  return out;
}

// The message of the InputError `fn` throws; empty when it throws none.
template <typename Fn>
std::string input_error_of(Fn&& fn) {
  try {
    fn();
  } catch (const InputError& e) {
    return e.what();
  }
  return "";
}

TEST(LineReader, PlainLinesCrlfBlankAndLastWithoutNewline) {
  TempDir dir;
  write_file(dir.file("a.txt"),
             "\xEF\xBB\xBF"
             "first\r\nsecond\n\n  \nlast");
  using Lines = std::vector<std::pair<int64_t, std::string>>;
  EXPECT_EQ(read_lines(dir.file("a.txt")), (Lines{{1, "first"}, {2, "second"}, {3, ""}, {4, "  "}, {5, "last"}}));
  // A final '\n' ends the last line rather than starting an empty one.
  write_file(dir.file("b.jsonl"), "x\ny\n");
  EXPECT_EQ(read_lines(dir.file("b.jsonl")), (Lines{{1, "x"}, {2, "y"}}));
  write_file(dir.file("empty.txt"), "");
  EXPECT_TRUE(read_lines(dir.file("empty.txt")).empty());
}

TEST(LineReader, ZstdMatchesPlainAcrossFramesAndRefills) {
  TempDir dir;
  // Lines longer than one read chunk and one zstd output buffer, in two
  // concatenated frames, the last line without a '\n'.
  std::string part1, part2;
  for (int i = 0; i < 20; ++i) part1 += std::to_string(i) + std::string(i * 10007, 'a' + i) + "\r\n";
  for (int i = 0; i < 500; ++i) part2 += "line " + std::to_string(i) + "\n";
  part2 += "tail";
  write_file(dir.file("c.txt"), part1 + part2);
  write_file(dir.file("c.txt.zst"), zstd_compress(part1) + zstd_compress(part2, 19));
  const auto plain = read_lines(dir.file("c.txt"));
  ASSERT_EQ(plain.size(), 521u);
  EXPECT_EQ(plain[19].second, "19" + std::string(19 * 10007, 'a' + 19));
  EXPECT_EQ(plain.back(), (std::pair<int64_t, std::string>{521, "tail"}));
  EXPECT_EQ(read_lines(dir.file("c.txt.zst")), plain);
}

TEST(LineReader, MissingAndCorruptFilesAreNamed) {
  TempDir dir;
  const std::string missing = dir.file("absent.txt");
  EXPECT_EQ(input_error_of([&] { LineReader r(missing); }), missing + ": cannot open input: " + std::strerror(ENOENT));

  const std::string garbage = dir.file("garbage.txt.zst");
  write_file(garbage, "this is not zstd at all");
  const std::string message = input_error_of([&] { read_lines(garbage); });
  EXPECT_EQ(message.rfind(garbage + ":1: corrupt zstd stream: ", 0), 0u) << message;

  std::string body;
  for (int i = 0; i < 2000; ++i) body += "line " + std::to_string(i) + "\n";
  const std::string packed = zstd_compress(body);
  const std::string truncated = dir.file("cut.zst");
  write_file(truncated, packed.substr(0, packed.size() / 2));
  const std::string cut = input_error_of([&] { read_lines(truncated); });
  EXPECT_EQ(cut.rfind(truncated + ":", 0), 0u) << cut;
  EXPECT_NE(cut.find("zstd stream"), std::string::npos) << cut;
  EXPECT_EQ(cut.find('\n'), std::string::npos) << cut;
}

}  // namespace
}  // namespace moetrain::data
