// MpiCommunicator: the Communicator of communicator.h over an MPI
// communicator, for contiguous CPU tensors. make_world_communicator() gives the
// one over every rank of the job; split() gives sub-communicators.
//
// What every rank must call: make_world_communicator() and split() are
// collective over the parent (every rank calls them, in the same order); so is
// every operation, with matching shapes and dtypes, except send/recv, which
// pair one sender with one receiver. All calls block until their result is in
// place.
//
// dtypes: float32, float64, int32, int64, int8, uint8, bool, and bfloat16 /
// float16. Reductions of bf16/fp16 convert to fp32, reduce, and round back
// once (so the result does not depend on the order partial sums arrive in);
// moving them (gather, broadcast, all_to_all, send/recv) copies the raw 16-bit
// values. bool reduces as logic: Sum and Max are OR, Min is AND. uint8/int8
// sums wrap.
//
// Stats (communicator.h's accounting): all_reduce 2 x tensor bytes,
// reduce_scatter input bytes, all_gather output bytes, broadcast/send/recv the
// tensor's bytes, all_to_all input bytes (rows kept on this rank included),
// send_recv the bytes sent plus the bytes received, barrier 0; all in the tensor's own dtype, not the fp32 that bf16
// reductions travel as, so the MPI and NCCL backends report the same numbers. Seconds are wall time of the whole call.
// A call rejected by an argument check counts nothing.
//
// send blocks until MPI has taken the data, which for large tensors means until
// the matching recv has started: order pairs so no cycle of ranks all send
// first (e.g. even ranks send then receive, odd ranks receive then send).
// send_recv posts MPI_Irecv for every receive and MPI_Isend for every send,
// then MPI_Waitall, under one watchdog scope: it never waits on a peer before
// its own receives are posted, so exchanges cannot form a cycle of waiting
// senders.
// Sending to or receiving from oneself is rejected (it would deadlock for large
// tensors, and always does under NCCL). recv of a shorter message than the
// tensor throws CommunicatorError; a longer one is an MPI truncation error,
// which aborts the job.
//
// One thread at a time per communicator (calls on different communicators may
// run on different threads: MPI is initialised with MPI_THREAD_MULTIPLE).
//
// Element counts are ints in MPI: a tensor (all_to_all: an input or output)
// over 2^31 - 1 elements is rejected with CommunicatorError.
#pragma once

// The C API only: Open MPI's deprecated C++ bindings would need libmpi_cxx.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <memory>

#include "parallel/communicator.h"

namespace moetrain::parallel {

class MpiCommunicator : public Communicator {
 public:
  // Takes ownership of `comm` (freed by the destructor unless MPI has been
  // finalised) and sets MPI_ERRORS_RETURN on it so failures reach
  // MOETRAIN_MPI_CHECK. timeout_s <= 0 disables the watchdog.
  MpiCommunicator(MPI_Comm comm, double timeout_s);
  ~MpiCommunicator() override;
  MpiCommunicator(const MpiCommunicator&) = delete;
  MpiCommunicator& operator=(const MpiCommunicator&) = delete;

  int64_t rank() const override { return rank_; }
  int64_t size() const override { return size_; }
  std::string backend() const override { return "mpi"; }

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
  void barrier() override;
  // Checks (after MPI_Comm_split) that the group formed is exactly `ranks` and
  // throws CommunicatorError naming both lists when ranks disagree on groups.
  std::unique_ptr<Communicator> split(const std::vector<int64_t>& ranks) override;

  // The underlying communicator (owned by this object): the NCCL backend
  // broadcasts its unique id over it.
  MPI_Comm mpi_comm() const { return comm_; }
  double timeout_s() const { return timeout_s_; }

 private:
  MPI_Comm comm_;
  int64_t rank_ = 0;
  int64_t size_ = 1;
  double timeout_s_;
};

// The communicator over every rank of the job (a duplicate of MPI_COMM_WORLD,
// so its traffic never mixes with other MPI users'). Initialises MPI if
// needed; collective over the world.
std::unique_ptr<Communicator> make_world_communicator(double timeout_s);

}  // namespace moetrain::parallel
