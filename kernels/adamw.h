// Multi-tensor AdamW: torch.optim.AdamW's update over groups of flat fp32
// buffers (parameters, gradients and both moments), in place. One dispatch
// point: CUDA tensors go to the fused kernel in kernels/cuda/adamw.cu, which
// updates every group in one launch from a table of chunks (more launches
// only when the groups outgrow one launch's table); everything else to the
// ATen reference beside it.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

namespace moetrain::kernels {

struct AdamWHyperparameters {
  double lr = 1e-3;
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double weight_decay = 0.0;
  int64_t step = 1;  // the step being taken, counted from 1 (bias corrections use it)
};

// One group: four contiguous fp32 tensors of the same number of elements,
// updated in place. weight_decay false exempts the group from decay.
struct AdamWTensors {
  torch::Tensor param, grad, exp_avg, exp_avg_sq;
  bool weight_decay = true;
};

// For every element of every group, with bc1 = 1 - beta1^step and
// bc2 = 1 - beta2^step:
//   p *= 1 - lr * weight_decay          (groups with weight_decay only)
//   m  = beta1 * m + (1 - beta1) * g
//   v  = beta2 * v + (1 - beta2) * g^2
//   p += -lr / bc1 * m / (sqrt(v) / sqrt(bc2) + eps)
// All groups must be on one device. Throws std::invalid_argument naming the
// op for mismatched groups or step < 1.
void adamw_update(std::vector<AdamWTensors>& groups, const AdamWHyperparameters& h);

// The ATen reference: the same update as a few in-place ops per group.
void adamw_update_reference(std::vector<AdamWTensors>& groups, const AdamWHyperparameters& h);

}  // namespace moetrain::kernels
