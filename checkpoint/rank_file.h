// One rank file of a checkpoint (rank-RRRRR.h5) with its integrity record.
//
// Every dataset written through RankFileWriter carries a checksum, the
// attribute `xxh64` (XXH64 of the stored bytes, 16 hex digits), and the file
// ends with a `manifest` dataset (JSON text, itself checksummed) listing every
// dataset the file holds; the root attribute `format_version` is 2.
// RankFileReader reads datasets back verified, and tells a dataset the file
// never held (a different model) from one its manifest lists but the file can
// no longer give (damage). Files of format 1, written before checksums, have
// neither and read unverified.
//
// Used by checkpoint.cpp and pieces.cpp (save and load) and verify.cpp.
#pragma once

#include <torch/torch.h>

#include <set>
#include <string>
#include <vector>

#include "data/hdf5_file.h"

namespace moetrain::checkpoint {

// XXH64 (seed 0) of a tensor's bytes in row-major order, as 16 hex digits.
std::string checksum_of(const torch::Tensor& values);

// Creates (truncates) a rank file and records what is written to it. The
// caller sets attributes through file(); finish() completes the file.
class RankFileWriter {
 public:
  explicit RankFileWriter(const std::string& path);

  data::Hdf5File& file() { return file_; }

  // Writes `values` (any device, any layout) as `dataset` with its checksum.
  void write(const std::string& dataset, const torch::Tensor& values);

  // Writes the manifest and the format version, and flushes. Call last: a
  // file without its manifest fails verification.
  void finish();

 private:
  data::Hdf5File file_;
  std::vector<std::string> written_;
};

// A rank file opened for reading. Every failure is a CheckpointError naming
// the file (and the dataset).
class RankFileReader {
 public:
  // Opens `path` and reads its manifest (format 2).
  explicit RankFileReader(const std::string& path);

  const std::string& path() const { return file_.path(); }
  data::Hdf5File& file() { return file_; }
  // Whether the file records checksums (format 2).
  bool checked() const { return checked_; }
  // The datasets the manifest lists, sorted (format 1: every dataset found).
  const std::set<std::string>& datasets() const { return datasets_; }

  // Whether the file holds `dataset`; throws when its manifest lists it but
  // the file cannot open it.
  bool holds(const std::string& dataset);

  // The whole dataset, checked against its checksum (format 2).
  torch::Tensor read(const std::string& dataset);

 private:
  data::Hdf5File file_;
  bool checked_ = false;
  std::set<std::string> datasets_;
};

}  // namespace moetrain::checkpoint
