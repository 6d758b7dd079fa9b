// Checkpoints: save, find and load the training state.
//
// A checkpoint is a directory OUTPUT/checkpoints/step-NNNNNN/ holding
//   rank-RRRRR.h5  one HDF5 file per rank: `model/<param>` (fp32 master
//                  weights), `optim/exp_avg/<param>`, `optim/exp_avg_sq/<param>`,
//                  `rng/cpu` and on GPU runs `rng/cuda` (that rank's
//                  generator states, so dropout continues identically). Every dataset
//                  carries `global_shape` and `offset` attributes (this rank's
//                  slice of the full tensor), so a loader can reshard.
//   meta.json      written last, after every rank file is complete: the commit
//                  marker (step, data position, layout, loss scale, config).
// It is built under step-NNNNNN.partial/ and renamed into place, then
// `checkpoints/latest` (a text file naming it) is replaced atomically. A
// directory without meta.json is incomplete and never loaded.
#pragma once

#include <nlohmann/json.hpp>
#include <torch/torch.h>

#include <optional>
#include <stdexcept>
#include <string>

#include "optim/adamw.h"
#include "optim/flat_parameters.h"
#include "optim/loss_scaler.h"

namespace moetrain::trainer {

class CheckpointError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

std::string checkpoint_name(int64_t step);  // "step-000020"

// The newest complete checkpoint under `checkpoints_dir`, if any.
std::optional<std::string> find_latest_checkpoint(const std::string& checkpoints_dir);

// Accepts a checkpoint directory, a checkpoints/ directory or a run's output
// directory; returns the checkpoint directory to load. Throws CheckpointError.
std::string resolve_checkpoint_path(const std::string& path);

struct CheckpointContents {
  int64_t step = 0;
  const optim::FlatParameters* params = nullptr;
  const optim::AdamW* optimizer = nullptr;
  optim::LossScalerState scaler;
  torch::Tensor rng_state;       // uint8 CPU generator state
  torch::Tensor cuda_rng_state;  // uint8 CUDA generator state (undefined on CPU runs)
  nlohmann::json meta;           // extra fields merged into meta.json
};

// Writes step-NNNNNN atomically and prunes all but the newest `keep` (0: keep
// all). Returns the checkpoint directory.
std::string save_checkpoint(const std::string& checkpoints_dir, const CheckpointContents& contents,
                            int64_t keep);

struct LoadedCheckpoint {
  int64_t step = 0;
  optim::LossScalerState scaler;
  torch::Tensor rng_state;
  torch::Tensor cuda_rng_state;
  nlohmann::json meta;
};

// Loads weights into params' master buffer (and the model, via
// copy_master_to_model), and when `optimizer` is given its moments and step
// count. Every trainable parameter must be present with the same shape.
LoadedCheckpoint load_checkpoint(const std::string& dir, optim::FlatParameters& params,
                                 optim::AdamW* optimizer);

}  // namespace moetrain::trainer
