// Argument checks shared by the MPI and NCCL communicators, so both backends
// reject the same mistakes with the same words. Each throws CommunicatorError
// naming the operation ("all_reduce (mpi): ..."); none communicates, so a
// rejected call leaves the other ranks waiting in the collective until the
// watchdog ends the job (a bad argument is a bug, not a condition to recover
// from).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>
#include <vector>

namespace moetrain::parallel {

// Where a communicator wants its tensors.
enum class TensorPlace { Cpu, Cuda };

// Defined, contiguous, on the right kind of device. `what` names the argument
// ("tensor", "input", "output").
void check_tensor(const std::string& op, const char* what, const torch::Tensor& t, TensorPlace place);

// Same dtype for both arguments of a two-tensor op.
void check_same_dtype(const std::string& op, const torch::Tensor& input, const torch::Tensor& output);

// reduce_scatter / all_gather: big.numel() == group_size * small.numel().
void check_scatter_gather_sizes(const std::string& op, const torch::Tensor& big, const char* big_name,
                                const torch::Tensor& small, const char* small_name, int64_t group_size);

// The two buffers must not overlap (MPI and NCCL forbid aliasing there).
void check_no_overlap(const std::string& op, const torch::Tensor& a, const torch::Tensor& b);

// 0 <= peer < group_size; `what` is "root", "dst" or "src".
void check_peer(const std::string& op, const char* what, int64_t peer, int64_t group_size);

// send/recv to this rank itself: a blocking send waits for a recv that the same
// thread can only post afterwards (NCCL always deadlocks, MPI for large
// tensors), so it is rejected everywhere rather than working only sometimes.
void check_not_self(const std::string& op, const char* what, int64_t peer, int64_t my_rank);

// all_to_all: dims >= 1, shapes past dim 0 equal, one non-negative count per
// rank, send counts summing to input rows and recv counts to output rows.
// Returns the elements in one row.
// send_recv's arguments, before any tensor is looked at: dst/src -1 only with
// nothing on that side, and real peers in the group other than this rank.
void check_send_recv_peers(const std::string& op, size_t sends, int64_t dst, size_t recvs, int64_t src, int64_t my_rank,
                           int64_t group_size);
// No receive buffer overlaps a send buffer or another receive buffer.
void check_send_recv_buffers(const std::string& op, const std::vector<torch::Tensor>& sends,
                             const std::vector<torch::Tensor>& recvs);

int64_t check_all_to_all(const std::string& op, const torch::Tensor& input, const torch::Tensor& output,
                         const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts,
                         int64_t group_size);

// split: ascending, distinct, in [0, group_size), containing `my_rank`.
void check_split_ranks(const std::vector<int64_t>& ranks, int64_t my_rank, int64_t group_size,
                       const std::string& backend);

// "[0, 1, 2]": for messages.
std::string format_list(const std::vector<int64_t>& values);

}  // namespace moetrain::parallel
