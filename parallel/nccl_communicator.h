// NcclCommunicator: the Communicator of communicator.h over NCCL, for
// contiguous CUDA tensors on one device. Built only when LibTorch has CUDA and
// NCCL is found (CMake option MOETRAIN_WITH_NCCL); otherwise nccl_compiled()
// is false and make_nccl_communicator() throws CommunicatorError.
//
// What every rank must call: make_nccl_communicator() is collective over the
// MPI bootstrap communicator (rank 0 makes the ncclUniqueId and broadcasts it
// over MPI); split() and every operation are collective over this
// communicator, in the same order on every rank, except send/recv, which pair
// one sender with one receiver. One rank per GPU: NCCL refuses two ranks of a
// communicator on one device.
//
// Streams and blocking: each communicator owns a CUDA stream. An operation
//   1. makes that stream wait (cudaEvent) for the caller's current torch CUDA
//      stream, so it sees the inputs the caller just computed;
//   2. enqueues the NCCL kernel(s) on it and records a "done" event;
//   3. makes the caller's current stream wait for "done", so later work on it
//      sees the result;
//   4. blocks the host until "done" has completed, polling the event and
//      ncclCommGetAsyncError.
// Step 4 is what communicator.h promises ("calls block until the result is in
// the output tensor"): results are ordered for the caller's stream and for the
// host alike, byte and second stats are true wall time, and the watchdog sees
// exactly when an operation ends. The price is that the host cannot run ahead
// of the GPU across a collective.
//
// Timeout: the watchdog scope covers steps 1-4 (and initialisation); when it
// fires it calls ncclCommAbort (bounded) and MPI_Abort, printing the one line
// of watchdog.h. An asynchronous NCCL error (a peer's network failed) aborts
// the job the same way, with NCCL's error string.
//
// dtypes: float32, float64, bfloat16 and float16 (reduced natively by NCCL),
// int32, int64, int8, uint8, bool (moved as uint8; Sum and Max are OR, Min is
// AND, as in the MPI backend). Stats follow communicator.h exactly as the MPI
// backend does (see mpi_communicator.h).
//
// One thread at a time per communicator (its events are reused per call).
// send/recv to oneself are rejected, as in the MPI backend.
//
// all_to_all is grouped ncclSend/ncclRecv (rows to itself included), and so is
// send_recv (all its sends and receives in one ncclGroupStart/ncclGroupEnd, so
// neighbours exchanging at once cannot deadlock). split()
// splits the MPI bootstrap communicator alongside and creates the child NCCL
// communicator from a fresh unique id broadcast over the MPI sub-communicator,
// so every NCCL communicator keeps an MPI twin over the same ranks.
#pragma once

#include <memory>

#include "parallel/communicator.h"

namespace moetrain::parallel {

class NcclCommunicator : public Communicator {
 public:
  // Use make_nccl_communicator(); this takes the MPI twin (owned) and creates
  // the NCCL communicator over the same ranks.
  struct State;
  explicit NcclCommunicator(std::unique_ptr<State> state);
  ~NcclCommunicator() override;
  NcclCommunicator(const NcclCommunicator&) = delete;
  NcclCommunicator& operator=(const NcclCommunicator&) = delete;

  int64_t rank() const override;
  int64_t size() const override;
  std::string backend() const override { return "nccl"; }

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
