#include "parallel/host_staged_communicator.h"

#include <utility>

namespace moetrain::parallel {
namespace {

// A host copy of `t` that the host collective may read or overwrite.
torch::Tensor to_host(const torch::Tensor& t) {
  if (!t.defined()) return t;
  return t.to(torch::kCPU, /*non_blocking=*/false, /*copy=*/true).contiguous();
}

// A host buffer shaped like `t` for a result the collective only writes.
torch::Tensor host_buffer_like(const torch::Tensor& t) {
  if (!t.defined()) return t;
  return torch::empty(t.sizes(), t.options().device(torch::kCPU));
}

// The host result back into the caller's tensor, on its device.
void copy_back(torch::Tensor& target, const torch::Tensor& host) {
  torch::NoGradGuard no_grad;
  target.copy_(host);
}

}  // namespace

HostStagedCommunicator::HostStagedCommunicator(std::unique_ptr<Communicator> host) : host_(std::move(host)) {
  if (!host_) throw CommunicatorError("HostStagedCommunicator: no host communicator");
}

template <class F>
void HostStagedCommunicator::staged(const std::string& op, F&& call) {
  count_delegated(*host_, op, std::forward<F>(call));
}

void HostStagedCommunicator::all_reduce(torch::Tensor& tensor, ReduceOp op) {
  staged("all_reduce", [&] {
    auto host = to_host(tensor);
    host_->all_reduce(host, op);
    copy_back(tensor, host);
  });
}

void HostStagedCommunicator::reduce_scatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) {
  staged("reduce_scatter", [&] {
    auto host_out = host_buffer_like(output);
    host_->reduce_scatter(to_host(input), host_out, op);
    copy_back(output, host_out);
  });
}

void HostStagedCommunicator::all_gather(const torch::Tensor& input, torch::Tensor& output) {
  staged("all_gather", [&] {
    auto host_out = host_buffer_like(output);
    host_->all_gather(to_host(input), host_out);
    copy_back(output, host_out);
  });
}

void HostStagedCommunicator::broadcast(torch::Tensor& tensor, int64_t root) {
  staged("broadcast", [&] {
    auto host = to_host(tensor);
    host_->broadcast(host, root);
    copy_back(tensor, host);
  });
}

void HostStagedCommunicator::all_to_all(const torch::Tensor& input, torch::Tensor& output,
                                        const std::vector<int64_t>& send_counts,
                                        const std::vector<int64_t>& recv_counts) {
  staged("all_to_all", [&] {
    auto host_out = host_buffer_like(output);
    host_->all_to_all(to_host(input), host_out, send_counts, recv_counts);
    copy_back(output, host_out);
  });
}

void HostStagedCommunicator::send(const torch::Tensor& tensor, int64_t dst) {
  staged("send", [&] { host_->send(to_host(tensor), dst); });
}

void HostStagedCommunicator::recv(torch::Tensor& tensor, int64_t src) {
  staged("recv", [&] {
    auto host = host_buffer_like(tensor);
    host_->recv(host, src);
    copy_back(tensor, host);
  });
}

void HostStagedCommunicator::send_recv(const std::vector<torch::Tensor>& sends, int64_t dst,
                                       std::vector<torch::Tensor>& recvs, int64_t src) {
  staged("send_recv", [&] {
    std::vector<torch::Tensor> host_sends, host_recvs;
    for (const auto& t : sends) host_sends.push_back(to_host(t));
    for (const auto& t : recvs) host_recvs.push_back(host_buffer_like(t));
    host_->send_recv(host_sends, dst, host_recvs, src);
    for (size_t i = 0; i < recvs.size(); ++i) copy_back(recvs[i], host_recvs[i]);
  });
}

void HostStagedCommunicator::barrier() {
  staged("barrier", [&] { host_->barrier(); });
}

std::unique_ptr<Communicator> HostStagedCommunicator::split(const std::vector<int64_t>& ranks) {
  return std::make_unique<HostStagedCommunicator>(host_->split(ranks));
}

}  // namespace moetrain::parallel
