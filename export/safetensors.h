// The safetensors format (Hugging Face): an 8-byte little-endian header
// length, a JSON header naming each tensor's dtype, shape and byte range
// (plus optional string metadata under "__metadata__"), then the raw
// little-endian bytes, tensors back to back in header order. The header is
// padded with spaces to a multiple of 8 bytes.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <utility>
#include <vector>

namespace moetrain::exporting {

using NamedTensors = std::vector<std::pair<std::string, torch::Tensor>>;

// "F32", "BF16", "F16", "I64", ... for a torch dtype; throws
// std::invalid_argument for a dtype safetensors has no name for.
std::string safetensors_dtype(torch::ScalarType dtype);

// Hears the bytes of each tensor once it is written (for progress lines).
using WrittenBytes = std::function<void(int64_t bytes)>;

// Writes `tensors` (any device; written as they are, contiguous) in order,
// atomically (a temporary file renamed over `path`). Throws
// std::runtime_error naming the path on an I/O error, std::invalid_argument
// for a duplicate name.
void write_safetensors(const std::string& path, const NamedTensors& tensors,
                       const std::map<std::string, std::string>& metadata = {}, const WrittenBytes& written = {});

struct SafetensorsFile {
  NamedTensors tensors;  // in header order, on the CPU
  std::map<std::string, std::string> metadata;
};

// Reads a whole file, memory-mapped: each tensor is copied out of the mapping
// and its pages released, so reading costs about the tensors' size in
// memory. Throws std::runtime_error naming the path and what is wrong:
// missing, truncated, a header that is not the format's JSON, a byte range
// outside the data or not matching its dtype and shape, byte ranges that
// overlap or leave bytes of the data to no tensor. (The file must not shrink
// while it is read.)
SafetensorsFile read_safetensors(const std::string& path);

// Writes `tensors` under `dir` as `<stem>.safetensors`, or, when they come to
// more than `max_shard_bytes`, as `<stem>-0000k-of-0000n.safetensors` shards
// (whole tensors, in order, each shard at most max_shard_bytes unless one
// tensor alone is larger) plus `<stem>.safetensors.index.json`
// ({"metadata": {"total_size": bytes}, "weight_map": {name: file}}), as
// transformers writes them. Returns the files written.
std::vector<std::string> write_safetensors_sharded(const std::string& dir, const std::string& stem,
                                                   const NamedTensors& tensors, int64_t max_shard_bytes,
                                                   const std::map<std::string, std::string>& metadata = {},
                                                   const WrittenBytes& written = {});

}  // namespace moetrain::exporting
