// HostStagedCommunicator: the Communicator of communicator.h for tensors on
// any device, carried by a host communicator (MPI): every operation copies
// its inputs to host memory, runs the host collective, and copies the
// results back into the caller's tensors on their own device. It is
// `parallel.backend: mpi` for CUDA tensors: for nodes without NCCL, and for
// several ranks sharing one GPU (which NCCL refuses), which is how
// multi-rank CUDA code is tested on a one-GPU machine.
//
// Every call blocks the host until its results are in place (the copies
// wait for the device), so nothing overlaps; it is correct, not fast.
// Inputs are always staged through fresh host buffers, CPU tensors too, so
// its logic is the same on every device. Stats: the host communicator's
// count of the operation (the same bytes an MPI or NCCL call reports), the
// seconds of the whole staged call.
//
// What every rank must call: as for the host communicator (collective
// operations in the same order on every rank; split collective over this
// communicator).
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "parallel/communicator.h"

namespace moetrain::parallel {

class HostStagedCommunicator : public Communicator {
 public:
  explicit HostStagedCommunicator(std::unique_ptr<Communicator> host);

  int64_t rank() const override { return host_->rank(); }
  int64_t size() const override { return host_->size(); }
  std::string backend() const override { return host_->backend() + "-staged"; }

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
  std::unique_ptr<Communicator> split(const std::vector<int64_t>& ranks) override;
  // The host communicator runs the calls, so it carries the label too.
  void set_label(const std::string& label) override {
    Communicator::set_label(label);
    host_->set_label(label);
  }

 private:
  // Runs `call` on the host communicator and adds what it counted for `op`
  // to this communicator's stats, with the seconds of the whole staged call.
  template <class F>
  void staged(const std::string& op, F&& call);

  std::unique_ptr<Communicator> host_;
};

}  // namespace moetrain::parallel
