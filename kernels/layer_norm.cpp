#include "kernels/layer_norm.h"

#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/dispatch.h"

#ifdef MOETRAIN_CUDA_KERNELS
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/cuda/layer_norm_launch.h"
#endif

namespace moetrain::kernels {

namespace {

constexpr const char* kOp = "layer_norm_activation";

void check_parameter(const char* name, const torch::Tensor& p, const torch::Tensor& x) {
  const int64_t dim = x.size(-1);
  if (p.dim() != 1 || p.size(0) != dim) {
    throw std::invalid_argument(std::string(kOp) + ": " + name + " must be [" + std::to_string(dim) + "], got " +
                                describe_tensor(p));
  }
  if (!p.is_floating_point()) {
    throw std::invalid_argument(std::string(kOp) + ": " + name + " must be a float tensor, got " + describe_tensor(p));
  }
  if (p.device() != x.device()) {
    throw std::invalid_argument(std::string(kOp) + ": " + name + " is on " + c10::str(p.device()) + " but x is on " +
                                c10::str(x.device()));
  }
}

void check_arguments(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias, double eps) {
  if (!x.defined() || x.dim() < 1 || x.size(-1) == 0) {
    throw std::invalid_argument(std::string(kOp) + ": expected x [..., D] with D > 0, got " +
                                (x.defined() ? describe_tensor(x) : std::string("an undefined tensor")));
  }
  if (!x.is_floating_point()) {
    throw std::invalid_argument(std::string(kOp) + ": x must be a float tensor, got " + describe_tensor(x));
  }
  if (!weight.defined()) throw std::invalid_argument(std::string(kOp) + ": weight is undefined");
  check_parameter("weight", weight, x);
  if (bias.defined()) check_parameter("bias", bias, x);
  if (!(eps >= 0.0) || !std::isfinite(eps)) {
    throw std::invalid_argument(std::string(kOp) + ": eps must be finite and >= 0, got " + std::to_string(eps));
  }
}

torch::Tensor apply_activation(const torch::Tensor& z, NormActivation act) {
  switch (act) {
    case NormActivation::None: return z;
    case NormActivation::ReLU: return torch::relu(z);
    case NormActivation::GELU: return torch::gelu(z);  // approximate = "none": the erf form
    case NormActivation::SiLU: return torch::silu(z);
  }
  throw std::invalid_argument(std::string(kOp) + ": unknown activation " + std::to_string(static_cast<int>(act)));
}

#ifdef MOETRAIN_CUDA_KERNELS

cuda::NormAct cuda_activation(NormActivation act) {
  switch (act) {
    case NormActivation::None: return cuda::NormAct::None;
    case NormActivation::ReLU: return cuda::NormAct::ReLU;
    case NormActivation::GELU: return cuda::NormAct::GELU;
    case NormActivation::SiLU: return cuda::NormAct::SiLU;
  }
  throw std::invalid_argument(std::string(kOp) + ": unknown activation " + std::to_string(static_cast<int>(act)));
}

float* float_ptr_or_null(const torch::Tensor& t) { return t.numel() > 0 ? t.data_ptr<float>() : nullptr; }

// The fused kernel as an autograd node. Inputs: x [..., D] on CUDA, weight [D]
// fp32, bias [D] fp32 or an empty tensor for "no bias" (a C++ autograd
// Function takes no undefined tensors). Saves x, weight, bias and the fp32
// per-row mean and rstd for the backward kernel.
class FusedLayerNormActivation : public torch::autograd::Function<FusedLayerNormActivation> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& weight, const torch::Tensor& bias, double eps, NormActivation act,
                               bool rms) {
    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t cols = x.size(-1);
    const int64_t rows = x.numel() / cols;
    const torch::Tensor x_rows = x.contiguous().view({rows, cols});
    const torch::Tensor w = weight.contiguous();
    const torch::Tensor b = bias.contiguous();
    const auto stats_options = x.options().dtype(torch::kFloat);
    // y and dx are allocated in x's shape (not as views), so that callers may
    // modify them in place.
    torch::Tensor y = torch::empty(x.sizes(), x_rows.options());
    torch::Tensor mean = torch::empty({rows}, stats_options);
    torch::Tensor rstd = torch::empty({rows}, stats_options);
    cuda::layer_norm_forward(x_rows.data_ptr(), w.data_ptr<float>(), float_ptr_or_null(b), y.data_ptr(),
                             mean.data_ptr<float>(), rstd.data_ptr<float>(), rows, cols, cuda_dtype(x, kOp),
                             static_cast<float>(eps), cuda_activation(act), rms, at::cuda::getCurrentCUDAStream());
    ctx->save_for_backward({x_rows, w, b, mean, rstd});
    ctx->saved_data["act"] = static_cast<int64_t>(act);
    ctx->saved_data["rms"] = rms;
    ctx->saved_data["x_sizes"] = x.sizes().vec();
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& x = saved[0];
    const torch::Tensor& w = saved[1];
    const torch::Tensor& b = saved[2];
    const torch::Tensor& mean = saved[3];
    const torch::Tensor& rstd = saved[4];
    const auto act = static_cast<NormActivation>(ctx->saved_data["act"].toInt());
    const bool rms = ctx->saved_data["rms"].toBool();
    const std::vector<int64_t> x_sizes = ctx->saved_data["x_sizes"].toIntVector();
    const bool has_bias = b.numel() > 0;

    const c10::cuda::CUDAGuard guard(x.device());
    const int64_t rows = x.size(0);
    const int64_t cols = x.size(1);
    const torch::Tensor dy = grad_outputs[0].to(x.scalar_type()).contiguous().view({rows, cols});
    torch::Tensor dx = torch::empty(x_sizes, x.options());
    const int64_t partials = cuda::layer_norm_backward_partials(rows);
    const auto partial_options = x.options().dtype(torch::kFloat);
    torch::Tensor dweight_partial = torch::empty({partials, cols}, partial_options);
    torch::Tensor dbias_partial = has_bias ? torch::empty({partials, cols}, partial_options) : torch::Tensor();
    cuda::layer_norm_backward(dy.data_ptr(), x.data_ptr(), w.data_ptr<float>(), float_ptr_or_null(b),
                              mean.data_ptr<float>(), rstd.data_ptr<float>(), dx.data_ptr(),
                              float_ptr_or_null(dweight_partial), has_bias ? float_ptr_or_null(dbias_partial) : nullptr,
                              rows, cols, cuda_dtype(x, kOp), cuda_activation(act), rms,
                              at::cuda::getCurrentCUDAStream());
    // [partials, D] -> [D], in a fixed order: deterministic.
    torch::Tensor dweight = dweight_partial.sum(0);
    torch::Tensor dbias = has_bias ? dbias_partial.sum(0) : torch::Tensor();
    return {dx, dweight, dbias, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

#endif  // MOETRAIN_CUDA_KERNELS

}  // namespace

const char* norm_activation_name(NormActivation act) {
  switch (act) {
    case NormActivation::None: return "none";
    case NormActivation::ReLU: return "relu";
    case NormActivation::GELU: return "gelu";
    case NormActivation::SiLU: return "silu";
  }
  return "?";
}

namespace {

// The reference on arguments already checked.
torch::Tensor layer_norm_activation_aten(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                         double eps, NormActivation act, bool rms) {
  const int64_t dim = x.size(-1);
  const torch::Tensor x32 = x.to(torch::kFloat);
  const torch::Tensor w32 = weight.to(torch::kFloat);
  const torch::Tensor b32 = bias.defined() ? bias.to(torch::kFloat) : torch::Tensor();
  torch::Tensor y;
  if (rms) {
    y = x32 * torch::rsqrt(x32.pow(2).mean(-1, /*keepdim=*/true) + eps) * w32;
    if (b32.defined()) y = y + b32;
  } else {
    y = torch::layer_norm(x32, {dim}, w32, b32, eps);
  }
  return apply_activation(y, act).to(x.scalar_type());
}

}  // namespace

torch::Tensor layer_norm_activation_reference(const torch::Tensor& x, const torch::Tensor& weight,
                                              const torch::Tensor& bias, double eps, NormActivation act, bool rms) {
  check_arguments(x, weight, bias, eps);
  return layer_norm_activation_aten(x, weight, bias, eps, act, rms);
}

torch::Tensor layer_norm_activation(const torch::Tensor& x, const torch::Tensor& weight, const torch::Tensor& bias,
                                    double eps, NormActivation act, bool rms) {
  check_arguments(x, weight, bias, eps);
#ifdef MOETRAIN_CUDA_KERNELS
  if (use_cuda_kernel(x) && x.size(-1) <= cuda::kLayerNormMaxCols) {
    cuda_dtype(x, kOp);  // float32, bfloat16 or float16, else std::invalid_argument
    // The casts are autograd ops: the gradients come back in the parameters' dtypes.
    const torch::Tensor w32 = weight.to(torch::kFloat);
    const torch::Tensor b32 = bias.defined() ? bias.to(torch::kFloat) : torch::empty({0}, w32.options());
    return FusedLayerNormActivation::apply(x, w32, b32, eps, act, rms);
  }
#endif
  return layer_norm_activation_aten(x, weight, bias, eps, act, rms);
}

}  // namespace moetrain::kernels
