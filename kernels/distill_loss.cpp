#include "kernels/distill_loss.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>
#include <string>

#include "kernels/dispatch.h"

namespace moetrain::kernels {

namespace {

// fp32 elements per chunk when chunk_rows is automatic: 16 MiB.
constexpr int64_t kChunkElements = int64_t{1} << 22;

// logits / T in a fresh fp32 tensor (one buffer, never an alias of the input,
// even when the logits are fp32 already).
torch::Tensor scaled_fp32(const torch::Tensor& logits, double temperature) {
  auto out = torch::empty(logits.sizes(), logits.options().dtype(torch::kFloat32));
  out.copy_(logits);
  return out.div_(temperature);
}

// Per-row KL(p_t || p_s) [n] fp32 of one chunk of rows, masking aside. top_k
// is 0 (all V) or in (0, V).
torch::Tensor chunk_kl(const torch::Tensor& student, const torch::Tensor& teacher, double temperature, int64_t top_k) {
  const auto log_ps = torch::log_softmax(scaled_fp32(student, temperature), /*dim=*/-1);
  torch::Tensor log_pt;
  torch::Tensor log_ps_at;  // the student's log-probabilities where the teacher has mass
  if (top_k > 0) {
    const auto top = scaled_fp32(teacher, temperature).topk(top_k, /*dim=*/-1);
    log_pt = torch::log_softmax(std::get<0>(top), /*dim=*/-1);
    log_ps_at = log_ps.gather(-1, std::get<1>(top));
  } else {
    log_pt = torch::log_softmax(scaled_fp32(teacher, temperature), /*dim=*/-1);
    log_ps_at = log_ps;
  }
  const auto pt = log_pt.exp();
  auto terms = (log_pt - log_ps_at).mul_(pt);
  // A teacher probability of 0 (a logit at -inf, e.g. padded vocabulary
  // columns) contributes 0, not 0 * inf = NaN.
  terms.masked_fill_(pt == 0, 0.0);
  return terms.sum(/*dim=*/-1);
}

// (softmax(s / T) - p_t) / T [n, V] fp32 of one chunk of rows, with p_t zero
// outside the teacher's top k when top_k > 0.
torch::Tensor chunk_grad(const torch::Tensor& student, const torch::Tensor& teacher, double temperature,
                         int64_t top_k) {
  auto grad = torch::softmax(scaled_fp32(student, temperature), /*dim=*/-1);
  if (top_k > 0) {
    const auto top = scaled_fp32(teacher, temperature).topk(top_k, /*dim=*/-1);
    // The top-k indices of a row are distinct: a plain scatter of -p_t added.
    grad.scatter_add_(-1, std::get<1>(top), torch::softmax(std::get<0>(top), /*dim=*/-1).neg_());
  } else {
    grad.sub_(torch::softmax(scaled_fp32(teacher, temperature), /*dim=*/-1));
  }
  return grad.div_(temperature);
}

// The chunked KL as an autograd function: student [N, V], teacher [N, V]
// (detached) and mask [N] bool, all on one device. Returns kl_sum, an fp32
// scalar. Forward keeps only the per-row KL [N] fp32; it saves the inputs
// themselves (their own dtype), and backward recomputes each chunk's softmaxes
// from them, writing the gradient into one tensor of the student's dtype.
class ChunkedDistillKl : public torch::autograd::Function<ChunkedDistillKl> {
 public:
  static torch::Tensor forward(torch::autograd::AutogradContext* ctx, const torch::Tensor& student,
                               const torch::Tensor& teacher, const torch::Tensor& mask, double temperature,
                               int64_t top_k, int64_t chunk_rows) {
    const int64_t rows = student.size(0);
    auto row_kl = torch::zeros({rows}, student.options().dtype(torch::kFloat32));
    for (int64_t start = 0; start < rows; start += chunk_rows) {
      const int64_t n = std::min(chunk_rows, rows - start);
      auto kl = chunk_kl(student.narrow(0, start, n), teacher.narrow(0, start, n), temperature, top_k);
      // masked_fill, not a product: a masked row's KL may be inf or NaN.
      row_kl.narrow(0, start, n).copy_(kl.masked_fill_(mask.narrow(0, start, n).logical_not(), 0.0));
    }
    ctx->save_for_backward({student, teacher, mask});
    ctx->saved_data["temperature"] = temperature;
    ctx->saved_data["top_k"] = top_k;
    ctx->saved_data["chunk_rows"] = chunk_rows;
    return row_kl.sum();
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    const auto saved = ctx->get_saved_variables();
    const auto& student = saved[0];
    const auto& teacher = saved[1];
    const auto& mask = saved[2];
    const double temperature = ctx->saved_data["temperature"].toDouble();
    const int64_t top_k = ctx->saved_data["top_k"].toInt();
    const int64_t chunk_rows = ctx->saved_data["chunk_rows"].toInt();
    // The upstream gradient of kl_sum: a scalar, kept on its device (no sync).
    const auto scale = grad_outputs[0].to(torch::kFloat32);
    auto grad_student = torch::empty_like(student, torch::MemoryFormat::Contiguous);
    const int64_t rows = student.size(0);
    for (int64_t start = 0; start < rows; start += chunk_rows) {
      const int64_t n = std::min(chunk_rows, rows - start);
      auto grad = chunk_grad(student.narrow(0, start, n), teacher.narrow(0, start, n), temperature, top_k);
      grad.mul_(scale).masked_fill_(mask.narrow(0, start, n).logical_not().unsqueeze(1), 0.0);
      grad_student.narrow(0, start, n).copy_(grad);
    }
    return {grad_student, torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

void check_distill_arguments(const torch::Tensor& student, const torch::Tensor& teacher, const torch::Tensor& mask,
                             double temperature, int64_t top_k, int64_t chunk_rows) {
  if (!student.defined() || !teacher.defined() || !mask.defined() || student.dim() != 2 ||
      teacher.sizes() != student.sizes() || mask.dim() != 1 || mask.size(0) != student.size(0)) {
    throw std::invalid_argument(
        "distill_kl: expected student_logits [N,V], teacher_logits [N,V] (the same shape) and mask [N]; got student " +
        describe_tensor(student) + ", teacher " + describe_tensor(teacher) + ", mask " + describe_tensor(mask));
  }
  if (!student.is_floating_point() || !teacher.is_floating_point()) {
    throw std::invalid_argument("distill_kl: logits must be floating point; got student " + describe_tensor(student) +
                                ", teacher " + describe_tensor(teacher));
  }
  if (teacher.device() != student.device()) {
    throw std::invalid_argument("distill_kl: student and teacher logits must be on one device; got student " +
                                describe_tensor(student) + ", teacher " + describe_tensor(teacher));
  }
  if (!(temperature > 0.0 && std::isfinite(temperature))) {  // NaN too
    throw std::invalid_argument("distill_kl: temperature must be positive and finite, got " +
                                std::to_string(temperature));
  }
  if (top_k < 0) {
    throw std::invalid_argument("distill_kl: top_k must be >= 0 (0 = the whole vocabulary), got " +
                                std::to_string(top_k));
  }
  if (chunk_rows < 0) {
    throw std::invalid_argument("distill_kl: chunk_rows must be >= 0 (0 = automatic), got " +
                                std::to_string(chunk_rows));
  }
}

}  // namespace

int64_t distill_chunk_rows(int64_t vocab) { return std::max<int64_t>(1, kChunkElements / std::max<int64_t>(1, vocab)); }

DistillLossResult distill_kl(const torch::Tensor& student_logits, const torch::Tensor& teacher_logits,
                             const torch::Tensor& mask, double temperature, int64_t top_k, int64_t chunk_rows) {
  check_distill_arguments(student_logits, teacher_logits, mask, temperature, top_k, chunk_rows);
  const int64_t vocab = student_logits.size(1);
  const int64_t effective_top_k = top_k >= vocab ? 0 : top_k;
  const int64_t effective_chunk_rows = chunk_rows > 0 ? chunk_rows : distill_chunk_rows(vocab);
  const auto mask_d = mask.to(student_logits.device(), torch::kBool);

  DistillLossResult result;
  result.kl_sum = ChunkedDistillKl::apply(student_logits, teacher_logits.detach(), mask_d, temperature, effective_top_k,
                                          effective_chunk_rows);
  result.num_tokens = mask_d.sum().item<int64_t>();
  return result;
}

}  // namespace moetrain::kernels
