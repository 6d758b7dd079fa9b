// Fuzz target: the corpus readers, LineReader (data/line_reader.h: plain and
// zstd-streamed lines) and JsonlReader (data/jsonl_reader.h: JSONL records,
// blank-line separated text documents).
//
// Input: one mode byte, then the file's content. Mode bits:
//   0-1  the file name, hence the format: 0 .jsonl, 1 .jsonl.zst, 2 .txt, 3 .zst
//   2    pairs mode (source field "src", target field "tgt"), else field "text"
//   3    skip bad records (JsonlReader::skip_bad_records)
//   4    .zst formats: the content is compressed here (one or two frames), so
//        the decoder sees a valid stream; else the content is the file as is
//   5    the content is repeated past 200 KiB, so lines cross the reader's
//        64 KiB reads and zstd's 128 KiB output blocks
//   6    with bit 4: the compressed stream is cut short (a truncated file)
//   7    with bit 4: two frames, not one
//
// Where the decoded bytes are known (plain files; streams compressed here),
// LineReader's lines are compared with a plain split at '\n' (a '\r' before
// it and a leading byte order mark dropped), and for text files JsonlReader's
// documents with a plain split at blank lines.
//
// A bug: a crash, a sanitizer report, a hang, an exception other than
// InputError (the documented answer to unreadable or bad input), lines or
// documents that differ from the plain split, or a truncated stream that
// reads without an InputError.
#include <zstd.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/jsonl_reader.h"
#include "data/line_reader.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using moetrain::data::InputError;

constexpr size_t kRepeatPast = 200 << 10;

std::string compress(const std::string& content, bool two_frames) {
  auto frame = [](const std::string& part) {
    std::string out(ZSTD_compressBound(part.size()), '\0');
    const size_t n = ZSTD_compress(out.data(), out.size(), part.data(), part.size(), 1);
    FUZZ_CHECK(!ZSTD_isError(n), "ZSTD_compress failed");
    out.resize(n);
    return out;
  };
  if (!two_frames) return frame(content);
  const size_t half = content.size() / 2;
  return frame(content.substr(0, half)) + frame(content.substr(half));
}

// The lines LineReader must return for `bytes`.
std::vector<std::string> split_lines(const std::string& bytes) {
  std::vector<std::string> lines;
  size_t pos = 0;
  while (pos < bytes.size()) {
    size_t nl = bytes.find('\n', pos);
    if (nl == std::string::npos) nl = bytes.size();
    std::string line = bytes.substr(pos, nl - pos);
    if (!line.empty() && line.back() == '\r') line.pop_back();
    if (lines.empty() && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.erase(0, 3);
    lines.push_back(std::move(line));
    pos = nl + 1;
  }
  return lines;
}

bool blank(const std::string& line) { return line.find_first_not_of(" \t\r\f\v") == std::string::npos; }

// The documents JsonlReader must return for a text file of `lines` (bad
// ones, holding invalid UTF-8, are marked; `line` is the first line, 1-based).
struct Document {
  std::string text;
  int64_t line;
  bool bad;
};
std::vector<Document> split_documents(const std::vector<std::string>& lines) {
  std::vector<Document> docs;
  bool open = false;
  for (size_t i = 0; i < lines.size(); ++i) {
    if (blank(lines[i])) {
      open = false;
      continue;
    }
    if (!open) docs.push_back({"", static_cast<int64_t>(i + 1), false});
    Document& d = docs.back();
    if (open) d.text += '\n';
    d.text += lines[i];
    d.bad = d.bad || !moetrain::data::is_valid_utf8(lines[i]);
    open = true;
  }
  return docs;
}

void check_lines(const std::string& path, const std::string* decoded) {
  std::vector<std::string> got;
  try {
    moetrain::data::LineReader reader(path);
    for (std::string line; reader.next(line);) {
      got.push_back(line);
      FUZZ_CHECK(reader.line_number() == static_cast<int64_t>(got.size()), "line numbers skip");
    }
  } catch (const InputError&) {
    FUZZ_CHECK(decoded == nullptr, "InputError on a valid stream");
    return;
  }
  if (decoded != nullptr) FUZZ_CHECK(got == split_lines(*decoded), "lines differ from the plain split");
}

void check_records(const std::string& path, uint8_t mode, const std::string* decoded) {
  moetrain::data::RecordFields fields;
  if (mode & 4) {
    fields.source_field = "src";
    fields.target_field = "tgt";
  }
  const bool skip = mode & 8;
  const bool text = (mode & 3) >= 2;
  std::vector<Document> want;
  if (text && decoded != nullptr) want = split_documents(split_lines(*decoded));
  size_t next_want = 0;  // the reference document due next
  try {
    moetrain::data::JsonlReader reader(path, fields);
    moetrain::data::BadRecords bad;
    if (skip) reader.skip_bad_records(&bad);
    int64_t last_line = 0;
    for (moetrain::data::TextRecord record; reader.next(record);) {
      FUZZ_CHECK(record.line > last_line, "record lines do not increase");
      last_line = record.line;
      FUZZ_CHECK(moetrain::data::is_valid_utf8(record.text) && moetrain::data::is_valid_utf8(record.target),
                 "a record that is not valid UTF-8");
      if (!text || decoded == nullptr) continue;
      while (next_want < want.size() && want[next_want].bad && skip) ++next_want;
      FUZZ_CHECK(next_want < want.size() && !want[next_want].bad, "a document the plain split does not have");
      FUZZ_CHECK(record.text == want[next_want].text && record.line == want[next_want].line,
                 "a document differs from the plain split");
      ++next_want;
    }
    FUZZ_CHECK(bad.first.size() == static_cast<size_t>(std::min<int64_t>(bad.count, bad.kKept)), "bad records");
  } catch (const InputError&) {
    return;  // bad input, or pairs of a text file
  }
  if (!text || decoded == nullptr) return;
  while (next_want < want.size() && want[next_want].bad && skip) ++next_want;
  FUZZ_CHECK(next_want == want.size(), "documents of the plain split were not read");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  const uint8_t mode = data[0];
  std::string content(reinterpret_cast<const char*>(data) + 1, size - 1);
  if ((mode & 32) && !content.empty()) {
    const std::string once = content;
    while (content.size() <= kRepeatPast) content += once;
  }
  static const char* const kNames[] = {"in.jsonl", "in.jsonl.zst", "in.txt", "in.zst"};
  const bool zst = (mode & 3) == 1 || (mode & 3) == 3;
  const bool compress_here = zst && (mode & 16);
  const bool truncated = compress_here && (mode & 64) && !content.empty();
  std::string file_bytes = content;
  if (compress_here) {
    // A cut between two frames would leave a complete stream: cut one frame.
    file_bytes = compress(content, (mode & 128) && !truncated);
    if (truncated) file_bytes.resize(file_bytes.size() / 2);
  }
  const std::string path = moetrain::fuzz::write_scratch_file(kNames[mode & 3], file_bytes);
  // The decoded bytes, where known.
  const std::string* decoded = (!zst || (compress_here && !truncated)) ? &content : nullptr;
  check_lines(path, decoded);
  if (truncated) {
    bool threw = false;
    try {
      moetrain::data::LineReader reader(path);
      for (std::string line; reader.next(line);) {
      }
    } catch (const InputError&) {
      threw = true;
    }
    FUZZ_CHECK(threw, "a truncated zstd stream read without an error");
  }
  check_records(path, mode, decoded);
  return 0;
}
