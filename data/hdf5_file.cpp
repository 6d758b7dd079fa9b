// Hdf5File over the HDF5 1.10 C API. Every HDF5 handle is owned by a small
// RAII guard so an exception never leaks one; every failing call is turned
// into an Hdf5Error that names the file, the object and HDF5's own innermost
// reason (e.g. "truncated file"), read from the error stack before anything
// else can clear it.
#include "data/hdf5_file.h"

#include <hdf5.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <memory>
#include <sstream>
#include <utility>

namespace moetrain::data {

void skip_hdf5_shutdown_at_exit() { H5dont_atexit(); }

namespace {

// HDF5 prints its whole error stack to stderr on every failure by default;
// moetrain reports failures through exceptions instead. The setting is
// per-process (serial HDF5), so switching it off on every open is idempotent.
void silence_hdf5_errors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }

// The most specific message on HDF5's error stack ("truncated file: eof =
// ...", "object 'x' doesn't exist"), or "" when the stack is empty.
std::string hdf5_reason() {
  std::string reason;
  H5Ewalk2(
      H5E_DEFAULT, H5E_WALK_UPWARD,
      [](unsigned n, const H5E_error2_t* err, void* data) -> herr_t {
        auto* out = static_cast<std::string*>(data);
        if (n == 0 && err->desc != nullptr) *out = err->desc;
        return 0;
      },
      &reason);
  H5Eclear2(H5E_DEFAULT);
  // Keep error messages on one line.
  std::replace(reason.begin(), reason.end(), '\n', ' ');
  return reason;
}

// Owns one hid_t and closes it with the matching H5*close function.
class Handle {
 public:
  using Closer = herr_t (*)(hid_t);
  Handle(hid_t id, Closer closer) : id_(id), closer_(closer) {}
  ~Handle() {
    if (id_ >= 0) closer_(id_);
  }
  Handle(const Handle&) = delete;
  Handle& operator=(const Handle&) = delete;
  hid_t get() const { return id_; }
  bool valid() const { return id_ >= 0; }

 private:
  hid_t id_;
  Closer closer_;
};

// How one torch dtype is stored: the name in the "dtype" attribute, the
// HDF5 type on disk (little-endian, fixed) and in memory (native), and what a
// stored dataset must look like to be read back as this dtype.
struct StoredType {
  torch::Dtype dtype;
  const char* name;
  H5T_class_t cls;
  size_t size;
  bool is_signed;
};

const std::vector<StoredType>& stored_types() {
  static const std::vector<StoredType> types = {
      {torch::kFloat32, "float32", H5T_FLOAT, 4, true},
      {torch::kFloat64, "float64", H5T_FLOAT, 8, true},
      {torch::kBFloat16, "bfloat16", H5T_INTEGER, 2, false},  // uint16 bit pattern
      {torch::kFloat16, "float16", H5T_INTEGER, 2, false},    // uint16 bit pattern
      {torch::kInt8, "int8", H5T_INTEGER, 1, true},
      {torch::kInt16, "int16", H5T_INTEGER, 2, true},
      {torch::kInt32, "int32", H5T_INTEGER, 4, true},
      {torch::kInt64, "int64", H5T_INTEGER, 8, true},
      {torch::kUInt8, "uint8", H5T_INTEGER, 1, false},
      {torch::kBool, "bool", H5T_INTEGER, 1, false},  // uint8 0/1
      {torch::kUInt16, "uint16", H5T_INTEGER, 2, false},
      {torch::kUInt32, "uint32", H5T_INTEGER, 4, false},
      {torch::kUInt64, "uint64", H5T_INTEGER, 8, false},
  };
  return types;
}

const StoredType* stored_type_of(torch::Dtype dtype) {
  for (const auto& t : stored_types())
    if (t.dtype == dtype) return &t;
  return nullptr;
}

const StoredType* stored_type_named(const std::string& name) {
  for (const auto& t : stored_types())
    if (name == t.name) return &t;
  return nullptr;
}

// A dataset without a "dtype" attribute (written by another tool, e.g. h5py):
// the plain HDF5 type decides.
const StoredType* stored_type_inferred(H5T_class_t cls, size_t size, bool is_signed) {
  for (const auto& t : stored_types()) {
    if (t.dtype == torch::kBFloat16 || t.dtype == torch::kFloat16 || t.dtype == torch::kBool) continue;
    if (t.cls == cls && t.size == size && (cls == H5T_FLOAT || t.is_signed == is_signed)) return &t;
  }
  return nullptr;
}

hid_t memory_type(const StoredType& t) {
  if (t.cls == H5T_FLOAT) return t.size == 4 ? H5T_NATIVE_FLOAT : H5T_NATIVE_DOUBLE;
  switch (t.size) {
    case 1: return t.is_signed ? H5T_NATIVE_INT8 : H5T_NATIVE_UINT8;
    case 2: return t.is_signed ? H5T_NATIVE_INT16 : H5T_NATIVE_UINT16;
    case 4: return t.is_signed ? H5T_NATIVE_INT32 : H5T_NATIVE_UINT32;
    default: return t.is_signed ? H5T_NATIVE_INT64 : H5T_NATIVE_UINT64;
  }
}

hid_t file_type(const StoredType& t) {
  if (t.cls == H5T_FLOAT) return t.size == 4 ? H5T_IEEE_F32LE : H5T_IEEE_F64LE;
  switch (t.size) {
    case 1: return t.is_signed ? H5T_STD_I8LE : H5T_STD_U8LE;
    case 2: return t.is_signed ? H5T_STD_I16LE : H5T_STD_U16LE;
    case 4: return t.is_signed ? H5T_STD_I32LE : H5T_STD_U32LE;
    default: return t.is_signed ? H5T_STD_I64LE : H5T_STD_U64LE;
  }
}

// Object names are relative to the root: "a/b" and "/a/b" are the same.
std::string normalise(const std::string& name) {
  size_t start = name.find_first_not_of('/');
  if (start == std::string::npos) return "";
  std::string out = name.substr(start);
  while (!out.empty() && out.back() == '/') out.pop_back();
  return out;
}

std::string root_or(const std::string& name) { return name.empty() ? "/" : name; }

// Chunks of about 1 MiB: large enough that per-chunk overhead is negligible,
// small enough that a hyperslab read (read_slice) touches little beyond what
// it asked for. Smaller datasets stay contiguous.
constexpr size_t kChunkBytes = size_t{1} << 20;
// Compressed datasets: a reader inflates whole chunks, so they are smaller.
constexpr size_t kCompressedChunkBytes = size_t{1} << 14;

std::vector<hsize_t> chunk_shape(const std::vector<hsize_t>& dims, size_t element_size, size_t chunk_bytes) {
  std::vector<hsize_t> chunk = dims;
  size_t bytes = element_size;
  for (hsize_t d : dims) bytes *= static_cast<size_t>(d);
  for (size_t i = 0; i < chunk.size() && bytes > chunk_bytes; ++i) {
    size_t rest = bytes / static_cast<size_t>(chunk[i]);  // bytes of one index along dim i
    hsize_t keep = std::max<hsize_t>(1, chunk_bytes / std::max<size_t>(rest, 1));
    if (keep < chunk[i]) {
      chunk[i] = keep;
      bytes = rest * keep;
    }
  }
  return chunk;
}

// Sets a dataset's creation properties: no time stamps, and the chunks and
// filters of `layout`. Returns what failed, or "".
std::string set_layout(hid_t dcpl, const std::vector<hsize_t>& dims, int64_t numel, size_t element_size,
                       const DatasetLayout& layout) {
  // No modification times in the object headers: the same tensors give the
  // same file bytes whenever they are written (reproducible shards).
  if (H5Pset_obj_track_times(dcpl, false) < 0) return "cannot switch off time tracking";
  if (layout.deflate_level < 0 || layout.deflate_level > 9)
    return "deflate level " + std::to_string(layout.deflate_level) + " is not in 0..9";
  const bool compress = layout.deflate_level > 0 && !dims.empty() && numel > 0;
  const size_t chunk_bytes = compress ? kCompressedChunkBytes : kChunkBytes;
  const size_t bytes = static_cast<size_t>(numel) * element_size;
  if (compress || (!dims.empty() && numel > 0 && bytes > chunk_bytes)) {
    std::vector<hsize_t> chunk = chunk_shape(dims, element_size, chunk_bytes);
    if (H5Pset_chunk(dcpl, static_cast<int>(chunk.size()), chunk.data()) < 0) return "cannot set chunk shape";
  }
  if (compress && (H5Pset_shuffle(dcpl) < 0 || H5Pset_deflate(dcpl, static_cast<unsigned>(layout.deflate_level)) < 0))
    return "cannot set the shuffle and deflate filters";
  return "";
}

// A whole read allocates the dataset's full shape before reading it, so a
// shape the file cannot hold must fail here, as an Hdf5Error, and not in the
// allocator (a damaged dataspace claimed 2^59 bytes; a chunked dataset whose
// chunks were never written would read back as fill values). Unfiltered data
// stores every byte; deflate (the one filter moetrain writes; shuffle keeps
// sizes) shrinks data at most 1032-fold. Returns what is wrong, or "".
std::string check_stored_size(hid_t dset, const std::vector<hsize_t>& dims, size_t element_size) {
  uint64_t bytes = element_size;
  for (hsize_t d : dims)
    if (__builtin_mul_overflow(bytes, static_cast<uint64_t>(d), &bytes) || bytes > uint64_t{INT64_MAX})
      return "its shape is too large to read";
  if (bytes == 0) return "";
  Handle dcpl(H5Dget_create_plist(dset), H5Pclose);
  const int filters = dcpl.valid() ? H5Pget_nfilters(dcpl.get()) : -1;
  if (filters < 0) return "cannot read its creation properties";
  constexpr uint64_t kMaxDeflateRatio = 1032;
  const uint64_t stored = H5Dget_storage_size(dset);
  const uint64_t most = filters == 0 ? stored : std::min(stored, UINT64_MAX / kMaxDeflateRatio) * kMaxDeflateRatio;
  if (bytes <= most) return "";
  return "its shape needs " + std::to_string(bytes) + " bytes but the file stores " + std::to_string(stored) +
         " for it (damaged, or never written)";
}

}  // namespace

Hdf5File::Hdf5File(const std::string& path, Mode mode) : path_(path) {
  silence_hdf5_errors();
  if (mode == Mode::Create) {
    file_ = H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    if (file_ < 0) throw Hdf5Error("HDF5 file " + path + ": cannot create (" + hdf5_reason() + ")");
  } else {
    // H5Fis_hdf5 distinguishes "not an HDF5 file" from other open failures so
    // the message says which.
    htri_t is_hdf5 = H5Fis_hdf5(path.c_str());
    if (is_hdf5 == 0) {
      H5Eclear2(H5E_DEFAULT);
      throw Hdf5Error("HDF5 file " + path + ": not an HDF5 file (no HDF5 signature)");
    }
    file_ = H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file_ < 0) throw Hdf5Error("HDF5 file " + path + ": cannot open (" + hdf5_reason() + ")");
  }
}

Hdf5File::~Hdf5File() {
  if (file_ >= 0) H5Fclose(file_);
}

Hdf5File::Hdf5File(Hdf5File&& other) noexcept : path_(std::move(other.path_)), file_(std::exchange(other.file_, -1)) {}

Hdf5File& Hdf5File::operator=(Hdf5File&& other) noexcept {
  if (this != &other) {
    if (file_ >= 0) H5Fclose(file_);
    path_ = std::move(other.path_);
    file_ = std::exchange(other.file_, -1);
  }
  return *this;
}

void Hdf5File::fail(const std::string& what, const std::string& object) const {
  std::string reason = hdf5_reason();
  std::string message = "HDF5 file " + path_ + ", object '" + root_or(object) + "': " + what;
  if (!reason.empty()) message += " (" + reason + ")";
  throw Hdf5Error(message);
}

void Hdf5File::ensure_parent_groups(const std::string& name) {
  size_t pos = 0;
  while ((pos = name.find('/', pos)) != std::string::npos) {
    std::string prefix = name.substr(0, pos);
    ++pos;
    if (prefix.empty() || prefix.back() == '/') continue;
    htri_t exists = H5Lexists(file_, prefix.c_str(), H5P_DEFAULT);
    if (exists < 0) fail("cannot look up group", prefix);
    if (exists > 0) {
      H5O_info_t info;
      if (H5Oget_info_by_name(file_, prefix.c_str(), &info, H5P_DEFAULT) < 0) fail("cannot inspect object", prefix);
      if (info.type != H5O_TYPE_GROUP) fail("exists and is not a group", prefix);
      continue;
    }
    Handle gcpl(H5Pcreate(H5P_GROUP_CREATE), H5Pclose);
    if (!gcpl.valid() || H5Pset_obj_track_times(gcpl.get(), false) < 0) fail("cannot create property list", prefix);
    Handle group(H5Gcreate2(file_, prefix.c_str(), H5P_DEFAULT, gcpl.get(), H5P_DEFAULT), H5Gclose);
    if (!group.valid()) fail("cannot create group", prefix);
  }
}

int64_t Hdf5File::open_object(const std::string& name) const {
  std::string n = normalise(name);
  if (!exists(n)) fail("no such object", n);
  hid_t id = H5Oopen(file_, root_or(n).c_str(), H5P_DEFAULT);
  if (id < 0) fail("cannot open object", n);
  return id;
}

bool Hdf5File::exists(const std::string& name) const {
  std::string n = normalise(name);
  if (n.empty()) return true;
  // HDF5 1.10's H5Lexists fails (rather than answering false) when an
  // intermediate group is missing, so walk the path one link at a time.
  size_t pos = 0;
  while (true) {
    size_t next = n.find('/', pos);
    std::string prefix = n.substr(0, next);
    htri_t e = H5Lexists(file_, prefix.c_str(), H5P_DEFAULT);
    if (e <= 0) {
      H5Eclear2(H5E_DEFAULT);
      return false;
    }
    if (next == std::string::npos) break;
    pos = next + 1;
  }
  htri_t ok = H5Oexists_by_name(file_, n.c_str(), H5P_DEFAULT);  // false for dangling links
  H5Eclear2(H5E_DEFAULT);
  return ok > 0;
}

void Hdf5File::write_tensor(const std::string& raw_name, const torch::Tensor& tensor, const DatasetLayout& layout) {
  const std::string name = normalise(raw_name);
  if (name.empty()) fail("a dataset needs a name", raw_name);
  unsigned intent = 0;
  if (H5Fget_intent(file_, &intent) < 0) fail("cannot query file mode", name);
  if ((intent & H5F_ACC_RDWR) == 0) fail("file is open read-only; cannot write dataset", name);

  const StoredType* type = stored_type_of(tensor.scalar_type());
  if (type == nullptr) fail(std::string("unsupported tensor dtype ") + c10::toString(tensor.scalar_type()), name);

  torch::Tensor t = tensor.detach().to(torch::kCPU).contiguous();
  if (t.scalar_type() == torch::kBool) t = t.to(torch::kUInt8);

  ensure_parent_groups(name);
  // Rewriting a dataset replaces it (checkpoint code may save the same name
  // twice into one file); HDF5 cannot change a dataset's shape in place.
  if (exists(name)) {
    if (H5Ldelete(file_, name.c_str(), H5P_DEFAULT) < 0) fail("cannot replace dataset", name);
  }

  std::vector<hsize_t> dims(t.sizes().begin(), t.sizes().end());
  Handle space(
      dims.empty() ? H5Screate(H5S_SCALAR) : H5Screate_simple(static_cast<int>(dims.size()), dims.data(), nullptr),
      H5Sclose);
  if (!space.valid()) fail("cannot create dataspace", name);

  Handle dcpl(H5Pcreate(H5P_DATASET_CREATE), H5Pclose);
  if (!dcpl.valid()) fail("cannot create property list", name);
  const std::string layout_failure = set_layout(dcpl.get(), dims, t.numel(), type->size, layout);
  if (!layout_failure.empty()) fail(layout_failure, name);

  Handle dset(H5Dcreate2(file_, name.c_str(), file_type(*type), space.get(), H5P_DEFAULT, dcpl.get(), H5P_DEFAULT),
              H5Dclose);
  if (!dset.valid()) fail("cannot create dataset", name);
  if (t.numel() > 0) {
    if (H5Dwrite(dset.get(), memory_type(*type), H5S_ALL, H5S_ALL, H5P_DEFAULT, t.data_ptr()) < 0)
      fail("cannot write dataset", name);
  }
  set_attr(name, "dtype", std::string(type->name));
}

torch::Tensor Hdf5File::read_tensor(const std::string& name) const { return read_slice(name, {}, {}); }

torch::Tensor Hdf5File::read_slice(const std::string& raw_name, const std::vector<int64_t>& offset,
                                   const std::vector<int64_t>& count) const {
  const std::string name = normalise(raw_name);
  const bool whole = offset.empty() && count.empty();
  if (!exists(name)) fail("no such dataset", name);
  Handle dset(H5Dopen2(file_, root_or(name).c_str(), H5P_DEFAULT), H5Dclose);
  if (!dset.valid()) fail("cannot open dataset (is it a group?)", name);

  Handle ftype(H5Dget_type(dset.get()), H5Tclose);
  if (!ftype.valid()) fail("cannot read datatype", name);
  H5T_class_t cls = H5Tget_class(ftype.get());
  size_t size = H5Tget_size(ftype.get());
  bool is_signed = cls == H5T_INTEGER && H5Tget_sign(ftype.get()) == H5T_SGN_2;

  const StoredType* type = nullptr;
  if (has_attr(name, "dtype")) {
    std::string dtype_name = attr_string(name, "dtype");
    type = stored_type_named(dtype_name);
    if (type == nullptr) fail("unknown dtype attribute '" + dtype_name + "'", name);
    if (type->cls != cls || type->size != size || (cls == H5T_INTEGER && type->is_signed != is_signed))
      fail("dtype attribute '" + dtype_name + "' does not match the stored HDF5 type", name);
  } else {
    type = stored_type_inferred(cls, size, is_signed);
    if (type == nullptr) fail("unsupported HDF5 datatype (no dtype attribute)", name);
  }

  Handle fspace(H5Dget_space(dset.get()), H5Sclose);
  if (!fspace.valid()) fail("cannot read dataspace", name);
  int rank = H5Sget_simple_extent_ndims(fspace.get());
  if (rank < 0) fail("cannot read dataspace rank", name);
  std::vector<hsize_t> dims(rank);
  if (rank > 0 && H5Sget_simple_extent_dims(fspace.get(), dims.data(), nullptr) < 0)
    fail("cannot read dataspace dims", name);

  std::vector<int64_t> out_shape(dims.begin(), dims.end());
  std::unique_ptr<Handle> mspace;
  hid_t mem_space_id = H5S_ALL;
  if (!whole) {
    if (static_cast<int>(offset.size()) != rank || static_cast<int>(count.size()) != rank) {
      std::ostringstream msg;
      msg << "slice of rank " << offset.size() << "/" << count.size() << " for a dataset of rank " << rank;
      fail(msg.str(), name);
    }
    for (int d = 0; d < rank; ++d) {
      if (offset[d] < 0 || count[d] < 0 || static_cast<hsize_t>(offset[d]) + static_cast<hsize_t>(count[d]) > dims[d]) {
        std::ostringstream msg;
        msg << "slice [" << offset[d] << ", " << offset[d] + count[d] << ") out of bounds for dim " << d << " of size "
            << dims[d];
        fail(msg.str(), name);
      }
    }
    out_shape = count;
  }

  if (whole) {
    const std::string too_large = check_stored_size(dset.get(), dims, type->size);
    if (!too_large.empty()) fail(too_large, name);
  }
  torch::Dtype read_dtype = type->dtype == torch::kBool ? torch::kUInt8 : type->dtype;
  torch::Tensor out = torch::empty(out_shape, torch::TensorOptions().dtype(read_dtype));
  if (out.numel() > 0) {
    if (!whole && rank > 0) {
      std::vector<hsize_t> start(offset.begin(), offset.end());
      std::vector<hsize_t> cnt(count.begin(), count.end());
      if (H5Sselect_hyperslab(fspace.get(), H5S_SELECT_SET, start.data(), nullptr, cnt.data(), nullptr) < 0)
        fail("cannot select hyperslab", name);
      mspace = std::make_unique<Handle>(H5Screate_simple(rank, cnt.data(), nullptr), H5Sclose);
      if (!mspace->valid()) fail("cannot create memory dataspace", name);
      mem_space_id = mspace->get();
    }
    hid_t file_space_id = (whole || rank == 0) ? H5S_ALL : fspace.get();
    if (H5Dread(dset.get(), memory_type(*type), mem_space_id, file_space_id, H5P_DEFAULT, out.data_ptr()) < 0)
      fail("cannot read dataset", name);
  }
  if (type->dtype == torch::kBool) out = out.ne(0);
  return out;
}

std::vector<int64_t> Hdf5File::shape(const std::string& raw_name) const {
  const std::string name = normalise(raw_name);
  if (!exists(name)) fail("no such dataset", name);
  Handle dset(H5Dopen2(file_, root_or(name).c_str(), H5P_DEFAULT), H5Dclose);
  if (!dset.valid()) fail("cannot open dataset (is it a group?)", name);
  Handle space(H5Dget_space(dset.get()), H5Sclose);
  if (!space.valid()) fail("cannot read dataspace", name);
  int rank = H5Sget_simple_extent_ndims(space.get());
  if (rank < 0) fail("cannot read dataspace rank", name);
  std::vector<hsize_t> dims(rank);
  if (rank > 0 && H5Sget_simple_extent_dims(space.get(), dims.data(), nullptr) < 0)
    fail("cannot read dataspace dims", name);
  return std::vector<int64_t>(dims.begin(), dims.end());
}

std::vector<std::string> Hdf5File::list(const std::string& raw_group) const {
  const std::string group = normalise(raw_group);
  if (!exists(group)) fail("no such group", group);
  Handle g(H5Gopen2(file_, root_or(group).c_str(), H5P_DEFAULT), H5Gclose);
  if (!g.valid()) fail("cannot open group (is it a dataset?)", group);
  H5G_info_t info;
  if (H5Gget_info(g.get(), &info) < 0) fail("cannot read group info", group);
  std::vector<std::string> names;
  names.reserve(info.nlinks);
  for (hsize_t i = 0; i < info.nlinks; ++i) {
    ssize_t len = H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, nullptr, 0, H5P_DEFAULT);
    if (len < 0) fail("cannot read member name", group);
    std::string member(static_cast<size_t>(len) + 1, '\0');
    if (H5Lget_name_by_idx(g.get(), ".", H5_INDEX_NAME, H5_ITER_INC, i, member.data(), member.size(), H5P_DEFAULT) < 0)
      fail("cannot read member name", group);
    member.resize(static_cast<size_t>(len));
    names.push_back(std::move(member));
  }
  std::sort(names.begin(), names.end());
  return names;
}

namespace {

// Writes one attribute, replacing an existing one of the same name (HDF5
// cannot change an attribute's type or shape in place).
template <typename FailFn>
void write_attr(hid_t object, const std::string& key, hid_t file_type_id, hid_t mem_type_id, hid_t space_id,
                const void* data, FailFn&& on_fail) {
  htri_t exists = H5Aexists(object, key.c_str());
  if (exists < 0) on_fail("cannot query attribute '" + key + "'");
  if (exists > 0 && H5Adelete(object, key.c_str()) < 0) on_fail("cannot replace attribute '" + key + "'");
  Handle attr(H5Acreate2(object, key.c_str(), file_type_id, space_id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) on_fail("cannot create attribute '" + key + "'");
  if (data != nullptr && H5Awrite(attr.get(), mem_type_id, data) < 0) on_fail("cannot write attribute '" + key + "'");
}

}  // namespace

void Hdf5File::set_attr(const std::string& object, const std::string& key, int64_t value) {
  Handle obj(open_object(object), H5Oclose);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  write_attr(obj.get(), key, H5T_STD_I64LE, H5T_NATIVE_INT64, space.get(), &value,
             [&](const std::string& what) { fail(what, normalise(object)); });
}

void Hdf5File::set_attr(const std::string& object, const std::string& key, double value) {
  Handle obj(open_object(object), H5Oclose);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  write_attr(obj.get(), key, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, space.get(), &value,
             [&](const std::string& what) { fail(what, normalise(object)); });
}

void Hdf5File::set_attr(const std::string& object, const std::string& key, const std::string& value) {
  Handle obj(open_object(object), H5Oclose);
  Handle space(H5Screate(H5S_SCALAR), H5Sclose);
  // Fixed-length UTF-8 string: h5py and h5dump read it as-is. HDF5 types
  // cannot have size 0, so "" is stored as one NUL byte.
  Handle type(H5Tcopy(H5T_C_S1), H5Tclose);
  if (!type.valid() || H5Tset_size(type.get(), std::max<size_t>(value.size(), 1)) < 0 ||
      H5Tset_strpad(type.get(), H5T_STR_NULLPAD) < 0 || H5Tset_cset(type.get(), H5T_CSET_UTF8) < 0)
    fail("cannot make string type for attribute '" + key + "'", normalise(object));
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  write_attr(obj.get(), key, type.get(), type.get(), space.get(), padded.data(),
             [&](const std::string& what) { fail(what, normalise(object)); });
}

void Hdf5File::set_attr(const std::string& object, const std::string& key, const std::vector<int64_t>& value) {
  Handle obj(open_object(object), H5Oclose);
  hsize_t n = value.size();
  // An empty list is a null dataspace: a zero-sized simple one is not allowed
  // for attributes.
  Handle space(n == 0 ? H5Screate(H5S_NULL) : H5Screate_simple(1, &n, nullptr), H5Sclose);
  write_attr(obj.get(), key, H5T_STD_I64LE, H5T_NATIVE_INT64, space.get(), n == 0 ? nullptr : value.data(),
             [&](const std::string& what) { fail(what, normalise(object)); });
}

bool Hdf5File::has_attr(const std::string& object, const std::string& key) const {
  if (!exists(object)) return false;
  Handle obj(open_object(object), H5Oclose);
  htri_t e = H5Aexists(obj.get(), key.c_str());
  if (e < 0) fail("cannot query attribute '" + key + "'", normalise(object));
  return e > 0;
}

// Reads attribute `key` of `object` as int64 values (integer attributes only).
std::vector<int64_t> Hdf5File::attr_ints(const std::string& object, const std::string& key) const {
  const std::string obj_name = normalise(object);
  if (!has_attr(obj_name, key)) fail("no attribute '" + key + "'", obj_name);
  Handle obj(open_object(obj_name), H5Oclose);
  Handle attr(H5Aopen(obj.get(), key.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) fail("cannot open attribute '" + key + "'", obj_name);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (!type.valid() || !space.valid()) fail("cannot inspect attribute '" + key + "'", obj_name);
  if (H5Tget_class(type.get()) != H5T_INTEGER) fail("attribute '" + key + "' is not an integer", obj_name);
  if (H5Sget_simple_extent_type(space.get()) == H5S_NULL) return {};
  hssize_t n = H5Sget_simple_extent_npoints(space.get());
  if (n < 0) fail("cannot size attribute '" + key + "'", obj_name);
  std::vector<int64_t> values(static_cast<size_t>(n));
  if (n > 0 && H5Aread(attr.get(), H5T_NATIVE_INT64, values.data()) < 0)
    fail("cannot read attribute '" + key + "'", obj_name);
  return values;
}

int64_t Hdf5File::attr_int(const std::string& object, const std::string& key) const {
  std::vector<int64_t> values = attr_ints(object, key);
  if (values.size() != 1) fail("attribute '" + key + "' is not a single integer", normalise(object));
  return values[0];
}

double Hdf5File::attr_double(const std::string& object, const std::string& key) const {
  const std::string obj_name = normalise(object);
  if (!has_attr(obj_name, key)) fail("no attribute '" + key + "'", obj_name);
  Handle obj(open_object(obj_name), H5Oclose);
  Handle attr(H5Aopen(obj.get(), key.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) fail("cannot open attribute '" + key + "'", obj_name);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (!type.valid() || !space.valid()) fail("cannot inspect attribute '" + key + "'", obj_name);
  H5T_class_t cls = H5Tget_class(type.get());
  if (cls != H5T_FLOAT && cls != H5T_INTEGER) fail("attribute '" + key + "' is not a number", obj_name);
  if (H5Sget_simple_extent_npoints(space.get()) != 1) fail("attribute '" + key + "' is not a single number", obj_name);
  double value = 0;
  if (H5Aread(attr.get(), H5T_NATIVE_DOUBLE, &value) < 0) fail("cannot read attribute '" + key + "'", obj_name);
  return value;
}

std::string Hdf5File::attr_string(const std::string& object, const std::string& key) const {
  const std::string obj_name = normalise(object);
  if (!has_attr(obj_name, key)) fail("no attribute '" + key + "'", obj_name);
  Handle obj(open_object(obj_name), H5Oclose);
  Handle attr(H5Aopen(obj.get(), key.c_str(), H5P_DEFAULT), H5Aclose);
  if (!attr.valid()) fail("cannot open attribute '" + key + "'", obj_name);
  Handle type(H5Aget_type(attr.get()), H5Tclose);
  Handle space(H5Aget_space(attr.get()), H5Sclose);
  if (!type.valid() || !space.valid()) fail("cannot inspect attribute '" + key + "'", obj_name);
  if (H5Tget_class(type.get()) != H5T_STRING) fail("attribute '" + key + "' is not a string", obj_name);
  if (H5Sget_simple_extent_npoints(space.get()) != 1) fail("attribute '" + key + "' is not a single string", obj_name);

  htri_t variable = H5Tis_variable_str(type.get());
  if (variable < 0) fail("cannot inspect string attribute '" + key + "'", obj_name);
  if (variable > 0) {
    // Variable-length strings (what h5py writes by default).
    Handle mem(H5Tcopy(H5T_C_S1), H5Tclose);
    if (!mem.valid() || H5Tset_size(mem.get(), H5T_VARIABLE) < 0 || H5Tset_cset(mem.get(), H5Tget_cset(type.get())) < 0)
      fail("cannot make string type for attribute '" + key + "'", obj_name);
    char* data = nullptr;
    if (H5Aread(attr.get(), mem.get(), &data) < 0) fail("cannot read attribute '" + key + "'", obj_name);
    std::string value = data != nullptr ? std::string(data) : std::string();
    H5free_memory(data);
    return value;
  }
  size_t size = H5Tget_size(type.get());
  std::string value(size, '\0');
  if (H5Aread(attr.get(), type.get(), value.data()) < 0) fail("cannot read attribute '" + key + "'", obj_name);
  size_t nul = value.find('\0');
  if (nul != std::string::npos) value.resize(nul);
  return value;
}

void Hdf5File::flush() {
  if (H5Fflush(file_, H5F_SCOPE_GLOBAL) < 0) fail("cannot flush", "/");
}

}  // namespace moetrain::data
