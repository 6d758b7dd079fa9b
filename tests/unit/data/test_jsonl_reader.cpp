// JsonlReader: JSONL, zstd-compressed JSONL and plain text; errors name the
// file and the line.
#include "data/jsonl_reader.h"

#include <gtest/gtest.h>

#include "tests/unit/data/data_test_support.h"

namespace moetrain::data {
namespace {

using test_support::TempDir;
using test_support::zstd_compress;

std::vector<TextRecord> read_all(const std::string& path, RecordFields fields = {}) {
  JsonlReader reader(path, fields);
  std::vector<TextRecord> out;
  TextRecord r;
  while (reader.next(r)) out.push_back(r);
  return out;
}

// Expects `fn` to throw InputError whose message contains every one of `parts`.
template <typename Fn>
void expect_input_error(Fn&& fn, const std::vector<std::string>& parts) {
  try {
    fn();
    ADD_FAILURE() << "expected InputError";
  } catch (const InputError& e) {
    std::string msg = e.what();
    EXPECT_EQ(msg.find('\n'), std::string::npos) << "one line: " << msg;
    for (const auto& p : parts) EXPECT_NE(msg.find(p), std::string::npos) << "'" << p << "' in: " << msg;
  }
}

TEST(JsonlReader, FormatFromFileName) {
  EXPECT_EQ(input_format_of("a/b.jsonl"), InputFormat::Jsonl);
  EXPECT_EQ(input_format_of("b.json"), InputFormat::Jsonl);
  EXPECT_EQ(input_format_of("b.jsonl.zst"), InputFormat::JsonlZst);
  EXPECT_EQ(input_format_of("b.txt.zst"), InputFormat::TextZst);
  EXPECT_EQ(input_format_of("b.txt"), InputFormat::Text);
  EXPECT_EQ(input_format_of("README"), InputFormat::Text);
}

TEST(JsonlReader, ReadsTextFieldsSkippingBlankLines) {
  TempDir dir;
  test_support::write_file(dir.file("a.jsonl"),
                           "\xEF\xBB\xBF{\"id\": 1, \"text\": \"first \\u00e9\\n line\"}\r\n"
                           "\n"
                           "   \n"
                           "{\"text\": \"\xE4\xBD\xA0\xE5\xA5\xBD\", \"other\": [1, 2]}\n"
                           "{\"text\": \"no newline at end\"}");
  auto records = read_all(dir.file("a.jsonl"));
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].text, "first \xC3\xA9\n line");
  EXPECT_EQ(records[0].line, 1);
  EXPECT_EQ(records[1].text, "\xE4\xBD\xA0\xE5\xA5\xBD");
  EXPECT_EQ(records[1].line, 4);
  EXPECT_EQ(records[2].text, "no newline at end");
  EXPECT_EQ(records[2].line, 5);
}

TEST(JsonlReader, ReadsPairs) {
  TempDir dir;
  test_support::write_file(dir.file("p.jsonl"),
                           "{\"src\": \"hello\", \"tgt\": \"HH AH0 L OW1\"}\n{\"tgt\": \"B\", \"src\": \"b\"}\n");
  RecordFields f;
  f.source_field = "src";
  f.target_field = "tgt";
  auto records = read_all(dir.file("p.jsonl"), f);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].text, "hello");
  EXPECT_EQ(records[0].target, "HH AH0 L OW1");
  EXPECT_EQ(records[1].text, "b");
  EXPECT_EQ(records[1].target, "B");
}

TEST(JsonlReader, ReadsEachRecordsLanguagesAndRefusesUnknownCodes) {
  TempDir dir;
  const std::string path = dir.file("p.jsonl");
  test_support::write_file(path,
                           "{\"src\": \"hello\", \"tgt\": \"bonjour\", \"sl\": \"eng_Latn\", \"tl\": \"fra_Latn\"}\n"
                           "{\"src\": \"salut\", \"tgt\": \"hi\", \"sl\": \"fra_Latn\", \"tl\": \"eng_Latn\"}\n");
  RecordFields f;
  f.source_field = "src";
  f.target_field = "tgt";
  f.source_lang_field = "sl";
  f.target_lang_field = "tl";
  f.language_codes = {"eng_Latn", "fra_Latn"};
  auto records = read_all(path, f);
  ASSERT_EQ(records.size(), 2u);
  EXPECT_EQ(records[0].source_lang, "eng_Latn");
  EXPECT_EQ(records[0].target_lang, "fra_Latn");
  EXPECT_EQ(records[1].source_lang, "fra_Latn");
  EXPECT_EQ(records[1].target_lang, "eng_Latn");

  test_support::write_file(path, "{\"src\": \"a\", \"tgt\": \"b\", \"sl\": \"eng_Latn\", \"tl\": \"deu_Latn\"}\n");
  expect_input_error([&] { read_all(path, f); },
                     {path + ":1: field 'tl': 'deu_Latn' is not a language code of the tokenizer"});
  test_support::write_file(path, "{\"src\": \"a\", \"tgt\": \"b\", \"tl\": \"eng_Latn\"}\n");
  expect_input_error([&] { read_all(path, f); }, {path + ":1: missing field 'sl'"});

  // The reader skips a record with an unknown code when asked to, like any bad record.
  test_support::write_file(path,
                           "{\"src\": \"a\", \"tgt\": \"b\", \"sl\": \"xx\", \"tl\": \"eng_Latn\"}\n"
                           "{\"src\": \"c\", \"tgt\": \"d\", \"sl\": \"fra_Latn\", \"tl\": \"eng_Latn\"}\n");
  BadRecords bad;
  JsonlReader reader(path, f);
  reader.skip_bad_records(&bad);
  TextRecord r;
  ASSERT_TRUE(reader.next(r));
  EXPECT_EQ(r.text, "c");
  EXPECT_EQ(r.source_lang, "fra_Latn");
  EXPECT_FALSE(reader.next(r));
  EXPECT_EQ(bad.count, 1);

  RecordFields text_only;
  text_only.source_lang_field = "sl";
  expect_input_error([&] { read_all(path, text_only); }, {"language fields are for pairs mode"});
}

TEST(JsonlReader, BadRecordsNameFileAndLine) {
  TempDir dir;
  const std::string path = dir.file("bad.jsonl");
  test_support::write_file(path, "{\"text\": \"ok\"}\n{\"text\": \"ok\"}\n{\"text\": \"unterminated}\n");
  expect_input_error([&] { read_all(path); }, {path + ":3", "invalid JSON"});

  test_support::write_file(path, "{\"text\": \"ok\"}\n{\"body\": \"x\"}\n");
  expect_input_error([&] { read_all(path); }, {path + ":2", "missing field 'text'"});

  test_support::write_file(path, "{\"text\": 42}\n");
  expect_input_error([&] { read_all(path); }, {path + ":1", "not a string"});

  test_support::write_file(path, "[\"text\"]\n");
  expect_input_error([&] { read_all(path); }, {path + ":1", "object"});

  test_support::write_file(path, "{\"text\": \"ok\"}\n{\"text\": \"bad \xC3\x28 byte\"}\n");
  expect_input_error([&] { read_all(path); }, {path + ":2", "UTF-8"});

  test_support::write_file(path, "{\"text\": \"lone \\ud800 surrogate\"}\n");
  expect_input_error([&] { read_all(path); }, {path + ":1"});

  expect_input_error([&] { read_all(dir.file("absent.jsonl")); }, {dir.file("absent.jsonl")});
}

TEST(JsonlReader, PlainTextDocumentsSeparatedByBlankLines) {
  TempDir dir;
  test_support::write_file(dir.file("t.txt"), "\n\nFirst paragraph line one.\r\nline two.\n\n\n  \nSecond.\n\nThird\n");
  auto records = read_all(dir.file("t.txt"));
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[0].text, "First paragraph line one.\nline two.");
  EXPECT_EQ(records[0].line, 3);
  EXPECT_EQ(records[1].text, "Second.");
  EXPECT_EQ(records[1].line, 8);
  EXPECT_EQ(records[2].text, "Third");

  test_support::write_file(dir.file("bad.txt"), "fine\nstill fine\n\nbroken \xFF here\n");
  expect_input_error([&] { read_all(dir.file("bad.txt")); }, {dir.file("bad.txt") + ":4", "UTF-8"});

  RecordFields pairs;
  pairs.source_field = "a";
  pairs.target_field = "b";
  expect_input_error([&] { JsonlReader r(dir.file("t.txt"), pairs); }, {"JSONL"});
}

TEST(JsonlReader, ZstdStreamsMatchPlainInput) {
  TempDir dir;
  // Many records, so the decompressed stream spans many output buffers, and
  // two concatenated frames, which zstd allows.
  std::string part1, part2;
  for (int i = 0; i < 3000; ++i)
    part1 += "{\"text\": \"record " + std::to_string(i) + " " + std::string(i % 97, 'x') + "\"}\n";
  for (int i = 3000; i < 3500; ++i) part2 += "{\"text\": \"record " + std::to_string(i) + "\"}\n";
  test_support::write_file(dir.file("c.jsonl"), part1 + part2);
  test_support::write_file(dir.file("c.jsonl.zst"), zstd_compress(part1) + zstd_compress(part2, 19));
  auto plain = read_all(dir.file("c.jsonl"));
  auto packed = read_all(dir.file("c.jsonl.zst"));
  ASSERT_EQ(plain.size(), 3500u);
  ASSERT_EQ(packed.size(), plain.size());
  for (size_t i = 0; i < plain.size(); ++i) {
    EXPECT_EQ(packed[i].text, plain[i].text);
    EXPECT_EQ(packed[i].line, plain[i].line);
  }
  // Compressed plain text works too.
  test_support::write_file(dir.file("t.txt.zst"), zstd_compress("a b\n\nc d\n"));
  auto text = read_all(dir.file("t.txt.zst"));
  ASSERT_EQ(text.size(), 2u);
  EXPECT_EQ(text[1].text, "c d");
}

TEST(JsonlReader, DamagedZstdThrows) {
  TempDir dir;
  std::string body;
  for (int i = 0; i < 2000; ++i) body += "{\"text\": \"record number " + std::to_string(i) + "\"}\n";
  const std::string packed = zstd_compress(body);
  const std::string truncated = dir.file("cut.jsonl.zst");
  test_support::write_file(truncated, packed.substr(0, packed.size() / 2));
  expect_input_error([&] { read_all(truncated); }, {truncated, "zstd"});

  const std::string garbage = dir.file("garbage.jsonl.zst");
  test_support::write_file(garbage, "this is not zstd at all");
  expect_input_error([&] { read_all(garbage); }, {garbage, "zstd"});
}

}  // namespace
}  // namespace moetrain::data
