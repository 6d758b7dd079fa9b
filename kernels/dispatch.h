// The one switch between the fused CUDA kernels and their ATen references.
//
// Every op in kernels/ asks use_cuda_kernel(tensor): true when the kernels
// were compiled (MOETRAIN_WITH_CUDA_KERNELS), the tensor is on a CUDA device,
// and the backend is Fused. MOETRAIN_KERNELS=reference in the environment (or
// set_kernel_backend) sends everything to the references, for comparisons.
#pragma once

#include <torch/torch.h>

#include <string>

#include "kernels/cuda/dtype.h"

namespace moetrain::kernels {

enum class KernelBackend { Fused, Reference };

bool cuda_kernels_compiled();
KernelBackend kernel_backend();  // from MOETRAIN_KERNELS (fused|reference) until set
void set_kernel_backend(KernelBackend backend);
KernelBackend parse_kernel_backend(const std::string& name);  // throws std::invalid_argument
const char* kernel_backend_name(KernelBackend backend);

bool use_cuda_kernel(const torch::Tensor& t);

// Whether the CUDA kernels take t's element type (float32, bfloat16, float16).
bool cuda_kernel_dtype(const torch::Tensor& t);

// The element type of a float tensor for the CUDA launchers; throws
// std::invalid_argument naming `who` for other types.
cuda::DType cuda_dtype(const torch::Tensor& t, const char* who);

// "[sizes] dtype on device" (or "undefined"), for the ops' error messages.
std::string describe_tensor(const torch::Tensor& t);

}  // namespace moetrain::kernels
