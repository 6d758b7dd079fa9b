#include "export/safetensors.h"

#include <nlohmann/json.hpp>

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <set>
#include <stdexcept>

#include "data/atomic_file.h"

namespace moetrain::exporting {

namespace {

const std::vector<std::pair<torch::ScalarType, std::string>>& dtype_names() {
  static const std::vector<std::pair<torch::ScalarType, std::string>> names = {
      {torch::kFloat64, "F64"}, {torch::kFloat32, "F32"}, {torch::kFloat16, "F16"}, {torch::kBFloat16, "BF16"},
      {torch::kInt64, "I64"},   {torch::kInt32, "I32"},   {torch::kInt16, "I16"},   {torch::kInt8, "I8"},
      {torch::kUInt8, "U8"},    {torch::kBool, "BOOL"}};
  return names;
}

torch::ScalarType dtype_from_name(const std::string& name, const std::string& path) {
  for (const auto& [dtype, n] : dtype_names()) {
    if (n == name) return dtype;
  }
  throw std::runtime_error(path + ": unsupported safetensors dtype '" + name + "'");
}

// A header's list of integers (a shape, data_offsets). nlohmann's
// get<std::vector<int64_t>> would also take 1.5 (truncated) and 1e30 (out of
// int64's range: undefined behaviour); `what` names the list in errors.
std::vector<int64_t> integers(const nlohmann::ordered_json& list, const std::string& what) {
  if (!list.is_array()) throw std::runtime_error(what + " is not a list of integers");
  std::vector<int64_t> out;
  for (const auto& v : list) {
    if (!v.is_number_integer() || (v.is_number_unsigned() && v.get<uint64_t>() > uint64_t{INT64_MAX}))
      throw std::runtime_error(what + " is not a list of integers");
    out.push_back(v.get<int64_t>());
  }
  return out;
}

// Whether `offsets` is a byte range [begin, end) of the `data_size` bytes of
// data holding exactly a tensor of `shape` and `dtype`. Checked before the
// tensor is allocated: a header may claim any shape (negative dimensions, or
// more bytes than int64 counts) and any offsets, with no overflow on the way.
bool byte_range_fits(const std::vector<int64_t>& shape, torch::ScalarType dtype, const std::vector<int64_t>& offsets,
                     int64_t data_size) {
  if (offsets.size() != 2 || offsets[0] < 0 || offsets[1] < offsets[0] || offsets[1] > data_size) return false;
  int64_t bytes = static_cast<int64_t>(c10::elementSize(dtype));
  for (int64_t d : shape)
    if (d < 0 || __builtin_mul_overflow(bytes, d, &bytes)) return false;
  return offsets[1] - offsets[0] == bytes;
}

// A file mapped read-only, unmapped and closed on destruction.
class MappedFile {
 public:
  explicit MappedFile(const std::string& path) {
    fd_ = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd_ < 0) throw std::runtime_error(path + ": cannot open: " + std::strerror(errno));
    struct stat st {};
    if (::fstat(fd_, &st) != 0 || !S_ISREG(st.st_mode)) {
      ::close(fd_);
      throw std::runtime_error(path + ": not a regular file");
    }
    size_ = static_cast<int64_t>(st.st_size);
    if (size_ > 0) {
      void* at = ::mmap(nullptr, static_cast<size_t>(size_), PROT_READ, MAP_PRIVATE, fd_, 0);
      if (at == MAP_FAILED) {
        const int error = errno;
        ::close(fd_);
        throw std::runtime_error(path + ": cannot map: " + std::strerror(error));
      }
      data_ = static_cast<const uint8_t*>(at);
    }
  }
  ~MappedFile() {
    if (data_) ::munmap(const_cast<uint8_t*>(data_), static_cast<size_t>(size_));
    ::close(fd_);
  }
  MappedFile(const MappedFile&) = delete;
  MappedFile& operator=(const MappedFile&) = delete;

  const uint8_t* data() const { return data_; }
  int64_t size() const { return size_; }

  // Copies bytes [offset, offset + n) to `to` in pieces of 64 MiB, letting
  // the kernel drop each piece's pages once copied (they are read again from
  // the file should they be touched), so that no more than a piece of the
  // mapping is resident however large the tensor.
  void copy_out(int64_t offset, int64_t n, void* to) const {
    constexpr int64_t kPiece = int64_t{64} << 20;
    const int64_t page = ::sysconf(_SC_PAGESIZE);
    for (int64_t done = 0; done < n; done += kPiece) {
      const int64_t length = std::min(kPiece, n - done);
      std::memcpy(static_cast<uint8_t*>(to) + done, data_ + offset + done, static_cast<size_t>(length));
      const int64_t begin = (offset + done) / page * page;
      ::madvise(const_cast<uint8_t*>(data_) + begin, static_cast<size_t>(offset + done + length - begin),
                MADV_DONTNEED);
    }
  }

 private:
  int fd_ = -1;
  const uint8_t* data_ = nullptr;
  int64_t size_ = 0;
};

struct ByteRange {
  int64_t begin = 0, end = 0;
  std::string name;
};

// The format's rule: the tensors' byte ranges cover the data exactly, with
// no overlap and no hole (a header that does not describe its file).
void check_ranges_tile_the_data(const std::vector<ByteRange>& ranges, int64_t data_size, const std::string& path) {
  std::vector<const ByteRange*> order;
  for (const auto& r : ranges) order.push_back(&r);
  std::stable_sort(order.begin(), order.end(), [](const ByteRange* a, const ByteRange* b) {
    return a->begin != b->begin ? a->begin < b->begin : a->end < b->end;
  });
  int64_t covered = 0;
  const ByteRange* previous = nullptr;
  for (const ByteRange* r : order) {
    if (r->begin < covered) {
      throw std::runtime_error(path + ": " + previous->name + " and " + r->name + " overlap (bytes " +
                               std::to_string(previous->begin) + ".." + std::to_string(previous->end) + " and " +
                               std::to_string(r->begin) + ".." + std::to_string(r->end) + " of the data)");
    }
    if (r->begin > covered) {
      throw std::runtime_error(path + ": bytes " + std::to_string(covered) + ".." + std::to_string(r->begin) +
                               " of the data belong to no tensor (the header does not describe the file)");
    }
    if (r->end > covered || !previous) previous = r;
    covered = std::max(covered, r->end);
  }
  if (covered != data_size) {
    throw std::runtime_error(path + ": bytes " + std::to_string(covered) + ".." + std::to_string(data_size) +
                             " of the data belong to no tensor (the header does not describe the file)");
  }
}

}  // namespace

std::string safetensors_dtype(torch::ScalarType dtype) {
  for (const auto& [d, name] : dtype_names()) {
    if (d == dtype) return name;
  }
  throw std::invalid_argument(std::string("safetensors has no dtype for ") + c10::toString(dtype));
}

void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata, const WrittenBytes& written) {
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header["__metadata__"] = metadata;
  std::vector<torch::Tensor> data;
  std::set<std::string> names;
  int64_t offset = 0;
  for (const auto& [name, tensor] : tensors) {
    if (!names.insert(name).second) throw std::invalid_argument("write_safetensors: duplicate tensor " + name);
    const auto host = tensor.detach().to(torch::kCPU).contiguous();
    const int64_t bytes = static_cast<int64_t>(host.nbytes());
    header[name] = {{"dtype", safetensors_dtype(host.scalar_type())},
                    {"shape", host.sizes().vec()},
                    {"data_offsets", {offset, offset + bytes}}};
    offset += bytes;
    data.push_back(host);
  }
  std::string text = header.dump();
  text.append((8 - text.size() % 8) % 8, ' ');
  const std::string tmp = data::temporary_path_for(path);
  FILE* f = std::fopen(tmp.c_str(), "wb");
  if (f == nullptr) throw std::runtime_error("cannot write " + tmp + ": " + std::strerror(errno));
  uint8_t size_bytes[8];
  for (int i = 0; i < 8; ++i) size_bytes[i] = static_cast<uint8_t>((text.size() >> (8 * i)) & 0xFF);
  bool ok = std::fwrite(size_bytes, 1, 8, f) == 8 && std::fwrite(text.data(), 1, text.size(), f) == text.size();
  for (const auto& t : data) {
    // An empty tensor has no storage, so its data_ptr() is null, and fwrite's
    // buffer must never be null, even for 0 bytes (UBSan: nonnull-attribute).
    if (t.nbytes() == 0) continue;
    ok = ok && std::fwrite(t.data_ptr(), 1, t.nbytes(), f) == t.nbytes();
    if (written) written(static_cast<int64_t>(t.nbytes()));
  }
  ok = std::fflush(f) == 0 && ok;
  const std::string reason = ok ? "" : std::strerror(errno);
  ok = std::fclose(f) == 0 && ok;
  if (!ok) {
    std::remove(tmp.c_str());
    throw std::runtime_error("cannot write " + path + ": " + (reason.empty() ? "close failed" : reason));
  }
  data::commit_temporary(tmp, path);
}

SafetensorsFile read_safetensors(const std::string& path) {
  const MappedFile file(path);
  const int64_t file_size = file.size();
  if (file_size < 8) throw std::runtime_error(path + ": truncated (no header length)");
  uint64_t header_size = 0;
  for (int i = 0; i < 8; ++i) header_size |= static_cast<uint64_t>(file.data()[i]) << (8 * i);
  if (header_size > static_cast<uint64_t>(file_size - 8)) {
    throw std::runtime_error(path + ": header length " + std::to_string(header_size) + " runs past the file");
  }
  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(file.data() + 8, file.data() + 8 + header_size);
  } catch (const nlohmann::json::exception& e) {
    throw std::runtime_error(path + ": the header is not JSON: " + e.what());
  }
  if (!header.is_object()) throw std::runtime_error(path + ": the header is not a JSON object");
  const int64_t data_start = 8 + static_cast<int64_t>(header_size);
  const int64_t data_size = file_size - data_start;
  SafetensorsFile out;
  std::vector<ByteRange> ranges;
  for (const auto& [name, entry] : header.items()) {
    try {
      if (name == "__metadata__") {
        out.metadata = entry.get<std::map<std::string, std::string>>();
        continue;
      }
      const auto dtype = dtype_from_name(entry.at("dtype").get<std::string>(), path);
      const auto shape = integers(entry.at("shape"), path + ": " + name + ": shape");
      const auto offsets = integers(entry.at("data_offsets"), path + ": " + name + ": data_offsets");
      if (!byte_range_fits(shape, dtype, offsets, data_size)) {
        throw std::runtime_error(path + ": " + name + ": its byte range does not fit its dtype and shape or the file");
      }
      ranges.push_back({offsets[0], offsets[1], name});
      out.tensors.emplace_back(name, torch::empty(shape, torch::TensorOptions().dtype(dtype)));
    } catch (const nlohmann::json::exception& e) {
      throw std::runtime_error(path + ": " + name + ": malformed header entry: " + e.what());
    }
  }
  check_ranges_tile_the_data(ranges, data_size, path);
  // Tensor by tensor, each one's mapped pages dropped once copied: the read
  // holds the tensors and one tensor's pages, not the file twice.
  for (size_t i = 0; i < out.tensors.size(); ++i) {
    file.copy_out(data_start + ranges[i].begin, ranges[i].end - ranges[i].begin, out.tensors[i].second.data_ptr());
  }
  return out;
}

std::vector<std::string> write_safetensors_sharded(const std::string& dir, const std::string& stem,
                                                   const NamedTensors& tensors, int64_t max_shard_bytes,
                                                   const std::map<std::string, std::string>& metadata,
                                                   const WrittenBytes& written) {
  std::vector<NamedTensors> shards(1);
  int64_t total = 0, in_shard = 0;
  for (const auto& item : tensors) {
    const auto bytes = static_cast<int64_t>(item.second.nbytes());
    if (in_shard > 0 && in_shard + bytes > max_shard_bytes) {
      shards.emplace_back();
      in_shard = 0;
    }
    shards.back().push_back(item);
    in_shard += bytes;
    total += bytes;
  }
  if (shards.size() == 1) {
    write_safetensors(dir + "/" + stem + ".safetensors", tensors, metadata, written);
    return {stem + ".safetensors"};
  }
  std::vector<std::string> files;
  nlohmann::ordered_json weight_map = nlohmann::ordered_json::object();
  for (size_t k = 0; k < shards.size(); ++k) {
    char name[64];
    std::snprintf(name, sizeof(name), "-%05zu-of-%05zu.safetensors", k + 1, shards.size());
    const std::string file = stem + name;
    write_safetensors(dir + "/" + file, shards[k], metadata, written);
    for (const auto& item : shards[k]) weight_map[item.first] = file;
    files.push_back(file);
  }
  const nlohmann::ordered_json index = {{"metadata", {{"total_size", total}}}, {"weight_map", weight_map}};
  data::write_file_atomically(dir + "/" + stem + ".safetensors.index.json", index.dump(2) + "\n");
  files.push_back(stem + ".safetensors.index.json");
  return files;
}

}  // namespace moetrain::exporting
