// Communicator: collectives on torch::Tensor over a fixed group of ranks.
//
// Every rank of the group must make the same calls in the same order with
// tensors of matching shape and dtype. Tensors must be contiguous. When a call
// returns, its result is ready for later work on the caller's current stream
// (CUDA) or in place (CPU): the MPI backend (CPU tensors, bf16/fp16 reduced in
// fp32) and the host-staged backend return with the result in place; the NCCL
// backend (asynchronous() is true) only enqueues the work on its own stream
// and makes the caller's stream wait for it, so the host runs ahead and waits
// only where it reads a value (see nccl_communicator.h).
//
// Every call adds to per-operation counters (calls, bytes, seconds). Bytes
// follow the ZeRO paper's accounting of what one rank moves: all_reduce counts
// 2x the tensor's bytes (a reduce-scatter plus an all-gather), reduce_scatter
// counts its input's bytes, all_gather its output's bytes, broadcast, send and
// recv the tensor's bytes, all_to_all the bytes this rank sends, send_recv the
// bytes it sends plus the bytes it receives (what a send and a recv of the same
// tensors would count together). Seconds are wall time of the call on the
// host backends, time on the communicator's stream on NCCL.
//
// Failure: a call that does not finish within the timeout given at creation
// aborts the whole job (MPI_Abort) after printing one line naming the rank and
// the operation; a dead peer makes mpirun end the job. Nothing hangs.
#pragma once

#include <torch/torch.h>

#include <chrono>
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
  virtual std::string backend() const = 0;  // "mpi", "mpi-staged" or "nccl"
  // True when calls only enqueue work on a device stream and return before
  // it has run (NCCL); false when they return with the result in place.
  virtual bool asynchronous() const { return false; }

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

  // The group's name ("dp", "tp", ...), given by whoever made it
  // (ProcessGroups); the collective watchdog's scopes, and so its timeout line
  // and the stall line, name it. Empty unless set.
  virtual void set_label(const std::string& label) { label_ = label; }
  const std::string& label() const { return label_; }

  // Counters of the calls made so far (operations still queued on a device
  // are waited for and counted first).
  const CommStats& stats() const {
    settle_stats();
    return stats_;
  }
  void reset_stats() {
    settle_stats();
    stats_.clear();
  }

 protected:
  // Adds what asynchronous operations have measured since to stats_.
  virtual void settle_stats() const {}

  // Runs `call`, which makes one `op` call on `delegate`, and counts it here
  // as `delegate` counted it (bytes), with the seconds of the whole of
  // `call`. A call the delegate rejected before moving anything counts
  // nothing.
  template <class F>
  void count_delegated(const Communicator& delegate, const std::string& op, F&& call) {
    const auto start = std::chrono::steady_clock::now();
    const auto find = [&](const CommStats& s) { return s.count(op) ? s.at(op) : OpStats{}; };
    const OpStats before = find(delegate.stats());
    call();
    const OpStats after = find(delegate.stats());
    if (after.calls == before.calls) return;
    OpStats& mine = stats_[op];
    mine.calls += after.calls - before.calls;
    mine.bytes += after.bytes - before.bytes;
    mine.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  // `op` as a watchdog scope names it: "all_reduce on the dp group" when
  // labelled.
  std::string scope_name(const std::string& op) const {
    return label_.empty() ? op : op + " on the " + label_ + " group";
  }

  mutable CommStats stats_;
  std::string label_;
};

}  // namespace moetrain::parallel
