#include "kernels/dispatch.h"

#include <atomic>
#include <cstdlib>
#include <stdexcept>

namespace moetrain::kernels {

namespace {

KernelBackend backend_from_environment() {
  const char* v = std::getenv("MOETRAIN_KERNELS");
  if (v == nullptr || *v == '\0') return KernelBackend::Fused;
  try {
    return parse_kernel_backend(v);
  } catch (const std::invalid_argument& e) {
    throw std::invalid_argument(std::string("MOETRAIN_KERNELS: ") + e.what());
  }
}

std::atomic<int>& backend_slot() {
  static std::atomic<int> slot{static_cast<int>(backend_from_environment())};
  return slot;
}

}  // namespace

bool cuda_kernels_compiled() {
#ifdef MOETRAIN_CUDA_KERNELS
  return true;
#else
  return false;
#endif
}

KernelBackend kernel_backend() { return static_cast<KernelBackend>(backend_slot().load()); }

void set_kernel_backend(KernelBackend backend) { backend_slot().store(static_cast<int>(backend)); }

KernelBackend parse_kernel_backend(const std::string& name) {
  if (name == "fused") return KernelBackend::Fused;
  if (name == "reference") return KernelBackend::Reference;
  throw std::invalid_argument("unknown kernel backend '" + name + "' (expected fused or reference)");
}

const char* kernel_backend_name(KernelBackend backend) {
  return backend == KernelBackend::Fused ? "fused" : "reference";
}

bool use_cuda_kernel(const torch::Tensor& t) {
  return cuda_kernels_compiled() && t.defined() && t.is_cuda() && kernel_backend() == KernelBackend::Fused;
}

bool cuda_kernel_dtype(const torch::Tensor& t) {
  const auto s = t.scalar_type();
  return s == torch::kFloat || s == torch::kBFloat16 || s == torch::kHalf;
}

std::string describe_tensor(const torch::Tensor& t) {
  return t.defined() ? c10::str(t.sizes(), " ", t.scalar_type(), " on ", t.device()) : std::string("undefined");
}

cuda::DType cuda_dtype(const torch::Tensor& t, const char* who) {
  switch (t.scalar_type()) {  // the types cuda_kernel_dtype accepts
    case torch::kFloat: return cuda::DType::Float32;
    case torch::kBFloat16: return cuda::DType::BFloat16;
    case torch::kHalf: return cuda::DType::Float16;
    default:
      throw std::invalid_argument(std::string(who) + ": CUDA kernel takes float32, bfloat16 or float16, got " +
                                  std::string(c10::toString(t.scalar_type())));
  }
}

}  // namespace moetrain::kernels
