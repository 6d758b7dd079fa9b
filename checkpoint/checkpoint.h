// Checkpoints: save, find and load the training state.
//
// A checkpoint is a directory OUTPUT/checkpoints/step-NNNNNN/ holding
//   rank-RRRRR.h5  one HDF5 file per rank: `model/<param>` (fp32 master
//                  weights), `optim/exp_avg/<param>`, `optim/exp_avg_sq/<param>`,
//                  `rng/cpu` and on GPU runs `rng/cuda` (that rank's
//                  generator states, so dropout continues identically; with
//                  TP also `rng/tp/<i>`). Every dataset is a 1-D run of
//                  elements and carries attributes saying where it belongs:
//                  `global_shape` (the whole parameter), `slice_start` and
//                  `slice_shape` (the block of it this rank holds: the whole
//                  tensor without tensor parallelism, a slice along one dim
//                  with it; a padded vocabulary slice may run past the
//                  global shape) and `flat_offset` (where the run starts in
//                  the flattened block). A loader can reshard from these.
//   meta.json      written last, after every rank file is complete: the commit
//                  marker (step, data position, layout, loss scale, config).
// It is built under step-NNNNNN.partial/ and renamed into place, then
// `checkpoints/latest` (a text file naming it) is replaced atomically. A
// directory without meta.json is incomplete and never loaded.
#pragma once

#include <torch/torch.h>
#include <nlohmann/json.hpp>

#include <functional>
#include <optional>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "checkpoint/directory.h"
#include "models/model_parallelism.h"
#include "optim/adamw.h"
#include "optim/flat_parameters.h"
#include "optim/loss_scaler.h"
#include "parallel/communicator.h"

namespace moetrain::checkpoint {

struct CheckpointContents {
  int64_t step = 0;
  bool write_state = true;  // false: this rank's weights are a replica another rank writes
  // With write_state: which parameters this rank writes (empty: all of them);
  // the others are replicas another rank writes.
  std::function<bool(const optim::FlatParameterEntry&)> writes_entry;
  const optim::FlatParameters* params = nullptr;
  // With write_state: parameters the optimizer does not own (frozen ones:
  // LoRA's base weights, finetune.freeze), this rank's blocks of those it
  // writes, as `model/<name>` (weights only, fp32).
  std::vector<std::pair<std::string, torch::Tensor>> frozen;
  const optim::AdamW* optimizer = nullptr;
  optim::LossScalerState scaler;
  torch::Tensor rng_state;                   // uint8 CPU generator state
  torch::Tensor cuda_rng_state;              // uint8 CUDA generator state (undefined on CPU runs)
  std::vector<torch::Tensor> tp_rng_states;  // tensor-parallel dropout generators (TP > 1)
  // Where this rank's split parameters sit in the whole tensors (TP); null or
  // absent: the parameter is whole.
  const models::ParameterSlices* slices = nullptr;
  nlohmann::json meta;  // extra fields merged into meta.json
};

// A checkpoint that could not be written (a full disk, permissions, one rank
// failing): every rank throws it with the same one line, naming the file and
// the cause; the partial directory is removed, and the earlier checkpoints
// and `latest` are as they were.
class CheckpointWriteError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// Writes step-NNNNNN atomically and prunes all but the newest `keep` (0: keep
// all). Collective over `world`: every rank calls it. Returns the directory;
// throws CheckpointWriteError on every rank when any rank's part failed.
std::string save_checkpoint(const std::string& checkpoints_dir, const CheckpointContents& contents, int64_t keep,
                            parallel::Communicator& world);

// Writes a checkpoint of weights alone (no optimizer state, no generators)
// into `dir` (created; it must not exist), from one process: `weights` are the
// whole parameters by moetrain name, `meta` the extra fields of meta.json
// (the config). meta.json records "weights_only": such a checkpoint starts a
// run (--init-from) or serves export, generate and eval, but is not resumed.
// What `moetrain import` writes.
void save_weights_checkpoint(const std::string& dir, int64_t step,
                             const std::vector<std::pair<std::string, torch::Tensor>>& weights,
                             const nlohmann::json& meta);

// Writes the reduced gradients of one step (`grads`, laid out like
// params.master()) to `dir` in the checkpoint's layout: rank-RRRRR.h5 files
// with `model/<param>` pieces placed by the same attributes, and a meta.json
// listing them. For comparing gradients across parallel layouts
// (train.dump_grads_step). Collective over `world`.
void save_gradient_dump(const std::string& dir, const optim::FlatParameters& params, const torch::Tensor& grads,
                        const models::ParameterSlices* slices,
                        const std::function<bool(const optim::FlatParameterEntry&)>& writes_entry, int64_t step,
                        parallel::Communicator& world);

struct LoadedCheckpoint {
  int64_t step = 0;
  optim::LossScalerState scaler;
  torch::Tensor rng_state;
  torch::Tensor cuda_rng_state;
  std::vector<torch::Tensor> tp_rng_states;
  nlohmann::json meta;
};

// Loads this rank's pieces of the weights into params' master buffer, and
// when `optimizer` is given its moments and step count, from whatever rank
// files hold them. Every trainable parameter must be present with the same
// shape. The model's compute copy is not refreshed: the caller does that
// (copy_master_to_model, or an all-gather of sharded masters). `rank` picks
// the rank file whose RNG state is returned. `slices` (TP) says which block of
// each split parameter this rank holds; it is assembled from whatever pieces
// the checkpoint's files hold, so any saved layout (DP, TP, PP, EP, ZeRO
// stage) loads under any other.
//
// `extra` covers parameters outside `params` and LoRA's cases (see below).
struct ExtraWeights {
  // This rank's blocks of the frozen parameters (compute dtype, any device),
  // filled from `model/<name>` like the trainable ones.
  std::vector<std::pair<std::string, torch::Tensor>> frozen;
  // LoRA adapters (models::is_lora_parameter) the checkpoint does not hold
  // keep their values (a LoRA run started from a checkpoint without them).
  bool adapters_may_be_absent = false;
  // > 0: the checkpoint holds LoRA adapters the model does not have (a full
  // fine-tune after a LoRA one); each adapted weight is loaded as
  // W + merge_lora_scale * B A, block by block, whatever the layouts.
  double merge_lora_scale = 0;
};
LoadedCheckpoint load_checkpoint(const std::string& dir, optim::FlatParameters& params, optim::AdamW* optimizer,
                                 int64_t rank = 0, const models::ParameterSlices* slices = nullptr,
                                 const ExtraWeights& extra = {});

}  // namespace moetrain::checkpoint
