#include "kernels/cross_entropy.h"

#include <stdexcept>
#include <string>

#include "kernels/dispatch.h"

#ifdef MOETRAIN_CUDA_KERNELS
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/cuda/cross_entropy_launch.h"
#endif

namespace moetrain::kernels {

namespace {

#ifdef MOETRAIN_CUDA_KERNELS

// The fused kernel as an autograd function: logits [N, V] contiguous CUDA
// (fp32/bf16/fp16), targets [N] int64 and mask [N] bool on the same device.
// Returns the per-row losses [N] fp32 (0 on rows that do not count). Saves
// the logits and the per-row log-sum-exp [N]; backward recomputes the softmax
// from them and writes the gradient straight in the logits' dtype.
class FusedSoftmaxCrossEntropy : public torch::autograd::Function<FusedSoftmaxCrossEntropy> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& logits,
                               const torch::Tensor& targets, const torch::Tensor& mask, double label_smoothing) {
    const c10::cuda::CUDAGuard guard(logits.device());
    const int64_t rows = logits.size(0);
    const int64_t vocab = logits.size(1);
    const auto row_options = logits.options().dtype(torch::kFloat32);
    auto loss = torch::empty({rows}, row_options);
    auto lse = torch::empty({rows}, row_options);
    cuda::launch_cross_entropy_forward(logits.data_ptr(), cuda_dtype(logits, "softmax_cross_entropy"),
                                       targets.data_ptr<int64_t>(), mask.data_ptr<bool>(), rows, vocab,
                                       static_cast<float>(label_smoothing), loss.data_ptr<float>(),
                                       lse.data_ptr<float>(), at::cuda::getCurrentCUDAStream());
    ctx->save_for_backward({logits, targets, mask, lse});
    ctx->saved_data["label_smoothing"] = label_smoothing;
    return loss;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto& logits = saved[0];
    const auto& targets = saved[1];
    const auto& mask = saved[2];
    const auto& lse = saved[3];
    const double label_smoothing = ctx->saved_data["label_smoothing"].toDouble();
    const c10::cuda::CUDAGuard guard(logits.device());
    // The upstream gradient of the per-row losses (a broadcast scalar when the
    // caller sums them): [N] fp32, N floats at most.
    const auto grad_loss = grad_outputs[0].to(torch::kFloat32).contiguous();
    auto grad_logits = torch::empty_like(logits, torch::MemoryFormat::Contiguous);
    cuda::launch_cross_entropy_backward(
        logits.data_ptr(), cuda_dtype(logits, "softmax_cross_entropy"), targets.data_ptr<int64_t>(),
        mask.data_ptr<bool>(), lse.data_ptr<float>(), grad_loss.data_ptr<float>(), logits.size(0), logits.size(1),
        static_cast<float>(label_smoothing), grad_logits.data_ptr(), at::cuda::getCurrentCUDAStream());
    return {grad_logits, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

// The kernel treats a counted row whose target lies outside [0, V) as masked
// (it never reads outside the row); such a row is reported here instead, from
// the same device-to-host copy that fetches the token count, so the check
// costs no synchronisation of its own.
CrossEntropyResult fused_softmax_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                               const torch::Tensor& mask, double label_smoothing) {
  const auto device = logits.device();
  const int64_t vocab = logits.size(1);
  const auto targets_d = targets.to(device, torch::kInt64).contiguous();
  const auto mask_d = mask.to(device, torch::kBool).contiguous();
  const auto row_loss = FusedSoftmaxCrossEntropy::apply(logits.contiguous(), targets_d, mask_d, label_smoothing);

  CrossEntropyResult result;
  result.loss_sum = row_loss.sum();
  const auto bad_targets = mask_d.logical_and(targets_d.lt(0).logical_or(targets_d.ge(vocab)));
  const auto counts = torch::stack({mask_d.sum(), bad_targets.sum()}).to(torch::kCPU);
  result.num_tokens = counts[0].item<int64_t>();
  const int64_t bad = counts[1].item<int64_t>();
  if (bad > 0) {
    throw std::invalid_argument("softmax_cross_entropy: " + std::to_string(bad) + " counted target(s) outside [0, " +
                                std::to_string(vocab) + ")");
  }
  return result;
}

#endif  // MOETRAIN_CUDA_KERNELS

}  // namespace

CrossEntropyResult softmax_cross_entropy_reference(const torch::Tensor& logits, const torch::Tensor& targets,
                                                   const torch::Tensor& mask, double label_smoothing) {
  const auto log_probs = torch::log_softmax(logits.to(torch::kFloat32), /*dim=*/-1);
  // Masked-out targets may hold any id (padding); gather index 0 there instead.
  const auto safe_targets = torch::where(mask, targets, torch::zeros_like(targets));
  auto nll = -log_probs.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1);
  if (label_smoothing > 0.0) {
    const auto smooth = -log_probs.mean(-1);
    nll = (1.0 - label_smoothing) * nll + label_smoothing * smooth;
  }
  CrossEntropyResult result;
  result.loss_sum = (nll * mask.to(torch::kFloat32)).sum();
  result.num_tokens = mask.sum().item<int64_t>();
  return result;
}

CrossEntropyResult softmax_cross_entropy(const torch::Tensor& logits, const torch::Tensor& targets,
                                         const torch::Tensor& mask, double label_smoothing) {
  if (logits.dim() != 2 || targets.dim() != 1 || mask.dim() != 1 || logits.size(0) != targets.size(0) ||
      targets.size(0) != mask.size(0)) {
    throw std::invalid_argument("softmax_cross_entropy: expected logits [N,V], targets [N], mask [N]");
  }
  if (!(label_smoothing >= 0.0 && label_smoothing < 1.0)) {  // NaN too
    throw std::invalid_argument("softmax_cross_entropy: label_smoothing must be in [0, 1)");
  }
#ifdef MOETRAIN_CUDA_KERNELS
  if (use_cuda_kernel(logits) && cuda_kernel_dtype(logits) && logits.size(1) > 0) {
    return fused_softmax_cross_entropy(logits, targets, mask, label_smoothing);
  }
#endif
  return softmax_cross_entropy_reference(logits, targets, mask, label_smoothing);
}

}  // namespace moetrain::kernels
