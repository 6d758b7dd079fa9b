#include "checkpoint/pieces.h"

#include <algorithm>
#include <functional>
#include <numeric>
#include <sstream>

#include "checkpoint/directory.h"

namespace moetrain::checkpoint {

models::ParameterSlice block_of(const std::string& name, const std::vector<int64_t>& shape,
                                const models::ParameterSlices* slices) {
  if (slices) {
    const auto it = slices->find(name);
    if (it != slices->end()) return it->second;
  }
  return {shape, std::vector<int64_t>(shape.size(), 0)};
}

models::ParameterSlice block_of(const optim::FlatParameterEntry& e, const models::ParameterSlices* slices) {
  return block_of(e.name, e.shape, slices);
}

void write_pieces(RankFileWriter& file, const std::string& group, const optim::FlatParameters& params,
                  const torch::Tensor& buffer, const models::ParameterSlices* slices,
                  const std::function<bool(const optim::FlatParameterEntry&)>& writes_entry) {
  const auto host = buffer.detach().to(torch::kCPU);
  for (const auto& e : params.entries()) {
    const auto piece = params.local_piece(e);
    const int64_t len = piece.end - piece.begin;
    if (len == 0 || (writes_entry && !writes_entry(e))) continue;
    write_piece(file, group + e.name, host.narrow(0, piece.master_offset, len), block_of(e, slices), e.shape,
                piece.begin);
  }
}

void write_piece(RankFileWriter& writer, const std::string& dataset, const torch::Tensor& values,
                 const models::ParameterSlice& block, const std::vector<int64_t>& shape, int64_t flat_offset) {
  writer.write(dataset, values);
  auto& file = writer.file();
  file.set_attr(dataset, "global_shape", block.global_shape);
  file.set_attr(dataset, "slice_start", block.start);
  file.set_attr(dataset, "slice_shape", shape);
  file.set_attr(dataset, "flat_offset", flat_offset);
}

namespace {

// One stored piece of a parameter: the flat range [offset, offset + length)
// of the block at `start` (shape `shape`) of the whole tensor.
struct StoredPiece {
  RankFileReader* file = nullptr;
  std::vector<int64_t> start, shape;
  int64_t offset = 0, length = 0;
};

std::string shape_text(const std::vector<int64_t>& shape) {
  std::ostringstream out;
  out << c10::IntArrayRef(shape);
  return out.str();
}

// The token embedding and output projection: under TP their vocabulary is
// padded to a multiple of TP, so the last TP rank's block runs past the
// tensor's rows (padding rows, never used).
bool is_vocabulary_parameter(const std::string& dataset) {
  auto ends_with = [&](const std::string& suffix) {
    return dataset.size() >= suffix.size() &&
           dataset.compare(dataset.size() - suffix.size(), suffix.size(), suffix) == 0;
  };
  return ends_with("/embed_tokens.weight") || ends_with("/lm_head.weight");
}

// The tensor a parameter's pieces make up, whatever the layout that wrote
// them: each block (a TP or EP rank's slice) assembled from its pieces (ZeRO
// shards), then put in place. `have` marks the elements some piece covered.
// `shape` is the tensor's, with room for padding rows past its end.
std::pair<torch::Tensor, torch::Tensor> assemble_whole(const std::vector<StoredPiece>& pieces,
                                                       const std::vector<int64_t>& shape, const std::string& dataset) {
  auto whole = torch::zeros(shape, torch::kFloat32);
  auto have = torch::zeros(shape, torch::kBool);
  std::map<std::pair<std::vector<int64_t>, std::vector<int64_t>>, std::pair<torch::Tensor, torch::Tensor>> blocks;
  for (const auto& p : pieces) {
    auto& [data, mask] = blocks[{p.start, p.shape}];
    if (!data.defined()) {
      data = torch::zeros(p.shape, torch::kFloat32);
      mask = torch::zeros(p.shape, torch::kBool);
    }
    data.view(-1).narrow(0, p.offset, p.length).copy_(p.file->read(dataset));
    mask.view(-1).narrow(0, p.offset, p.length).fill_(true);
  }
  for (const auto& [where, block] : blocks) {
    torch::Tensor w = whole, h = have;
    for (size_t d = 0; d < where.first.size(); ++d) {
      w = w.narrow(static_cast<int64_t>(d), where.first[d], where.second[d]);
      h = h.narrow(static_cast<int64_t>(d), where.first[d], where.second[d]);
    }
    w.copy_(block.first);
    h.logical_or_(block.second);
  }
  return {whole, have};
}

}  // namespace

// Fills `target` (the elements [begin, end) of this rank's flattened block of
// a parameter) from the pieces of `dataset` in every rank file. Pieces of the
// same block (the layout it was saved with) are copied straight in; otherwise
// (another TP, EP or ZeRO layout) the whole tensor is assembled and the block
// cut out of it.
void read_pieces(std::vector<RankFileReader>& files, const std::string& dataset, const models::ParameterSlice& block,
                 const std::vector<int64_t>& block_shape, int64_t begin, int64_t end, torch::Tensor target,
                 const std::string& dir) {
  std::vector<StoredPiece> pieces;
  for (auto& reader : files) {
    if (!reader.holds(dataset)) continue;
    auto& file = reader.file();
    const auto shape = file.attr_ints(dataset, "global_shape");
    if (shape != block.global_shape) {
      throw CheckpointError(file.path() + ": " + dataset + " has shape " + shape_text(shape) +
                            " but the model expects " + shape_text(block.global_shape));
    }
    StoredPiece p;
    p.file = &reader;
    const bool sliced = file.has_attr(dataset, "slice_start");
    p.start = sliced ? file.attr_ints(dataset, "slice_start") : std::vector<int64_t>(shape.size(), 0);
    p.shape = sliced ? file.attr_ints(dataset, "slice_shape") : shape;
    p.offset = file.attr_int(dataset, "flat_offset");
    p.length = file.shape(dataset).at(0);
    int64_t numel = 1;
    bool inside = p.start.size() == shape.size() && p.shape.size() == shape.size();
    for (size_t d = 0; inside && d < shape.size(); ++d) {
      const bool padded = d == 0 && is_vocabulary_parameter(dataset);
      inside = p.start[d] >= 0 && p.shape[d] >= 0 && p.start[d] + p.shape[d] <= shape[d] + (padded ? p.shape[d] : 0);
      numel *= p.shape[d];
    }
    if (!inside || p.offset < 0 || p.offset + p.length > numel) {
      throw CheckpointError(file.path() + ": " + dataset + " is corrupt (its piece lies outside the tensor)");
    }
    pieces.push_back(p);
  }
  if (pieces.empty()) {
    throw CheckpointError(dir + ": missing " + dataset + " (was the checkpoint written for a different model?)");
  }

  auto covered = torch::zeros({end - begin}, torch::kBool);
  for (const auto& p : pieces) {
    if (p.start != block.start || p.shape != block_shape) continue;
    const int64_t lo = std::max(begin, p.offset), hi = std::min(end, p.offset + p.length);
    if (lo >= hi) continue;
    // The whole piece, so that its checksum can be checked.
    target.narrow(0, lo - begin, hi - lo).copy_(p.file->read(dataset).narrow(0, lo - p.offset, hi - lo));
    covered.narrow(0, lo - begin, hi - lo).fill_(true);
  }
  if (covered.all().item<bool>()) return;

  // Room for vocabulary padding rows past the tensor's end, which need no
  // piece (a layout without them has none to give).
  std::vector<int64_t> shape = block.global_shape;
  const int64_t rows = shape.at(0);
  for (const auto& p : pieces) shape[0] = std::max(shape[0], p.start[0] + p.shape[0]);
  shape[0] = std::max(shape[0], block.start.at(0) + block_shape.at(0));
  auto [whole, have] = assemble_whole(pieces, shape, dataset);
  have.narrow(0, rows, shape[0] - rows).fill_(true);
  for (size_t d = 0; d < block.start.size(); ++d) {
    whole = whole.narrow(static_cast<int64_t>(d), block.start[d], block_shape[d]);
    have = have.narrow(static_cast<int64_t>(d), block.start[d], block_shape[d]);
  }
  const auto wanted_have = have.contiguous().view(-1).narrow(0, begin, end - begin);
  if (!wanted_have.all().item<bool>()) {
    throw CheckpointError(dir + ": " + dataset + " is incomplete: no piece holds part of the block at " +
                          shape_text(block.start) + " of shape " + shape_text(block_shape));
  }
  target.copy_(whole.contiguous().view(-1).narrow(0, begin, end - begin));
}

// "model/P.weight" -> "model/P.lora_A"; "model/P.experts_fc1_weight" -> "model/P.experts_fc1_lora_A".
std::string lora_dataset(const std::string& weight_dataset, const std::string& which) {
  const std::string suffix = "weight";
  return weight_dataset.substr(0, weight_dataset.size() - suffix.size()) + "lora_" + which;
}

// This rank's block of a weight plus scale * B A, from the blocks of B (the
// weight's rows) and A (its columns) the checkpoint's adapters hold. Works
// for [out, in] weights and stacked experts [E, out, in] alike.
torch::Tensor merged_lora_block(std::vector<RankFileReader>& files, const std::string& dataset,
                                const models::ParameterSlice& block, const std::vector<int64_t>& shape, double scale,
                                const std::string& dir) {
  auto numel = [](const std::vector<int64_t>& s) {
    return std::accumulate(s.begin(), s.end(), int64_t{1}, std::multiplies<int64_t>());
  };
  auto read_block = [&](const std::string& name, const models::ParameterSlice& b, const std::vector<int64_t>& s) {
    auto host = torch::empty({numel(s)}, torch::kFloat32);
    read_pieces(files, name, b, s, 0, numel(s), host, dir);
    return host.view(s);
  };
  auto global_shape = [&](const std::string& name) {
    for (auto& f : files) {
      if (f.holds(name)) return f.file().attr_ints(name, "global_shape");
    }
    throw CheckpointError(dir + ": missing " + name);
  };
  const std::string a_name = lora_dataset(dataset, "A"), b_name = lora_dataset(dataset, "B");
  const auto a_global = global_shape(a_name), b_global = global_shape(b_name);
  const size_t d = shape.size();
  if (a_global.size() != d || b_global.size() != d || d < 2) {
    throw CheckpointError(dir + ": " + a_name + " does not match " + dataset);
  }
  const int64_t r = a_global[d - 2];
  // B: the weight's rows (all r columns); A: its columns (all r rows).
  models::ParameterSlice b_block{b_global, block.start}, a_block{a_global, block.start};
  std::vector<int64_t> b_shape = shape, a_shape = shape;
  b_block.start[d - 1] = 0;
  b_shape[d - 1] = r;
  a_block.start[d - 2] = 0;
  a_shape[d - 2] = r;
  const torch::Tensor w = read_block(dataset, block, shape);
  return w + scale * torch::matmul(read_block(b_name, b_block, b_shape), read_block(a_name, a_block, a_shape));
}

}  // namespace moetrain::checkpoint
