// LineReader: a byte buffer refilled from the file (through a streaming zstd
// decoder for .zst) and split at '\n'.
#include "data/line_reader.h"

#include <zstd.h>

#include <cerrno>
#include <cstring>
#include <vector>

namespace moetrain::data {

struct LineReader::Zstd {
  ZSTD_DCtx* dctx = nullptr;
  std::vector<char> compressed;
  std::vector<char> decompressed;
  ZSTD_inBuffer in{nullptr, 0, 0};
  bool frame_open = false;  // a frame has started and not yet finished

  ~Zstd() {
    if (dctx != nullptr) ZSTD_freeDCtx(dctx);
  }
};

LineReader::LineReader(const std::string& path) : path_(path) {
  file_ = std::fopen(path.c_str(), "rb");
  if (file_ == nullptr) throw InputError(path + ": cannot open input: " + std::strerror(errno));
  const std::string zst = ".zst";
  if (path.size() >= zst.size() && path.compare(path.size() - zst.size(), zst.size(), zst) == 0) {
    zstd_ = std::make_unique<Zstd>();
    zstd_->dctx = ZSTD_createDCtx();
    if (zstd_->dctx == nullptr) {
      std::fclose(file_);
      throw InputError(path + ": cannot create zstd decoder");
    }
    zstd_->compressed.resize(ZSTD_DStreamInSize());
    zstd_->decompressed.resize(ZSTD_DStreamOutSize());
  }
}

LineReader::~LineReader() {
  if (file_ != nullptr) std::fclose(file_);
}

bool LineReader::next(std::string& line) {
  // Bytes before scan_from are known to hold no '\n', so a long line is
  // scanned once, not once per refill.
  size_t scan_from = pos_;
  while (true) {
    const size_t nl = buffer_.find('\n', scan_from);
    if (nl != std::string::npos) {
      line.assign(buffer_, pos_, nl - pos_);
      pos_ = nl + 1;
      break;
    }
    const size_t scanned = buffer_.size() - pos_;
    if (!fill()) {
      if (pos_ >= buffer_.size()) return false;
      line.assign(buffer_, pos_, std::string::npos);  // last line, no '\n'
      pos_ = buffer_.size();
      break;
    }
    scan_from = pos_ + scanned;  // fill() moved the unread bytes to the front
  }
  ++line_number_;
  if (!line.empty() && line.back() == '\r') line.pop_back();
  // A UTF-8 byte order mark is not part of the first line.
  if (line_number_ == 1 && line.compare(0, 3, "\xEF\xBB\xBF") == 0) line.erase(0, 3);
  return true;
}

// Appends more bytes to buffer_; false at the end of the input.
bool LineReader::fill() {
  buffer_.erase(0, pos_);
  pos_ = 0;
  if (zstd_ == nullptr) {
    char chunk[1 << 16];
    const size_t n = std::fread(chunk, 1, sizeof(chunk), file_);
    if (n == 0 && std::ferror(file_)) fail("read error");
    buffer_.append(chunk, n);
    return n > 0;
  }
  Zstd& z = *zstd_;
  while (true) {
    if (z.in.pos >= z.in.size) {
      const size_t n = std::fread(z.compressed.data(), 1, z.compressed.size(), file_);
      if (n == 0) {
        if (std::ferror(file_)) fail("read error");
        // A frame that started but did not finish: the file was cut short.
        if (z.frame_open) fail("truncated zstd stream");
        return false;
      }
      z.in = ZSTD_inBuffer{z.compressed.data(), n, 0};
    }
    ZSTD_outBuffer out{z.decompressed.data(), z.decompressed.size(), 0};
    const size_t ret = ZSTD_decompressStream(z.dctx, &out, &z.in);
    if (ZSTD_isError(ret)) fail(std::string("corrupt zstd stream: ") + ZSTD_getErrorName(ret));
    z.frame_open = ret != 0;
    if (out.pos > 0) {
      buffer_.append(z.decompressed.data(), out.pos);
      return true;
    }
  }
}

void LineReader::fail(const std::string& what) const {
  throw InputError(path_ + ":" + std::to_string(line_number_ + 1) + ": " + what);
}

}  // namespace moetrain::data
