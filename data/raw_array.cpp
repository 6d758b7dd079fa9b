#include "data/raw_array.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>

#include "data/token_shard.h"

namespace moetrain::data {
namespace {

[[noreturn]] void fail(const std::string& path, const std::string& what) {
  throw TokenShardError("token shard " + path + ": " + what);
}

// Closes an HDF5 id on scope exit.
struct Closer {
  hid_t id;
  herr_t (*close)(hid_t);
  ~Closer() {
    if (id >= 0) close(id);
  }
};

// The extents of dataset `dset`, or a failure naming why it cannot be read raw.
std::vector<RawArray::Extent> extents_of(const std::string& path, const std::string& name, hid_t dset, int64_t size) {
  std::vector<RawArray::Extent> extents;
  if (size == 0) return extents;
  Closer dcpl{H5Dget_create_plist(dset), H5Pclose};
  if (dcpl.id < 0) fail(path, "cannot read the layout of " + name);
  const H5D_layout_t layout = H5Pget_layout(dcpl.id);
  if (layout == H5D_CONTIGUOUS) {
    const haddr_t offset = H5Dget_offset(dset);
    if (offset == HADDR_UNDEF) fail(path, name + " has no data written");
    extents.push_back({0, size, static_cast<int64_t>(offset)});
    return extents;
  }
  if (layout != H5D_CHUNKED) fail(path, name + " has a layout that cannot be read by range");
  if (H5Pget_nfilters(dcpl.id) != 0) fail(path, name + " is compressed (filtered), so it cannot be read by range");
  Closer space{H5Dget_space(dset), H5Sclose};
  hsize_t chunks = 0;
  if (space.id < 0 || H5Dget_num_chunks(dset, space.id, &chunks) < 0) fail(path, "cannot count the chunks of " + name);
  hsize_t chunk_dims[1] = {0};
  if (H5Pget_chunk(dcpl.id, 1, chunk_dims) != 1 || chunk_dims[0] == 0)
    fail(path, "cannot read the chunk shape of " + name);
  for (hsize_t i = 0; i < chunks; ++i) {
    hsize_t coords[1] = {0};
    unsigned filter_mask = 0;
    haddr_t addr = HADDR_UNDEF;
    hsize_t bytes = 0;
    if (H5Dget_chunk_info(dset, space.id, i, coords, &filter_mask, &addr, &bytes) < 0 || addr == HADDR_UNDEF) {
      fail(path, "cannot locate chunk " + std::to_string(i) + " of " + name);
    }
    const int64_t first = static_cast<int64_t>(coords[0]);
    const int64_t count = std::min<int64_t>(static_cast<int64_t>(chunk_dims[0]), size - first);
    extents.push_back({first, count, static_cast<int64_t>(addr)});
  }
  std::sort(extents.begin(), extents.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  int64_t next = 0;
  for (const auto& e : extents) {
    if (e.first != next) fail(path, name + " is missing the chunk at element " + std::to_string(next));
    next += e.count;
  }
  if (next != size) fail(path, name + " is not fully written");
  return extents;
}

RawArray open_array(const std::string& path, hid_t file, const std::string& name, int64_t element_size) {
  if (H5Lexists(file, name.c_str(), H5P_DEFAULT) <= 0) fail(path, "no dataset " + name);
  Closer dset{H5Dopen2(file, name.c_str(), H5P_DEFAULT), H5Dclose};
  if (dset.id < 0) fail(path, "cannot open " + name);
  Closer type{H5Dget_type(dset.id), H5Tclose};
  if (type.id < 0 || H5Tget_class(type.id) != H5T_INTEGER ||
      static_cast<int64_t>(H5Tget_size(type.id)) != element_size || H5Tget_order(type.id) != H5T_ORDER_LE) {
    fail(path, name + " is not a little-endian " + std::to_string(8 * element_size) + "-bit integer array");
  }
  Closer space{H5Dget_space(dset.id), H5Sclose};
  hsize_t dims[1] = {0};
  if (space.id < 0 || H5Sget_simple_extent_ndims(space.id) != 1 ||
      H5Sget_simple_extent_dims(space.id, dims, nullptr) < 0) {
    fail(path, name + " is not a 1-d array");
  }
  const auto size = static_cast<int64_t>(dims[0]);
  return RawArray(name, size, element_size, extents_of(path, name, dset.id, size));
}

}  // namespace

ReadOnlyFile::ReadOnlyFile(const std::string& path) : path_(path) {
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
}

ReadOnlyFile::~ReadOnlyFile() {
  if (fd_ >= 0) ::close(fd_);
}

RawArray::RawArray(std::string name, int64_t size, int64_t element_size, std::vector<Extent> extents)
    : name_(std::move(name)), size_(size), element_size_(element_size), extents_(std::move(extents)) {}

void RawArray::read(const ReadOnlyFile& file, int64_t begin, int64_t count, void* out) const {
  if (begin < 0 || count < 0 || begin + count > size_) {
    fail(file.path(), "read of " + name_ + "[" + std::to_string(begin) + ", " + std::to_string(begin + count) +
                          ") outside its " + std::to_string(size_) + " elements");
  }
  auto* dst = static_cast<char*>(out);
  // The first extent that ends after `begin`.
  auto it = std::upper_bound(extents_.begin(), extents_.end(), begin,
                             [](int64_t pos, const Extent& e) { return pos < e.first + e.count; });
  while (count > 0) {
    const int64_t within = begin - it->first;
    const int64_t n = std::min(count, it->count - within);
    size_t want = static_cast<size_t>(n * element_size_);
    off_t at = static_cast<off_t>(it->file_offset + within * element_size_);
    while (want > 0) {
      const ssize_t got = ::pread(file.fd(), dst, want, at);
      if (got < 0 && errno == EINTR) continue;
      if (got < 0) fail(file.path(), "cannot read " + name_ + ": " + std::strerror(errno));
      if (got == 0) fail(file.path(), "is truncated (" + name_ + " ends early)");
      dst += got;
      at += got;
      want -= static_cast<size_t>(got);
    }
    begin += n;
    count -= n;
    ++it;
  }
}

int64_t RawArray::file_offset_of(int64_t i) const {
  auto it = std::upper_bound(extents_.begin(), extents_.end(), i,
                             [](int64_t pos, const Extent& e) { return pos < e.first + e.count; });
  if (i < 0 || it == extents_.end())
    throw std::out_of_range(name_ + ": element " + std::to_string(i) + " out of range");
  return it->file_offset + (i - it->first) * element_size_;
}

std::vector<RawArray> read_raw_arrays(const std::string& path,
                                      const std::vector<std::pair<std::string, int64_t>>& names_and_sizes) {
  H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);  // failures come back as one line, not a stack
  Closer file{H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose};
  if (file.id < 0) fail(path, "cannot open as HDF5 (missing, truncated or not a token shard)");
  std::vector<RawArray> arrays;
  for (const auto& [name, element_size] : names_and_sizes)
    arrays.push_back(open_array(path, file.id, name, element_size));
  return arrays;
}

}  // namespace moetrain::data
