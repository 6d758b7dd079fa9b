#include "parallel/side_stream.h"

namespace moetrain::parallel {

SideStream::SideStream(torch::Device device) : device_(device) {
  if (device_.is_cpu()) return;
  if (!device_.has_index()) device_ = torch::Device(device_.type(), 0);
  c10::impl::VirtualGuardImpl impl(device_.type());
  stream_ = impl.getStreamFromGlobalPool(device_, /*isHighPriority=*/false);
}

c10::Stream SideStream::current() const {
  c10::impl::VirtualGuardImpl impl(device_.type());
  return impl.getStream(device_);
}

void SideStream::wait_for(const c10::Stream& producer, const c10::Stream& consumer) const {
  if (producer == consumer) return;
  c10::Event event(device_.type());
  event.record(producer);
  event.block(consumer);
}

void SideStream::join() {
  if (stream_) wait_for(*stream_, current());
}

}  // namespace moetrain::parallel
