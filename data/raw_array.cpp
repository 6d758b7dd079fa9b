#include "data/raw_array.h"

#include <fcntl.h>
#include <hdf5.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <atomic>
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

struct Layout {
  std::vector<RawArray::Extent> extents;
  std::vector<RawArray::Filter> filters;
  int64_t chunk_elements = 0;
};

// The filter pipeline of a chunked dataset: shuffle and deflate only.
std::vector<RawArray::Filter> filters_of(const std::string& path, const std::string& name, hid_t dcpl) {
  std::vector<RawArray::Filter> filters;
  const int n = H5Pget_nfilters(dcpl);
  if (n < 0) fail(path, "cannot read the filters of " + name);
  for (int i = 0; i < n; ++i) {
    unsigned flags = 0;
    size_t values = 0;
    char filter_name[64] = {0};
    const H5Z_filter_t id = H5Pget_filter2(dcpl, static_cast<unsigned>(i), &flags, &values, nullptr,
                                           sizeof(filter_name), filter_name, nullptr);
    if (id == H5Z_FILTER_SHUFFLE)
      filters.push_back(RawArray::Filter::Shuffle);
    else if (id == H5Z_FILTER_DEFLATE)
      filters.push_back(RawArray::Filter::Deflate);
    else
      fail(path, name + " is compressed with HDF5 filter " + std::to_string(id) +
                     ", which cannot be read by range (only shuffle and deflate can)");
  }
  return filters;
}

// Where the elements of dataset `dset` lie, or a failure naming why they cannot be read by range.
Layout layout_of(const std::string& path, const std::string& name, hid_t dset, int64_t size) {
  Layout out;
  if (size == 0) return out;
  Closer dcpl{H5Dget_create_plist(dset), H5Pclose};
  if (dcpl.id < 0) fail(path, "cannot read the layout of " + name);
  const H5D_layout_t layout = H5Pget_layout(dcpl.id);
  if (layout == H5D_CONTIGUOUS) {
    const haddr_t offset = H5Dget_offset(dset);
    if (offset == HADDR_UNDEF) fail(path, name + " has no data written");
    out.extents.push_back({0, size, static_cast<int64_t>(offset)});
    return out;
  }
  if (layout != H5D_CHUNKED) fail(path, name + " has a layout that cannot be read by range");
  out.filters = filters_of(path, name, dcpl.id);
  Closer space{H5Dget_space(dset), H5Sclose};
  hsize_t chunks = 0;
  if (space.id < 0 || H5Dget_num_chunks(dset, space.id, &chunks) < 0) fail(path, "cannot count the chunks of " + name);
  hsize_t chunk_dims[1] = {0};
  if (H5Pget_chunk(dcpl.id, 1, chunk_dims) != 1 || chunk_dims[0] == 0)
    fail(path, "cannot read the chunk shape of " + name);
  out.chunk_elements = static_cast<int64_t>(chunk_dims[0]);
  for (hsize_t i = 0; i < chunks; ++i) {
    hsize_t coords[1] = {0};
    unsigned filter_mask = 0;
    haddr_t addr = HADDR_UNDEF;
    hsize_t bytes = 0;
    if (H5Dget_chunk_info(dset, space.id, i, coords, &filter_mask, &addr, &bytes) < 0 || addr == HADDR_UNDEF) {
      fail(path, "cannot locate chunk " + std::to_string(i) + " of " + name);
    }
    const int64_t first = static_cast<int64_t>(coords[0]);
    const int64_t count = std::min<int64_t>(out.chunk_elements, size - first);
    out.extents.push_back({first, count, static_cast<int64_t>(addr), static_cast<int64_t>(bytes), filter_mask});
  }
  std::sort(out.extents.begin(), out.extents.end(), [](const auto& a, const auto& b) { return a.first < b.first; });
  int64_t next = 0;
  for (const auto& e : out.extents) {
    if (e.first != next) fail(path, name + " is missing the chunk at element " + std::to_string(next));
    next += e.count;
  }
  if (next != size) fail(path, name + " is not fully written");
  return out;
}

// Reads exactly `bytes` bytes at `at`; a short read means a truncated file.
void pread_exactly(const ReadOnlyFile& file, const std::string& name, char* dst, size_t bytes, off_t at) {
  while (bytes > 0) {
    const ssize_t got = ::pread(file.fd(), dst, bytes, at);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) fail(file.path(), "cannot read " + name + ": " + std::strerror(errno));
    if (got == 0) fail(file.path(), "is truncated (" + name + " ends early)");
    dst += got;
    at += got;
    bytes -= static_cast<size_t>(got);
  }
}

// HDF5's shuffle stores byte j of every element together (all first bytes,
// then all second bytes, ...); this puts them back.
void unshuffle(const std::vector<char>& in, std::vector<char>& out, int64_t element_size) {
  out.resize(in.size());
  const size_t e = static_cast<size_t>(element_size);
  const size_t n = in.size() / e;
  for (size_t j = 0; j < e; ++j)
    for (size_t i = 0; i < n; ++i) out[i * e + j] = in[j * n + i];
  std::copy(in.begin() + static_cast<std::ptrdiff_t>(n * e), in.end(),
            out.begin() + static_cast<std::ptrdiff_t>(n * e));
}

// The last chunk this thread decoded, by file and position.
struct ChunkCache {
  uint64_t file_id = 0;
  int64_t file_offset = -1;
  std::vector<char> decoded;
  std::vector<char> stored, scratch;
};
thread_local ChunkCache chunk_cache;

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
  Layout layout = layout_of(path, name, dset.id, size);
  return RawArray(name, size, element_size, std::move(layout.extents), std::move(layout.filters),
                  layout.chunk_elements);
}

}  // namespace

ReadOnlyFile::ReadOnlyFile(const std::string& path) : path_(path) {
  static std::atomic<uint64_t> next_id{1};
  id_ = next_id.fetch_add(1);
  fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd_ < 0) fail(path, std::string("cannot open: ") + std::strerror(errno));
}

ReadOnlyFile::~ReadOnlyFile() {
  if (fd_ >= 0) ::close(fd_);
}

RawArray::RawArray(std::string name, int64_t size, int64_t element_size, std::vector<Extent> extents,
                   std::vector<Filter> filters, int64_t chunk_elements)
    : name_(std::move(name)),
      size_(size),
      element_size_(element_size),
      extents_(std::move(extents)),
      filters_(std::move(filters)),
      chunk_elements_(chunk_elements) {}

const char* RawArray::decoded_chunk(const ReadOnlyFile& file, const Extent& extent) const {
  ChunkCache& cache = chunk_cache;
  if (cache.file_id == file.id() && cache.file_offset == extent.file_offset) return cache.decoded.data();
  cache.file_id = 0;  // invalid until this chunk is decoded
  const std::string what = name_ + " chunk at element " + std::to_string(extent.first);
  cache.stored.resize(static_cast<size_t>(extent.stored_bytes));
  pread_exactly(file, name_, cache.stored.data(), cache.stored.size(), static_cast<off_t>(extent.file_offset));
  const size_t decoded_bytes = static_cast<size_t>(chunk_elements_ * element_size_);
  // Undo the filters in reverse order, skipping those the chunk's mask says were not applied.
  std::vector<char>* data = &cache.stored;
  for (size_t k = filters_.size(); k-- > 0;) {
    if (extent.filter_mask & (1u << k)) continue;
    std::vector<char>& out = data == &cache.stored ? cache.scratch : cache.stored;
    if (filters_[k] == Filter::Deflate) {
      out.resize(decoded_bytes);
      uLongf got = static_cast<uLongf>(decoded_bytes);
      const int rc = ::uncompress(reinterpret_cast<Bytef*>(out.data()), &got,
                                  reinterpret_cast<const Bytef*>(data->data()), static_cast<uLong>(data->size()));
      if (rc != Z_OK || got != decoded_bytes)
        fail(file.path(), what + " does not inflate (" + (rc == Z_OK ? "wrong size" : std::string(zError(rc))) +
                              "): the file is damaged");
    } else {
      unshuffle(*data, out, element_size_);
    }
    data = &out;
  }
  if (data->size() < decoded_bytes) fail(file.path(), what + " is shorter than its chunk: the file is damaged");
  cache.decoded.swap(*data);
  cache.file_id = file.id();
  cache.file_offset = extent.file_offset;
  return cache.decoded.data();
}

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
    const size_t bytes = static_cast<size_t>(n * element_size_);
    if (filters_.empty()) {
      pread_exactly(file, name_, dst, bytes, static_cast<off_t>(it->file_offset + within * element_size_));
    } else {
      std::memcpy(dst, decoded_chunk(file, *it) + within * element_size_, bytes);
    }
    dst += bytes;
    begin += n;
    count -= n;
    ++it;
  }
}

int64_t RawArray::file_offset_of(int64_t i) const {
  if (compressed()) throw std::logic_error(name_ + ": a compressed array's elements have no file offset");
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
