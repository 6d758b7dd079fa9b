// LineReader: the lines of one file, read as a stream so files larger than
// memory can be read. A name ending in .zst is zstd-decompressed on the fly
// (concatenated frames included); anything else is read as it is.
//
// Lines come back without their '\n' (and a '\r' before it); a last line with
// no '\n' is still a line. A UTF-8 byte order mark at the start of the file is
// dropped. Lines are numbered from 1 so that errors can name them.
//
// A file that cannot be opened or read, or a corrupt or truncated zstd stream,
// throws InputError with a one-line message that starts with the path
// ("PATH: what" when opening, "PATH:LINE: what" while reading).
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <stdexcept>
#include <string>

namespace moetrain::data {

class InputError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class LineReader {
 public:
  // Opens the file; throws InputError when it cannot be opened.
  explicit LineReader(const std::string& path);
  ~LineReader();
  LineReader(const LineReader&) = delete;
  LineReader& operator=(const LineReader&) = delete;

  // Reads the next line into `line`; false at the end of the file.
  bool next(std::string& line);

  // The 1-based number of the line last returned by next(); 0 before the first.
  int64_t line_number() const { return line_number_; }
  const std::string& path() const { return path_; }

 private:
  struct Zstd;  // the zstd decoder and its buffers, kept out of this header

  bool fill();
  [[noreturn]] void fail(const std::string& what) const;

  std::string path_;
  FILE* file_ = nullptr;
  std::unique_ptr<Zstd> zstd_;  // null for a plain file
  std::string buffer_;          // bytes read but not yet returned start at pos_
  size_t pos_ = 0;
  int64_t line_number_ = 0;
};

}  // namespace moetrain::data
