#include "checkpoint/rank_file.h"

#include <nlohmann/json.hpp>
#define XXH_INLINE_ALL
#include <xxhash.h>

#include <cstdio>

#include "checkpoint/directory.h"

namespace moetrain::checkpoint {

namespace {

constexpr const char* kChecksumAttribute = "xxh64";
constexpr const char* kManifest = "manifest";
constexpr int64_t kCheckedFormat = 2;

// Every dataset under `group` of a file written before manifests: a member
// with a "dtype" attribute is a dataset (Hdf5File::write_tensor sets one on
// each), anything else a group.
void collect_datasets(data::Hdf5File& file, const std::string& group, std::set<std::string>& out) {
  for (const auto& member : file.list(group)) {
    const std::string name = group.empty() ? member : group + "/" + member;
    if (file.has_attr(name, "dtype")) {
      out.insert(name);
    } else {
      collect_datasets(file, name, out);
    }
  }
}

}  // namespace

std::string checksum_of(const torch::Tensor& values) {
  const torch::Tensor t = values.detach().to(torch::kCPU).contiguous();
  const uint64_t hash = XXH64(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size(), 0);
  char text[17];
  std::snprintf(text, sizeof(text), "%016llx", static_cast<unsigned long long>(hash));
  return text;
}

RankFileWriter::RankFileWriter(const std::string& path) : file_(path, data::Hdf5File::Mode::Create) {}

void RankFileWriter::write(const std::string& dataset, const torch::Tensor& values) {
  const torch::Tensor host = values.detach().to(torch::kCPU).contiguous();
  file_.write_tensor(dataset, host);
  file_.set_attr(dataset, kChecksumAttribute, checksum_of(host));
  written_.push_back(dataset);
}

void RankFileWriter::finish() {
  const std::string text = nlohmann::json{{"datasets", written_}}.dump();
  const auto bytes = torch::from_blob(const_cast<char*>(text.data()), {static_cast<int64_t>(text.size())},
                                      torch::TensorOptions().dtype(torch::kUInt8));
  file_.write_tensor(kManifest, bytes);
  file_.set_attr(kManifest, kChecksumAttribute, checksum_of(bytes));
  file_.set_attr("/", "format_version", kCheckedFormat);
  file_.flush();
}

RankFileReader::RankFileReader(const std::string& path) try : file_(path, data::Hdf5File::Mode::Read) {
  checked_ = file_.has_attr("/", "format_version") && file_.attr_int("/", "format_version") >= kCheckedFormat;
  if (!checked_) {
    collect_datasets(file_, "", datasets_);
    return;
  }
  if (!file_.exists(kManifest)) throw CheckpointError(path + ": damaged: its manifest is missing");
  const torch::Tensor bytes = read(kManifest);
  try {
    const auto manifest = nlohmann::json::parse(std::string(static_cast<const char*>(bytes.data_ptr()), bytes.numel()));
    for (const auto& name : manifest.at("datasets")) datasets_.insert(name.get<std::string>());
  } catch (const nlohmann::json::exception& e) {
    throw CheckpointError(path + ": damaged: its manifest is malformed (" + e.what() + ")");
  }
} catch (const data::Hdf5Error& e) {
  throw CheckpointError(std::string(e.what()) + ": the rank file is damaged");
}

bool RankFileReader::holds(const std::string& dataset) {
  if (!checked_) return datasets_.count(dataset) > 0;
  if (datasets_.count(dataset) == 0) return false;
  if (!file_.exists(dataset)) {
    throw CheckpointError(path() + ": damaged: " + dataset +
                          " is listed in the file's manifest but cannot be found in the file");
  }
  return true;
}

torch::Tensor RankFileReader::read(const std::string& dataset) {
  try {
    torch::Tensor values = file_.read_tensor(dataset);
    if (!checked_) return values;
    if (!file_.has_attr(dataset, kChecksumAttribute)) {
      throw CheckpointError(path() + ": damaged: " + dataset + " has no checksum");
    }
    const std::string stored = file_.attr_string(dataset, kChecksumAttribute), actual = checksum_of(values);
    if (stored != actual) {
      throw CheckpointError(path() + ": " + dataset + " fails its checksum (stored xxh64 " + stored +
                            ", the data hashes to " + actual + "): the rank file is damaged");
    }
    return values;
  } catch (const data::Hdf5Error& e) {
    throw CheckpointError(std::string(e.what()) + ": the rank file is damaged");
  }
}

}  // namespace moetrain::checkpoint
