// SideStream: lets communication queued on a device overlap the compute
// queued after it. Work enqueued inside run() goes to a stream of its own,
// which first waits for everything the caller's current stream had queued
// (so it sees the values computed so far); the caller's stream does not wait
// for it until join(). On the CPU, where every call completes before it
// returns, both are plain calls.
//
// The gradient reducer uses it for the asynchronous (NCCL) communicators:
// each bucket's reduction is queued from the backward on the side stream,
// the backward's later kernels run on meanwhile, and the optimizer step joins
// (parallel/nccl_communicator.h: a collective makes the *current* stream wait
// for its result, which is the side stream here).
//
// Device-generic (c10's stream and event interfaces), so it needs no CUDA
// headers. Owned by its user; one thread at a time.
#pragma once

#include <c10/core/Event.h>
#include <c10/core/Stream.h>
#include <c10/core/StreamGuard.h>
#include <c10/core/impl/VirtualGuardImpl.h>
#include <torch/torch.h>

#include <optional>

namespace moetrain::parallel {

class SideStream {
 public:
  explicit SideStream(torch::Device device);  // a device without index: index 0

  // Calls fn() with the side stream as its device's current stream, after
  // the side stream has waited for the current stream's queued work.
  template <class F>
  void run(F&& fn) {
    if (!stream_) {
      fn();
      return;
    }
    wait_for(current(), *stream_);
    c10::StreamGuard guard(*stream_);
    fn();
  }

  // Makes the current stream wait for everything queued on the side stream.
  void join();

  torch::Device device() const { return device_; }

 private:
  c10::Stream current() const;
  void wait_for(const c10::Stream& producer, const c10::Stream& consumer) const;

  torch::Device device_;
  std::optional<c10::Stream> stream_;  // none on the CPU
};

}  // namespace moetrain::parallel
