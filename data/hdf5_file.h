// Hdf5File: a small RAII wrapper over the HDF5 1.10 C API for the two things
// moetrain stores in HDF5: token shards and checkpoint shards.
//
// Tensors are written as datasets with an attribute "dtype" naming the torch
// dtype. HDF5 1.10 has no 16-bit float type, so bfloat16 and float16 are stored
// as uint16 bit patterns (dtype attribute "bfloat16" / "float16") and read back
// bit-exactly. Dataset names may contain '/', creating intermediate groups.
//
// Every failure throws Hdf5Error naming the file and the object; the HDF5
// library's own error stack printing is switched off.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace moetrain::data {

// Call first in main(), before any other HDF5 call: HDF5 then does not close
// the files still open at exit. A file whose close failed (a full disk) stays
// in HDF5's tables half torn down, and closing it again at exit crashes the
// process (H5F__close_cb from H5_term_library); every file moetrain writes is
// closed explicitly, so nothing is lost by skipping that last sweep.
void skip_hdf5_shutdown_at_exit();

class Hdf5Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// How write_tensor stores a dataset. By default: contiguous up to 1 MiB,
// chunked in about 1 MiB chunks beyond, unfiltered (a checkpoint's layout).
struct DatasetLayout {
  // 1..9: compressed in chunks of about 16 KiB with HDF5's byte-shuffle and
  // deflate filters at this zlib level (small chunks keep a read of a few
  // elements cheap: a reader inflates whole chunks). 0: uncompressed.
  int deflate_level = 0;
};

class Hdf5File {
 public:
  enum class Mode { Read, Create };  // Create truncates an existing file

  Hdf5File(const std::string& path, Mode mode);
  ~Hdf5File();
  Hdf5File(Hdf5File&& other) noexcept;
  Hdf5File& operator=(Hdf5File&& other) noexcept;
  Hdf5File(const Hdf5File&) = delete;
  Hdf5File& operator=(const Hdf5File&) = delete;

  const std::string& path() const { return path_; }

  // Writes a (CPU or not, contiguous or not) tensor; 0-d tensors are allowed.
  void write_tensor(const std::string& name, const torch::Tensor& tensor, const DatasetLayout& layout = {});
  // Reads a whole dataset into a CPU tensor of the stored dtype.
  torch::Tensor read_tensor(const std::string& name) const;
  // Reads the hyperslab [offset, offset + count) of an N-d dataset.
  torch::Tensor read_slice(const std::string& name, const std::vector<int64_t>& offset,
                           const std::vector<int64_t>& count) const;

  bool exists(const std::string& name) const;
  std::vector<int64_t> shape(const std::string& name) const;
  // Names of the direct members of a group ("" or "/" for the root), sorted.
  std::vector<std::string> list(const std::string& group) const;

  // Attributes on a dataset or group ("/" for the file itself).
  void set_attr(const std::string& object, const std::string& key, int64_t value);
  void set_attr(const std::string& object, const std::string& key, double value);
  void set_attr(const std::string& object, const std::string& key, const std::string& value);
  void set_attr(const std::string& object, const std::string& key, const std::vector<int64_t>& value);
  bool has_attr(const std::string& object, const std::string& key) const;
  int64_t attr_int(const std::string& object, const std::string& key) const;
  double attr_double(const std::string& object, const std::string& key) const;
  std::string attr_string(const std::string& object, const std::string& key) const;
  std::vector<int64_t> attr_ints(const std::string& object, const std::string& key) const;

  // Flushes everything written so far to disk.
  void flush();

 private:
  int64_t open_object(const std::string& name) const;  // hid_t
  void ensure_parent_groups(const std::string& name);
  [[noreturn]] void fail(const std::string& what, const std::string& object) const;

  std::string path_;
  int64_t file_ = -1;  // hid_t
};

}  // namespace moetrain::data
