// RawArray: one 1-d, unfiltered HDF5 dataset of a file, read by element
// range straight from the file's bytes with pread, without an HDF5 call per
// read.
//
// HDF5 stores an unfiltered dataset's elements as they are in memory, in one
// contiguous block or in chunks (the token shards use 1 MB chunks); its
// metadata says where each block lies (H5Dget_offset, H5Dget_chunk_info).
// read_raw_arrays() looks that up once per file; afterwards a read is a few
// preads of exactly the bytes asked for. So a streamed reader reads 2 KB for
// a 2 KB sample where HDF5's chunk cache would read the whole 1 MB chunk,
// several threads may read at once (pread is thread-safe, the HDF5 library
// is not entered), and the file's pages live in the kernel's page cache, not
// in the process's memory.
//
// Compressed datasets (HDF5's shuffle and deflate filters, as the token
// shards use them: 16 KiB chunks) are read chunk by chunk: the chunk's stored
// bytes with one pread, inflated with zlib and unshuffled, the last chunk
// read kept per thread for the next read nearby. Other filters, big-endian or
// unexpectedly sized element types are refused.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace moetrain::data {

// An open read-only file descriptor, closed when the last holder lets go.
class ReadOnlyFile {
 public:
  explicit ReadOnlyFile(const std::string& path);  // throws TokenShardError
  ~ReadOnlyFile();
  ReadOnlyFile(const ReadOnlyFile&) = delete;
  ReadOnlyFile& operator=(const ReadOnlyFile&) = delete;
  int fd() const { return fd_; }
  const std::string& path() const { return path_; }
  uint64_t id() const { return id_; }  // unique in the process, never reused

 private:
  std::string path_;
  int fd_ = -1;
  uint64_t id_ = 0;
};

class RawArray {
 public:
  // Elements [first, first + count) lie at file_offset: as they are, or in a
  // filtered chunk of stored_bytes bytes that decodes to chunk_elements.
  struct Extent {
    int64_t first = 0;
    int64_t count = 0;
    int64_t file_offset = 0;
    int64_t stored_bytes = 0;  // filtered chunks only
    unsigned filter_mask = 0;  // bit i set: filter i was not applied to this chunk
  };
  enum class Filter { Shuffle, Deflate };

  RawArray() = default;
  // `filters`: a chunked array's filter pipeline, in the order it was applied
  // (none: the extents hold the elements as they are).
  RawArray(std::string name, int64_t size, int64_t element_size, std::vector<Extent> extents,
           std::vector<Filter> filters = {}, int64_t chunk_elements = 0);

  const std::string& name() const { return name_; }
  int64_t size() const { return size_; }
  int64_t element_size() const { return element_size_; }
  bool compressed() const { return !filters_.empty(); }

  // Reads elements [begin, begin + count) into `out` (count * element_size
  // bytes). Throws TokenShardError naming the file on a range outside the
  // array, a read error or a short read (a truncated file).
  void read(const ReadOnlyFile& file, int64_t begin, int64_t count, void* out) const;

  // Where element `i` lies in the file (diagnostics, tests; uncompressed only).
  int64_t file_offset_of(int64_t i) const;
  // Where the elements lie: blocks or chunks in element order (diagnostics, tests).
  const std::vector<Extent>& extents() const { return extents_; }

  template <class T>
  std::vector<T> read(const ReadOnlyFile& file, int64_t begin, int64_t count) const {
    std::vector<T> out(static_cast<size_t>(count));
    read(file, begin, count, out.data());
    return out;
  }

 private:
  // The decoded elements of a filtered chunk (valid until this thread's next call).
  const char* decoded_chunk(const ReadOnlyFile& file, const Extent& extent) const;

  std::string name_;
  int64_t size_ = 0;
  int64_t element_size_ = 0;
  std::vector<Extent> extents_;  // sorted by `first`, covering [0, size)
  std::vector<Filter> filters_;  // empty: the extents hold the elements as they are
  int64_t chunk_elements_ = 0;
};

// The raw layouts of the named 1-d datasets of the HDF5 file at `path`, each
// with the element size it must have (4 for int32, 8 for int64; stored as
// little-endian integers). Throws TokenShardError naming the file and the
// dataset when one is missing, not 1-d, of another element type, compressed
// with another filter than shuffle and deflate, or not fully written.
std::vector<RawArray> read_raw_arrays(const std::string& path,
                                      const std::vector<std::pair<std::string, int64_t>>& names_and_sizes);

}  // namespace moetrain::data
