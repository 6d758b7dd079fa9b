// Fuzz target: the token-shard reader (data/token_shard.h) and the HDF5
// reading under it (data/hdf5_file.h): the checks on open (attributes kind,
// vocab_size, format_version), on each dataset (dtype attribute against the
// stored type, rank, size) and on the shard's invariants.
//
// Input: a description of a shard-like file, which the target writes with the
// HDF5 C API: each file attribute absent or of some type and value, each of
// the six datasets a shard may hold absent, a group, or a dataset of some
// type, rank, size (chunked ones may claim far more elements than they
// store), layout (contiguous, chunked, deflated), "dtype" attribute and
// contents (offsets that are nearly valid, or any). The target then runs
// read_shard_kind, read_document_shard and read_pair_shard; a shard that
// reads must hold its documented invariants.
//
// With MOETRAIN_FUZZ_HDF5_BYTES=1 an input that starts with HDF5's signature
// is written as is instead (damaged copies of real shards, such as the
// corpus's *.h5). That mostly exercises HDF5's own parser, which is not
// instrumented and has memory errors of its own on damaged files (1.10.8: a
// heap-buffer-overflow in H5O__msg_iterate_real under H5Aexists, 8 GiB
// allocations in H5C_protect), so it is off by default. MOETRAIN_FUZZ_VERBOSE=1
// prints why each input was refused.
//
// A bug: a crash, a sanitizer report, a hang, an allocation libFuzzer
// reports as out of memory, an exception other than TokenShardError (the
// documented answer to a bad shard), or a shard read despite breaking an
// invariant.
#include <fuzzer/FuzzedDataProvider.h>
#include <hdf5.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "data/token_shard.h"
#include "tests/fuzz/fuzz_support.h"

namespace {

using moetrain::data::TokenShardError;

const char kSignature[] = "\x89HDF\r\n\x1a\n";

// Owns one hid_t (negative: none).
struct Id {
  hid_t id;
  herr_t (*close)(hid_t);
  ~Id() {
    if (id >= 0) close(id);
  }
};

void write_string_attr(hid_t obj, const char* key, const std::string& value, bool variable) {
  Id type{H5Tcopy(H5T_C_S1), H5Tclose};
  Id space{H5Screate(H5S_SCALAR), H5Sclose};
  if (variable) {
    H5Tset_size(type.id, H5T_VARIABLE);
    Id attr{H5Acreate2(obj, key, type.id, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
    const char* text = value.c_str();
    H5Awrite(attr.id, type.id, &text);
    return;
  }
  H5Tset_size(type.id, std::max<size_t>(value.size(), 1));
  H5Tset_strpad(type.id, H5T_STR_NULLPAD);
  Id attr{H5Acreate2(obj, key, type.id, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
  std::string padded = value.empty() ? std::string(1, '\0') : value;
  H5Awrite(attr.id, type.id, padded.data());
}

// One attribute of `obj`: absent, or a number, a list or a string, holding
// `usual` (what a valid shard has) or a value the input chooses.
void write_attr(hid_t obj, const char* key, FuzzedDataProvider& in, int64_t usual, const std::string& usual_text) {
  const int64_t number = in.ConsumeBool() ? usual : in.ConsumeIntegral<int64_t>();
  const std::string text = in.ConsumeBool() ? usual_text : in.ConsumeRandomLengthString(24);
  Id scalar{H5Screate(H5S_SCALAR), H5Sclose};
  switch (in.ConsumeIntegralInRange(0, 6)) {
    case 0: return;
    case 1: {
      Id attr{H5Acreate2(obj, key, H5T_STD_I64LE, scalar.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
      H5Awrite(attr.id, H5T_NATIVE_INT64, &number);
      return;
    }
    case 2: write_string_attr(obj, key, text, false); return;
    case 3: write_string_attr(obj, key, text, true); return;
    case 4: {
      const double value = static_cast<double>(number);
      Id attr{H5Acreate2(obj, key, H5T_IEEE_F64LE, scalar.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
      H5Awrite(attr.id, H5T_NATIVE_DOUBLE, &value);
      return;
    }
    case 5: {
      const hsize_t n = in.ConsumeIntegralInRange<hsize_t>(0, 3);
      Id space{n == 0 ? H5Screate(H5S_NULL) : H5Screate_simple(1, &n, nullptr), H5Sclose};
      const int64_t values[3] = {number, usual, number};
      Id attr{H5Acreate2(obj, key, H5T_STD_I64LE, space.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
      if (n > 0) H5Awrite(attr.id, H5T_NATIVE_INT64, values);
      return;
    }
    default: {
      const uint8_t value = static_cast<uint8_t>(number);
      Id attr{H5Acreate2(obj, key, H5T_STD_U8LE, scalar.id, H5P_DEFAULT, H5P_DEFAULT), H5Aclose};
      H5Awrite(attr.id, H5T_NATIVE_UINT8, &value);
      return;
    }
  }
}

struct StoredType {
  hid_t file;
  hid_t memory;
  const char* name;  // the dtype attribute moetrain writes
};

const StoredType kTypes[] = {
    {H5T_STD_I32LE, H5T_NATIVE_INT32, "int32"},    {H5T_STD_I64LE, H5T_NATIVE_INT64, "int64"},
    {H5T_STD_U32LE, H5T_NATIVE_UINT32, "uint32"},  {H5T_STD_I16LE, H5T_NATIVE_INT16, "int16"},
    {H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, "float32"}, {H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, "float64"},
    {H5T_STD_U64LE, H5T_NATIVE_UINT64, "uint64"},  {H5T_STD_U16LE, H5T_NATIVE_UINT16, "bfloat16"},
    {H5T_STD_U8LE, H5T_NATIVE_UINT8, "bool"},      {H5T_STD_I8LE, H5T_NATIVE_INT8, "int8"},
    {H5T_STD_I32BE, H5T_NATIVE_INT32, "int32"},
};
constexpr int kTypeCount = sizeof(kTypes) / sizeof(kTypes[0]);

// The values of a dataset of `n` elements: offsets that are nearly valid
// (starting at 0, rising by small steps) or values the input chooses; stored
// as int64 and converted by HDF5 to the dataset's type.
std::vector<int64_t> dataset_values(FuzzedDataProvider& in, size_t n) {
  std::vector<int64_t> values(n);
  const bool offsets_like = in.ConsumeBool();
  int64_t running = 0;
  for (size_t i = 0; i < n; ++i) {
    if (offsets_like) {
      values[i] = running;
      running += in.ConsumeIntegralInRange<int64_t>(0, 4);
    } else {
      values[i] = in.ConsumeIntegralInRange<int64_t>(-2, 40);
    }
  }
  return values;
}

void write_dataset(hid_t file, const char* name, FuzzedDataProvider& in) {
  const int shape_kind = in.ConsumeIntegralInRange(0, 7);
  if (shape_kind == 0) return;  // absent
  if (shape_kind == 1) {        // a group where a dataset should be
    Id group{H5Gcreate2(file, name, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT), H5Gclose};
    return;
  }
  const StoredType& type = kTypes[in.ConsumeIntegralInRange(0, kTypeCount - 1)];
  const int rank = shape_kind == 2 ? 0 : shape_kind == 3 ? 2 : 1;
  // Chunked datasets may claim far more elements than they hold: chunks never
  // written read back as the fill value.
  const bool chunked = in.ConsumeBool();
  const bool huge = chunked && in.ConsumeIntegralInRange(0, 7) == 0;
  hsize_t dims[2] = {
      huge ? in.ConsumeIntegralInRange<hsize_t>(1, hsize_t{1} << 40) : in.ConsumeIntegralInRange<hsize_t>(0, 48),
      in.ConsumeIntegralInRange<hsize_t>(1, 3)};
  Id space{rank == 0 ? H5Screate(H5S_SCALAR) : H5Screate_simple(rank, dims, nullptr), H5Sclose};
  Id dcpl{H5Pcreate(H5P_DATASET_CREATE), H5Pclose};
  if (chunked && rank > 0) {
    hsize_t chunk[2] = {16, 1};
    H5Pset_chunk(dcpl.id, rank, chunk);
    if (in.ConsumeBool()) H5Pset_deflate(dcpl.id, 1);
  }
  Id dset{H5Dcreate2(file, name, type.file, space.id, H5P_DEFAULT, dcpl.id, H5P_DEFAULT), H5Dclose};
  if (dset.id < 0) return;
  size_t n = rank == 0 ? 1 : dims[0] * (rank == 2 ? dims[1] : 1);
  if (!huge) {
    const std::vector<int64_t> values = dataset_values(in, n);
    if (n > 0) H5Dwrite(dset.id, H5T_NATIVE_INT64, H5S_ALL, H5S_ALL, H5P_DEFAULT, values.data());
  }
  switch (in.ConsumeIntegralInRange(0, 2)) {
    case 0: break;  // no dtype attribute: the HDF5 type decides
    case 1: write_string_attr(dset.id, "dtype", type.name, false); break;
    default: write_string_attr(dset.id, "dtype", kTypes[in.ConsumeIntegralInRange(0, kTypeCount - 1)].name, false);
  }
}

// Writes the file the description `data` gives; false when HDF5 refused.
bool write_described_file(const std::string& path, const uint8_t* data, size_t size) {
  FuzzedDataProvider in(data, size);
  Id fcpl{H5Pcreate(H5P_FILE_CREATE), H5Pclose};
  Id file{H5Fcreate(path.c_str(), H5F_ACC_TRUNC, fcpl.id, H5P_DEFAULT), H5Fclose};
  if (file.id < 0) return false;
  const bool pairs = in.ConsumeBool();
  write_attr(file.id, "kind", in, 0, pairs ? "pairs" : "documents");
  write_attr(file.id, "vocab_size", in, 40, "40");
  write_attr(file.id, "format_version", in, 1, "1");
  for (const char* name :
       {"tokens", "doc_offsets", "source_tokens", "source_offsets", "target_tokens", "target_offsets"}) {
    write_dataset(file.id, name, in);
  }
  return true;
}

void check_sequences(const moetrain::data::TokenSequences& seq, int64_t vocab_size) {
  FUZZ_CHECK(seq.tokens.scalar_type() == torch::kInt32 && seq.tokens.dim() == 1, "tokens not 1-d int32");
  FUZZ_CHECK(seq.offsets.scalar_type() == torch::kInt64 && seq.offsets.dim() == 1, "offsets not 1-d int64");
  const auto off = seq.offsets.accessor<int64_t, 1>();
  FUZZ_CHECK(off.size(0) >= 1 && off[0] == 0 && off[off.size(0) - 1] == seq.tokens.numel(), "offsets ends");
  for (int64_t i = 1; i < off.size(0); ++i) FUZZ_CHECK(off[i] >= off[i - 1], "offsets decrease");
  if (seq.tokens.numel() > 0) {
    FUZZ_CHECK(seq.tokens.min().item<int32_t>() >= 0 && seq.tokens.max().item<int32_t>() < vocab_size,
               "a token outside the vocabulary");
  }
}

bool env_flag(const char* name) {
  const char* value = std::getenv(name);
  return value != nullptr && std::string(value) == "1";
}

void refused(const TokenShardError& e) {
  static const bool verbose = env_flag("MOETRAIN_FUZZ_VERBOSE");
  if (verbose) std::fprintf(stderr, "refused: %s\n", e.what());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static const bool raw_files = env_flag("MOETRAIN_FUZZ_HDF5_BYTES");
  const std::string path = moetrain::fuzz::scratch_dir() + "/shard.h5";
  if (raw_files && size >= 8 && std::memcmp(data, kSignature, 8) == 0) {
    moetrain::fuzz::write_scratch_file("shard.h5", data, size);
  } else {
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
    if (!write_described_file(path, data, size)) return 0;
  }
  try {
    moetrain::data::read_shard_kind(path);
  } catch (const TokenShardError& e) {
    refused(e);
  }
  try {
    const auto shard = moetrain::data::read_document_shard(path);
    check_sequences(shard.documents, shard.vocab_size);
  } catch (const TokenShardError& e) {
    refused(e);
  }
  try {
    const auto shard = moetrain::data::read_pair_shard(path);
    check_sequences(shard.source, shard.vocab_size);
    check_sequences(shard.target, shard.vocab_size);
    FUZZ_CHECK(shard.source.size() == shard.target.size(), "sources and targets differ in number");
  } catch (const TokenShardError& e) {
    refused(e);
  }
  return 0;
}
