// The on-disk layout of one parameter in a checkpoint's rank files: each
// rank writes the pieces it holds as 1-D datasets whose attributes place
// them in the whole tensor (global_shape, slice_start, slice_shape,
// flat_offset; see checkpoint.h), and a reader assembles the block it needs
// from whatever pieces the files hold: that is how a checkpoint reshards
// between layouts. Used by save and load in checkpoint.cpp.
#pragma once

#include <torch/torch.h>

#include <functional>
#include <string>
#include <vector>

#include "checkpoint/rank_file.h"
#include "models/model_parallelism.h"
#include "optim/flat_parameters.h"

namespace moetrain::checkpoint {

// The block of the whole parameter `name` (local shape `shape`) this rank
// holds: its TP slice, or the whole tensor.
models::ParameterSlice block_of(const std::string& name, const std::vector<int64_t>& shape,
                                const models::ParameterSlices* slices);
models::ParameterSlice block_of(const optim::FlatParameterEntry& e, const models::ParameterSlices* slices);

// Writes `values` (1-D: the elements from `flat_offset` on of the block
// `block` of a parameter, whose shape on this rank is `shape`) as `dataset`,
// with the attributes that place them in the whole parameter.
void write_piece(RankFileWriter& file, const std::string& dataset, const torch::Tensor& values,
                 const models::ParameterSlice& block, const std::vector<int64_t>& shape, int64_t flat_offset);

// Writes this rank's pieces of `buffer` (laid out like params.master()) as
// `<group><param>` datasets with the attributes that place each piece in its
// whole parameter; `writes_entry` (when set) says which parameters.
void write_pieces(RankFileWriter& file, const std::string& group, const optim::FlatParameters& params,
                  const torch::Tensor& buffer, const models::ParameterSlices* slices,
                  const std::function<bool(const optim::FlatParameterEntry&)>& writes_entry);

// Fills `target` (the elements [begin, end) of this rank's flattened block of
// a parameter) from the pieces of `dataset` in every rank file. Pieces of the
// same block (the layout it was saved with) are copied straight in; otherwise
// (another TP, EP or ZeRO layout) the whole tensor is assembled and the block
// cut out of it. Every piece read is checked against its checksum. Throws
// CheckpointError naming the file and dataset.
void read_pieces(std::vector<RankFileReader>& files, const std::string& dataset, const models::ParameterSlice& block,
                 const std::vector<int64_t>& block_shape, int64_t begin, int64_t end, torch::Tensor target,
                 const std::string& dir);

// "model/P.weight" -> "model/P.lora_A"; "model/P.experts_fc1_weight" -> "model/P.experts_fc1_lora_A".
std::string lora_dataset(const std::string& weight_dataset, const std::string& which);

// This rank's block of a weight plus scale * B A, from the blocks of B (the
// weight's rows) and A (its columns) the checkpoint's adapters hold. Works
// for [out, in] weights and stacked experts [E, out, in] alike.
torch::Tensor merged_lora_block(std::vector<RankFileReader>& files, const std::string& dataset,
                                const models::ParameterSlice& block, const std::vector<int64_t>& shape, double scale,
                                const std::string& dir);

}  // namespace moetrain::checkpoint
