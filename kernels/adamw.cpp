#include "kernels/adamw.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/dispatch.h"

#ifdef MOETRAIN_CUDA_KERNELS
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/cuda/adamw_launch.h"
#endif

namespace moetrain::kernels {

namespace {

void check_tensor(const torch::Tensor& t, const char* what, size_t group, int64_t numel, const torch::Device& device) {
  const std::string where = "adamw_update: group " + std::to_string(group) + " " + what;
  if (!t.defined()) throw std::invalid_argument(where + " is undefined");
  if (t.scalar_type() != torch::kFloat || !t.is_contiguous() || t.numel() != numel || t.device() != device) {
    throw std::invalid_argument(where + ": expected a contiguous float32 tensor of " + std::to_string(numel) +
                                " elements on " + c10::str(device) + ", got " + describe_tensor(t) +
                                (t.is_contiguous() ? "" : " (not contiguous)"));
  }
}

void check_arguments(const std::vector<AdamWTensors>& groups, const AdamWHyperparameters& h) {
  if (h.step < 1) {
    throw std::invalid_argument("adamw_update: step must be >= 1, got " + std::to_string(h.step));
  }
  if (groups.empty()) return;
  if (!groups[0].param.defined()) throw std::invalid_argument("adamw_update: group 0 param is undefined");
  const torch::Device device = groups[0].param.device();
  for (size_t i = 0; i < groups.size(); ++i) {
    const AdamWTensors& g = groups[i];
    if (!g.param.defined())
      throw std::invalid_argument("adamw_update: group " + std::to_string(i) + " param is undefined");
    const int64_t n = g.param.numel();
    check_tensor(g.param, "param", i, n, device);
    check_tensor(g.grad, "grad", i, n, device);
    check_tensor(g.exp_avg, "exp_avg", i, n, device);
    check_tensor(g.exp_avg_sq, "exp_avg_sq", i, n, device);
  }
}

double bias_correction(double beta, int64_t step) { return 1.0 - std::pow(beta, static_cast<double>(step)); }

bool decays(const AdamWTensors& g, const AdamWHyperparameters& h) { return g.weight_decay && h.weight_decay != 0.0; }

#ifdef MOETRAIN_CUDA_KERNELS

void adamw_update_cuda(std::vector<AdamWTensors>& groups, const AdamWHyperparameters& h) {
  const c10::cuda::CUDAGuard guard(groups[0].param.device());
  std::vector<cuda::AdamWGroup> table;
  table.reserve(groups.size());
  for (AdamWTensors& g : groups) {
    cuda::AdamWGroup entry;
    entry.param = g.param.data_ptr<float>();
    entry.grad = g.grad.data_ptr<float>();
    entry.exp_avg = g.exp_avg.data_ptr<float>();
    entry.exp_avg_sq = g.exp_avg_sq.data_ptr<float>();
    entry.numel = g.param.numel();
    entry.weight_decay = decays(g, h);
    table.push_back(entry);
  }
  // The scalars the reference's ATen ops use, rounded to fp32 as those ops do.
  cuda::AdamWScalars s;
  s.decay_factor = static_cast<float>(1.0 - h.lr * h.weight_decay);
  s.beta1 = static_cast<float>(h.beta1);
  s.one_minus_beta1 = static_cast<float>(1.0 - h.beta1);
  s.beta2 = static_cast<float>(h.beta2);
  s.one_minus_beta2 = static_cast<float>(1.0 - h.beta2);
  s.sqrt_bias_correction2 = static_cast<float>(std::sqrt(bias_correction(h.beta2, h.step)));
  s.eps = static_cast<float>(h.eps);
  s.step_size = static_cast<float>(-h.lr / bias_correction(h.beta1, h.step));
  cuda::launch_adamw(table.data(), static_cast<int64_t>(table.size()), s, at::cuda::getCurrentCUDAStream().stream());
}

#endif  // MOETRAIN_CUDA_KERNELS

// The reference on arguments already checked.
void adamw_update_aten(std::vector<AdamWTensors>& groups, const AdamWHyperparameters& h) {
  torch::NoGradGuard no_grad;
  const double bc1 = bias_correction(h.beta1, h.step);
  const double bc2 = bias_correction(h.beta2, h.step);
  for (AdamWTensors& g : groups) {
    if (decays(g, h)) g.param.mul_(1.0 - h.lr * h.weight_decay);
    g.exp_avg.mul_(h.beta1).add_(g.grad, 1.0 - h.beta1);
    g.exp_avg_sq.mul_(h.beta2).addcmul_(g.grad, g.grad, 1.0 - h.beta2);
    const torch::Tensor denom = (g.exp_avg_sq.sqrt() / std::sqrt(bc2)).add_(h.eps);
    g.param.addcdiv_(g.exp_avg, denom, -h.lr / bc1);
  }
}

}  // namespace

void adamw_update_reference(std::vector<AdamWTensors>& groups, const AdamWHyperparameters& h) {
  check_arguments(groups, h);
  adamw_update_aten(groups, h);
}

void adamw_update(std::vector<AdamWTensors>& groups, const AdamWHyperparameters& h) {
  check_arguments(groups, h);
  if (groups.empty()) return;
#ifdef MOETRAIN_CUDA_KERNELS
  if (use_cuda_kernel(groups[0].param)) {
    adamw_update_cuda(groups, h);
    return;
  }
#endif
  adamw_update_aten(groups, h);
}

}  // namespace moetrain::kernels
