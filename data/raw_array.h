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
// Compressed (filtered) datasets have no raw bytes to read; read_raw_arrays
// refuses them, and so do big-endian or unexpectedly sized element types.
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

 private:
  std::string path_;
  int fd_ = -1;
};

class RawArray {
 public:
  // Elements [first, first + count) lie at file_offset.
  struct Extent {
    int64_t first = 0;
    int64_t count = 0;
    int64_t file_offset = 0;
  };

  RawArray() = default;
  RawArray(std::string name, int64_t size, int64_t element_size, std::vector<Extent> extents);

  const std::string& name() const { return name_; }
  int64_t size() const { return size_; }
  int64_t element_size() const { return element_size_; }

  // Reads elements [begin, begin + count) into `out` (count * element_size
  // bytes). Throws TokenShardError naming the file on a range outside the
  // array, a read error or a short read (a truncated file).
  void read(const ReadOnlyFile& file, int64_t begin, int64_t count, void* out) const;

  // Where element `i` lies in the file (diagnostics, tests).
  int64_t file_offset_of(int64_t i) const;

  template <class T>
  std::vector<T> read(const ReadOnlyFile& file, int64_t begin, int64_t count) const {
    std::vector<T> out(static_cast<size_t>(count));
    read(file, begin, count, out.data());
    return out;
  }

 private:
  std::string name_;
  int64_t size_ = 0;
  int64_t element_size_ = 0;
  std::vector<Extent> extents_;  // sorted by `first`, covering [0, size)
};

// The raw layouts of the named 1-d datasets of the HDF5 file at `path`, each
// with the element size it must have (4 for int32, 8 for int64; stored as
// little-endian integers). Throws TokenShardError naming the file and the
// dataset when one is missing, not 1-d, of another element type, compressed,
// or not fully written.
std::vector<RawArray> read_raw_arrays(const std::string& path,
                                      const std::vector<std::pair<std::string, int64_t>>& names_and_sizes);

}  // namespace moetrain::data
