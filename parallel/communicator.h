// Communicator: collectives on torch::Tensor over a fixed group of ranks.
//
// Every rank of the group must make the same calls in the same order with
// tensors of matching shape and dtype; calls block until the result is in the
// output tensor (the NCCL backend enqueues on its own stream and the result
// is ready for later work on that stream, see nccl_communicator.h).
// Tensors must be contiguous. The MPI backend takes CPU tensors and reduces
// bf16/fp16 in fp32; the NCCL backend takes CUDA tensors.
//
// Every call adds to per-operation counters (calls, bytes, seconds). Bytes
// follow the ZeRO paper's accounting of what one rank moves: all_reduce counts
// 2x the tensor's bytes (a reduce-scatter plus an all-gather), reduce_scatter
// counts its input's bytes, all_gather its output's bytes, broadcast, send and
// recv the tensor's bytes, all_to_all the bytes this rank sends, send_recv the
// bytes it sends plus the bytes it receives (what a send and a recv of the same
// tensors would count together).
//
// Failure: a call that does not finish within the timeout given at creation
// aborts the whole job (MPI_Abort) after printing one line naming the rank and
// the operation; a dead peer makes mpirun end the job. Nothing hangs.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <map>
#include <memory>
#include <stdexcept>
#include <string>
#include <vector>

namespace moetrain::parallel {

enum class ReduceOp { Sum, Max, Min };

class CommunicatorError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

struct OpStats {
  int64_t calls = 0;
  int64_t bytes = 0;
  double seconds = 0;
};

// Keyed by operation name: "all_reduce", "reduce_scatter", "all_gather",
// "broadcast", "all_to_all", "send", "recv", "send_recv", "barrier".
using CommStats = std::map<std::string, OpStats>;

class Communicator {
 public:
  virtual ~Communicator() = default;

  virtual int64_t rank() const = 0;
  virtual int64_t size() const = 0;
  virtual std::string backend() const = 0;  // "mpi" or "nccl"

  // In place: every rank ends with the reduction over all ranks.
  virtual void all_reduce(torch::Tensor& tensor, ReduceOp op = ReduceOp::Sum) = 0;
  // input [size * n] -> output [n]: this rank's chunk of the reduction.
  virtual void reduce_scatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op = ReduceOp::Sum) = 0;
  // input [n] -> output [size * n], rank r's input at [r*n, (r+1)*n).
  virtual void all_gather(const torch::Tensor& input, torch::Tensor& output) = 0;
  virtual void broadcast(torch::Tensor& tensor, int64_t root) = 0;
  // Rows (dim 0) of `input`: the first send_counts[0] go to rank 0, the next
  // send_counts[1] to rank 1, ...; `output` receives recv_counts[r] rows from
  // rank r in rank order. Counts may be zero. Shapes past dim 0 must match.
  virtual void all_to_all(const torch::Tensor& input, torch::Tensor& output, const std::vector<int64_t>& send_counts,
                          const std::vector<int64_t>& recv_counts) = 0;
  virtual void send(const torch::Tensor& tensor, int64_t dst) = 0;
  virtual void recv(torch::Tensor& tensor, int64_t src) = 0;
  // Sends `sends` to rank `dst` and receives `recvs` from rank `src` in one
  // step: every send and receive is posted before any is waited for, and the
  // call returns when all have completed. Two neighbours that send to each
  // other at once therefore never deadlock, whatever the message sizes (two
  // blocking sends would, past the transport's eager limit). dst may equal
  // src. dst = -1 sends nothing (`sends` must then be empty), src = -1
  // receives nothing (`recvs` must be empty); with nothing to move the call
  // returns at once and counts nothing. Messages between two ranks match in
  // order: the peer lists the tensors it sends to (receives from) this rank in
  // the order this rank receives (sends) them, in send_recv or in plain
  // send/recv calls. Only the named peers take part (not a collective).
  virtual void send_recv(const std::vector<torch::Tensor>& sends, int64_t dst, std::vector<torch::Tensor>& recvs,
                         int64_t src) = 0;
  // One tensor each way; a peer of -1 skips that side (its tensor may then be
  // undefined).
  void send_recv(const torch::Tensor& send, int64_t dst, torch::Tensor& recv, int64_t src) {
    std::vector<torch::Tensor> sends, recvs;
    if (dst != -1) sends.push_back(send);
    if (src != -1) recvs.push_back(recv);
    send_recv(sends, dst, recvs, src);
  }
  virtual void barrier() = 0;

  // A communicator over `ranks` (ranks of this communicator, ascending, must
  // contain this rank). Collective: every rank of this communicator calls it,
  // each with the group it belongs to; groups must partition the ranks.
  virtual std::unique_ptr<Communicator> split(const std::vector<int64_t>& ranks) = 0;

  const CommStats& stats() const { return stats_; }
  void reset_stats() { stats_.clear(); }

 protected:
  CommStats stats_;
};

}  // namespace moetrain::parallel
