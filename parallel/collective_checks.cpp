#include "parallel/collective_checks.h"

#include <sstream>

#include "parallel/communicator.h"

namespace moetrain::parallel {
namespace {

std::string shape_of(const torch::Tensor& t) {
  std::ostringstream s;
  s << t.sizes();
  return s.str();
}

}  // namespace

std::string format_list(const std::vector<int64_t>& values) {
  std::ostringstream s;
  s << '[';
  for (size_t i = 0; i < values.size(); ++i) s << (i ? ", " : "") << values[i];
  s << ']';
  return s.str();
}

void check_tensor(const std::string& op, const char* what, const torch::Tensor& t, TensorPlace place) {
  if (!t.defined()) throw CommunicatorError(op + ": " + what + " is an undefined tensor");
  if (place == TensorPlace::Cpu && !t.device().is_cpu()) {
    throw CommunicatorError(op + ": " + what + " is on " + t.device().str() +
                            "; the MPI backend takes CPU tensors (use the NCCL communicator for CUDA)");
  }
  if (place == TensorPlace::Cuda && !t.device().is_cuda()) {
    throw CommunicatorError(op + ": " + what + " is on " + t.device().str() + "; the NCCL backend takes CUDA tensors");
  }
  if (!t.is_contiguous()) {
    std::ostringstream s;
    s << op << ": " << what << " is not contiguous (sizes " << t.sizes() << ", strides " << t.strides()
      << "); pass tensor.contiguous()";
    throw CommunicatorError(s.str());
  }
}

void check_same_dtype(const std::string& op, const torch::Tensor& input, const torch::Tensor& output) {
  if (input.scalar_type() != output.scalar_type()) {
    throw CommunicatorError(op + ": input dtype " + std::string(c10::toString(input.scalar_type())) +
                            " differs from output dtype " + c10::toString(output.scalar_type()));
  }
}

void check_scatter_gather_sizes(const std::string& op, const torch::Tensor& big, const char* big_name,
                                const torch::Tensor& small, const char* small_name, int64_t group_size) {
  if (big.numel() != group_size * small.numel()) {
    throw CommunicatorError(op + ": " + big_name + " has " + std::to_string(big.numel()) + " elements (shape " +
                            shape_of(big) + "), expected group size " + std::to_string(group_size) + " x " +
                            small_name + " elements " + std::to_string(small.numel()) + " = " +
                            std::to_string(group_size * small.numel()));
  }
}

void check_no_overlap(const std::string& op, const torch::Tensor& a, const torch::Tensor& b) {
  const auto* a0 = static_cast<const char*>(a.data_ptr());
  const auto* b0 = static_cast<const char*>(b.data_ptr());
  const int64_t an = a.nbytes(), bn = b.nbytes();
  if (an == 0 || bn == 0) return;
  if (a0 < b0 + bn && b0 < a0 + an) {
    throw CommunicatorError(op + ": input and output share memory; they must be distinct buffers");
  }
}

void check_peer(const std::string& op, const char* what, int64_t peer, int64_t group_size) {
  if (peer < 0 || peer >= group_size) {
    throw CommunicatorError(op + ": " + what + " " + std::to_string(peer) + " is outside the group of " +
                            std::to_string(group_size) + " ranks");
  }
}

void check_not_self(const std::string& op, const char* what, int64_t peer, int64_t my_rank) {
  if (peer == my_rank) {
    throw CommunicatorError(op + ": " + what + " " + std::to_string(peer) +
                            " is this rank; blocking send/recv to oneself would deadlock (copy the tensor instead)");
  }
}

int64_t check_all_to_all(const std::string& op, const torch::Tensor& input, const torch::Tensor& output,
                         const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts,
                         int64_t group_size) {
  check_same_dtype(op, input, output);
  if (input.dim() < 1 || output.dim() < 1) {
    throw CommunicatorError(op + ": input and output need at least one dimension (rows are dim 0)");
  }
  if (input.sizes().slice(1) != output.sizes().slice(1)) {
    throw CommunicatorError(op + ": input shape " + shape_of(input) + " and output shape " + shape_of(output) +
                            " differ past dim 0");
  }
  auto check_counts = [&](const std::vector<int64_t>& counts, const char* name, int64_t rows, const char* tensor_name) {
    if (static_cast<int64_t>(counts.size()) != group_size) {
      throw CommunicatorError(op + ": " + name + " has " + std::to_string(counts.size()) +
                              " entries, expected one per rank (" + std::to_string(group_size) + ")");
    }
    int64_t total = 0;
    for (int64_t c : counts) {
      if (c < 0) throw CommunicatorError(op + ": " + name + " " + format_list(counts) + " has a negative count");
      total += c;
    }
    if (total != rows) {
      throw CommunicatorError(op + ": " + name + " " + format_list(counts) + " sum to " + std::to_string(total) +
                              " rows but " + tensor_name + " has " + std::to_string(rows));
    }
  };
  check_counts(send_counts, "send_counts", input.size(0), "input");
  check_counts(recv_counts, "recv_counts", output.size(0), "output");
  int64_t row = 1;
  for (int64_t d : input.sizes().slice(1)) row *= d;
  return row;
}

void check_split_ranks(const std::vector<int64_t>& ranks, int64_t my_rank, int64_t group_size,
                       const std::string& backend) {
  const std::string op = "split (" + backend + ")";
  if (ranks.empty()) throw CommunicatorError(op + ": empty rank list");
  bool mine = false;
  for (size_t i = 0; i < ranks.size(); ++i) {
    if (ranks[i] < 0 || ranks[i] >= group_size) {
      throw CommunicatorError(op + ": rank " + std::to_string(ranks[i]) + " in " + format_list(ranks) +
                              " is outside the group of " + std::to_string(group_size) + " ranks");
    }
    if (i > 0 && ranks[i] <= ranks[i - 1]) {
      throw CommunicatorError(op + ": ranks " + format_list(ranks) + " must be ascending and distinct");
    }
    mine = mine || ranks[i] == my_rank;
  }
  if (!mine) {
    throw CommunicatorError(op + ": ranks " + format_list(ranks) + " do not contain this rank (" +
                            std::to_string(my_rank) + ")");
  }
}

void check_send_recv_peers(const std::string& op, size_t sends, int64_t dst, size_t recvs, int64_t src, int64_t my_rank,
                           int64_t group_size) {
  if (dst == -1 && sends > 0) {
    throw CommunicatorError(op + ": dst is -1 (no send) but " + std::to_string(sends) + " tensors were given to send");
  }
  if (src == -1 && recvs > 0) {
    throw CommunicatorError(op + ": src is -1 (no receive) but " + std::to_string(recvs) +
                            " tensors were given to receive into");
  }
  if (sends > 0) {
    check_peer(op, "dst", dst, group_size);
    check_not_self(op, "dst", dst, my_rank);
  }
  if (recvs > 0) {
    check_peer(op, "src", src, group_size);
    check_not_self(op, "src", src, my_rank);
  }
}

void check_send_recv_buffers(const std::string& op, const std::vector<torch::Tensor>& sends,
                             const std::vector<torch::Tensor>& recvs) {
  for (size_t i = 0; i < recvs.size(); ++i) {
    for (const torch::Tensor& t : sends) check_no_overlap(op, t, recvs[i]);
    for (size_t j = 0; j < i; ++j) check_no_overlap(op, recvs[j], recvs[i]);
  }
}

}  // namespace moetrain::parallel
