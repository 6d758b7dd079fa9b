// NcclCommunicator: the Communicator of communicator.h over NCCL, for
// contiguous CUDA tensors on one device, with host tensors handed to an MPI
// twin. Built only when LibTorch has CUDA and NCCL is found (CMake option
// MOETRAIN_WITH_NCCL); otherwise nccl_compiled() is false and
// make_nccl_communicator() throws CommunicatorError.
//
// What every rank must call: make_nccl_communicator() is collective over the
// MPI bootstrap communicator (rank 0 makes the ncclUniqueId and broadcasts it
// over MPI); split() and every operation are collective over this
// communicator, in the same order on every rank, except send/recv, which pair
// one sender with one receiver. One rank per GPU: NCCL refuses two ranks of a
// communicator on one device (parallel/device_map.h checks that first).
//
// Device and host tensors. CUDA tensors go through NCCL. CPU tensors (host
// scalars: token counts, norms, flags, MoE split sizes) go through the MPI
// twin, a duplicate of the bootstrap's MPI communicator over the same ranks,
// with MPI's blocking semantics: MPI stays the control plane. Every rank of
// the group must pass tensors on the same kind of device to a given call.
//
// Streams, and no host blocking. Each communicator owns a CUDA stream. An
// operation
//   1. makes that stream wait (cudaEvent) for the caller's current torch CUDA
//      stream, so it sees the inputs the caller just computed;
//   2. records a timing event, enqueues the NCCL kernel(s), records another;
//   3. makes the caller's current stream wait for the second event, so later
//      work on it sees the result;
// and returns: the host does not wait. It waits only where it reads a value
// (a .item(), a copy to the host), as torch's own kernels do. A caller that
// wants the collective to overlap its later work (the gradient reducer)
// calls it with a side stream as the current stream (parallel/side_stream.h)
// and joins that stream when it needs the result.
//
// Tensor lifetimes need no care from callers: an input freed right after the
// call is reused by the caching allocator only for work on the caller's
// stream, which is ordered after the collective by step 3.
//
// Timing: an operation's seconds are the time between its two events, i.e.
// time on this communicator's stream, excluding compute still queued before
// it. They are collected when the events have completed (at the next call,
// or when stats() is read, which waits for every queued operation).
//
// Timeout and errors. The communicator is created nonblocking
// (ncclConfig_t::blocking = 0), so no NCCL call can hold a thread for long.
// Each queued operation opens a watchdog scope that the watchdog thread
// closes when the operation's event completes (Watchdog::watch_until); one
// that does not complete within the timeout makes the watchdog print its one
// line, abort the NCCL communicator, and end the job. The watchdog thread
// also polls ncclCommGetAsyncError, so a peer's network failure ends the job
// with NCCL's error string. The main thread never touches an aborted
// communicator: every NCCL call holds the communicator's lock and first
// checks whether an abort has begun; the watchdog takes the same lock before
// ncclCommAbort.
//
// Teardown is bounded: the destructor finalizes the communicator
// (ncclCommFinalize, which flushes queued work), waits at most the timeout
// for that, then destroys it (or aborts it if finalizing did not finish).
// ProcessGroups are destroyed before MPI_Finalize, so this always runs while
// MPI is up.
//
// dtypes: float32, float64, bfloat16 and float16 (reduced natively by NCCL),
// int32, int64, int8, uint8, bool (moved as uint8; Sum and Max are OR, Min is
// AND, as in the MPI backend). Byte stats follow communicator.h. One thread
// at a time per communicator; send/recv to oneself are rejected.
//
// all_to_all is grouped ncclSend/ncclRecv (rows to itself included), and so is
// send_recv (all its sends and receives in one ncclGroupStart/ncclGroupEnd, so
// neighbours exchanging at once cannot deadlock). split() is ncclCommSplit of
// this communicator (children share its resources), with the MPI twin split
// alongside.
#pragma once

#include <memory>

#include "parallel/communicator.h"

namespace moetrain::parallel {

class NcclCommunicator : public Communicator {
 public:
  // Use make_nccl_communicator().
  struct State;
  explicit NcclCommunicator(std::unique_ptr<State> state);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int64_t rank() const override;
  int64_t size() const override;
  std::string backend() const override { return "nccl"; }
  bool asynchronous() const override { return true; }

  void all_reduce(torch::Tensor& tensor, ReduceOp op = ReduceOp::Sum) override;
  void reduce_scatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op = ReduceOp::Sum) override;
  void all_gather(const torch::Tensor& input, torch::Tensor& output) override;
  void broadcast(torch::Tensor& tensor, int64_t root) override;
  void all_to_all(const torch::Tensor& input, torch::Tensor& output, const std::vector<int64_t>& send_counts,
                  const std::vector<int64_t>& recv_counts) override;
  void send(const torch::Tensor& tensor, int64_t dst) override;
  void recv(torch::Tensor& tensor, int64_t src) override;
  using Communicator::send_recv;
  void send_recv(const std::vector<torch::Tensor>& sends, int64_t dst, std::vector<torch::Tensor>& recvs,
                 int64_t src) override;
  // A one-element all_reduce on the device, waited for on the host.
  void barrier() override;
  std::unique_ptr<Communicator> split(const std::vector<int64_t>& ranks) override;

  int device_index() const;
  // Names the group in the watchdog scopes of this communicator and its MPI
  // twin.
  void set_label(const std::string& label) override;

 protected:
  void settle_stats() const override;

 private:
  std::unique_ptr<State> state_;
};

// True when this build contains the NCCL backend.
bool nccl_compiled();

// An NCCL communicator over the same ranks as `mpi_bootstrap` (which must be
// an MpiCommunicator: its MPI communicator carries the unique id and is
// duplicated as the twin), using GPU `device_index` on this rank. Collective
// over mpi_bootstrap. Throws CommunicatorError if NCCL is not compiled in, the
// bootstrap is not MPI, or the device does not exist.
std::unique_ptr<Communicator> make_nccl_communicator(const Communicator& mpi_bootstrap, int device_index,
                                                     double timeout_s);

}  // namespace moetrain::parallel
