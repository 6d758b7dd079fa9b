#include "kernels/moe_permute.h"

#include <stdexcept>
#include <string>

#include "kernels/dispatch.h"

#ifdef MOETRAIN_CUDA_KERNELS
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>

#include "kernels/cuda/moe_permute_launch.h"
#endif

namespace moetrain::kernels {

namespace {

void check_token_index(const torch::Tensor& token_index, const torch::Tensor& like, const char* who) {
  if (!token_index.defined() || token_index.dim() != 1 || token_index.scalar_type() != torch::kLong ||
      token_index.device() != like.device()) {
    throw std::invalid_argument(std::string(who) + ": expected token_index [M] int64 on " + c10::str(like.device()) +
                                ", got " + describe_tensor(token_index));
  }
}

void check_permute_args(const torch::Tensor& x, const torch::Tensor& token_index) {
  if (!x.defined() || x.dim() != 2 || !x.is_floating_point()) {
    throw std::invalid_argument("permute_rows: expected x [N, D] floating point, got " + describe_tensor(x));
  }
  check_token_index(token_index, x, "permute_rows");
}

void check_unpermute_args(const torch::Tensor& expert_output, const torch::Tensor& gates,
                          const torch::Tensor& token_index, int64_t num_tokens) {
  if (!expert_output.defined() || expert_output.dim() != 2 || !expert_output.is_floating_point()) {
    throw std::invalid_argument("unpermute_rows: expected expert_output [M, D] floating point, got " +
                                describe_tensor(expert_output));
  }
  const int64_t m = expert_output.size(0);
  check_token_index(token_index, expert_output, "unpermute_rows");
  if (token_index.size(0) != m) {
    throw std::invalid_argument("unpermute_rows: token_index has " + std::to_string(token_index.size(0)) +
                                " rows, expert_output " + std::to_string(m));
  }
  if (!gates.defined() || gates.dim() != 1 || gates.size(0) != m || gates.scalar_type() != torch::kFloat ||
      gates.device() != expert_output.device()) {
    throw std::invalid_argument("unpermute_rows: expected gates [" + std::to_string(m) + "] float32 on " +
                                c10::str(expert_output.device()) + ", got " + describe_tensor(gates));
  }
  if (num_tokens < 0) {
    throw std::invalid_argument("unpermute_rows: num_tokens must be >= 0, got " + std::to_string(num_tokens));
  }
}

#ifdef MOETRAIN_CUDA_KERNELS

// The rows of each token, CSR style: token t's rows are
// rows[offsets[t] .. offsets[t+1]), in increasing row order.
struct TokenRows {
  torch::Tensor rows;     // [M] int64
  torch::Tensor offsets;  // [num_tokens + 1] int64
};

TokenRows rows_by_token(const torch::Tensor& token_index, int64_t num_tokens, const char* who) {
  TokenRows csr;
  csr.rows = token_index.argsort(/*stable=*/true, /*dim=*/0, /*descending=*/false);
  const torch::Tensor counts = torch::bincount(token_index, /*weights=*/{}, num_tokens);
  if (counts.size(0) != num_tokens) {
    throw std::invalid_argument(std::string(who) + ": token_index holds a value >= num_tokens (" +
                                std::to_string(num_tokens) + ")");
  }
  csr.offsets = torch::zeros({num_tokens + 1}, token_index.options());
  if (num_tokens > 0) csr.offsets.narrow(0, 1, num_tokens).copy_(counts.cumsum(0));
  return csr;
}

cudaStream_t current_stream() { return at::cuda::getCurrentCUDAStream().stream(); }

// out[t] = sum of (weights[r] *) src[r] over token t's rows; [num_tokens, D] in src's dtype.
torch::Tensor gather_sum_cuda(const torch::Tensor& src, const torch::Tensor& weights, const torch::Tensor& token_index,
                              int64_t num_tokens, const char* who) {
  const TokenRows csr = rows_by_token(token_index, num_tokens, who);
  torch::Tensor out = torch::empty({num_tokens, src.size(1)}, src.options());
  cuda::launch_gather_sum_rows(src.data_ptr(), weights.defined() ? weights.data_ptr<float>() : nullptr,
                               csr.rows.data_ptr<int64_t>(), csr.offsets.data_ptr<int64_t>(), out.data_ptr(),
                               num_tokens, src.size(1), cuda_dtype(src, who), current_stream());
  return out;
}

class PermuteRowsFunction : public torch::autograd::Function<PermuteRowsFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& x,
                               const torch::Tensor& token_index) {
    const c10::cuda::CUDAGuard guard(x.device());
    const torch::Tensor xc = x.contiguous();
    const torch::Tensor index = token_index.contiguous();
    torch::Tensor out = torch::empty({index.size(0), xc.size(1)}, xc.options());
    cuda::launch_permute_rows(xc.data_ptr(), index.data_ptr<int64_t>(), out.data_ptr(), xc.size(0), index.size(0),
                              xc.size(1), cuda_dtype(xc, "permute_rows"), current_stream());
    ctx->save_for_backward({index});
    ctx->saved_data["num_tokens"] = xc.size(0);
    return out;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const torch::Tensor index = ctx->get_saved_variables()[0];
    const int64_t num_tokens = ctx->saved_data["num_tokens"].toInt();
    torch::Tensor grad_x;
    if (ctx->needs_input_grad(0)) {
      const torch::Tensor grad_out = grad_outputs[0].contiguous();
      const c10::cuda::CUDAGuard guard(grad_out.device());
      grad_x = gather_sum_cuda(grad_out, torch::Tensor(), index, num_tokens, "permute_rows backward");
    }
    return {grad_x, torch::Tensor()};
  }
};

class UnpermuteRowsFunction : public torch::autograd::Function<UnpermuteRowsFunction> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& expert_output,
                               const torch::Tensor& gates, const torch::Tensor& token_index, int64_t num_tokens) {
    const c10::cuda::CUDAGuard guard(expert_output.device());
    const torch::Tensor eo = expert_output.contiguous();
    const torch::Tensor g = gates.contiguous();
    const torch::Tensor index = token_index.contiguous();
    torch::Tensor y = gather_sum_cuda(eo, g, index, num_tokens, "unpermute_rows");
    ctx->save_for_backward({eo, g, index});
    return y;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const torch::Tensor& eo = saved[0];
    const torch::Tensor& g = saved[1];
    const torch::Tensor& index = saved[2];
    const bool want_eo = ctx->needs_input_grad(0);
    const bool want_gates = ctx->needs_input_grad(1);
    torch::Tensor grad_eo, grad_gates;
    if (want_eo || want_gates) {
      const torch::Tensor grad_y = grad_outputs[0].contiguous();
      const c10::cuda::CUDAGuard guard(grad_y.device());
      if (want_eo) grad_eo = torch::empty_like(eo);
      if (want_gates) grad_gates = torch::empty_like(g);
      cuda::launch_unpermute_rows_backward(grad_y.data_ptr(), eo.data_ptr(), g.data_ptr<float>(),
                                           index.data_ptr<int64_t>(), want_eo ? grad_eo.data_ptr() : nullptr,
                                           want_gates ? grad_gates.data_ptr<float>() : nullptr, eo.size(0), eo.size(1),
                                           cuda_dtype(eo, "unpermute_rows backward"), current_stream());
    }
    return {grad_eo, grad_gates, torch::Tensor(), torch::Tensor()};
  }
};

#endif  // MOETRAIN_CUDA_KERNELS

// The references on arguments already checked.
torch::Tensor permute_rows_aten(const torch::Tensor& x, const torch::Tensor& token_index) {
  return x.index_select(0, token_index);
}

torch::Tensor unpermute_rows_aten(const torch::Tensor& expert_output, const torch::Tensor& gates,
                                  const torch::Tensor& token_index, int64_t num_tokens) {
  const torch::Tensor weighted = expert_output.to(torch::kFloat) * gates.unsqueeze(1);
  const torch::Tensor y =
      torch::zeros({num_tokens, expert_output.size(1)}, weighted.options()).index_add(0, token_index, weighted);
  return y.to(expert_output.scalar_type());
}

}  // namespace

torch::Tensor permute_rows_reference(const torch::Tensor& x, const torch::Tensor& token_index) {
  check_permute_args(x, token_index);
  return permute_rows_aten(x, token_index);
}

torch::Tensor unpermute_rows_reference(const torch::Tensor& expert_output, const torch::Tensor& gates,
                                       const torch::Tensor& token_index, int64_t num_tokens) {
  check_unpermute_args(expert_output, gates, token_index, num_tokens);
  return unpermute_rows_aten(expert_output, gates, token_index, num_tokens);
}

torch::Tensor permute_rows(const torch::Tensor& x, const torch::Tensor& token_index) {
  check_permute_args(x, token_index);
#ifdef MOETRAIN_CUDA_KERNELS
  if (use_cuda_kernel(x) && cuda_kernel_dtype(x)) return PermuteRowsFunction::apply(x, token_index);
#endif
  return permute_rows_aten(x, token_index);
}

torch::Tensor unpermute_rows(const torch::Tensor& expert_output, const torch::Tensor& gates,
                             const torch::Tensor& token_index, int64_t num_tokens) {
  check_unpermute_args(expert_output, gates, token_index, num_tokens);
#ifdef MOETRAIN_CUDA_KERNELS
  if (use_cuda_kernel(expert_output) && cuda_kernel_dtype(expert_output)) {
    return UnpermuteRowsFunction::apply(expert_output, gates, token_index, num_tokens);
  }
#endif
  return unpermute_rows_aten(expert_output, gates, token_index, num_tokens);
}

}  // namespace moetrain::kernels
