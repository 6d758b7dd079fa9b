// The element types the CUDA kernels accept, named without LibTorch so the
// launch declarations (kernels/cuda/*_launch.h) stay plain C++.
#pragma once

namespace moetrain::kernels::cuda {

enum class DType { Float32, BFloat16, Float16 };

inline const char* dtype_name(DType t) {
  switch (t) {
    case DType::Float32: return "float32";
    case DType::BFloat16: return "bfloat16";
    case DType::Float16: return "float16";
  }
  return "?";
}

}  // namespace moetrain::kernels::cuda
