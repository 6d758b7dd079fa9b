// MoE permutation kernels. Each block owns one output row and walks its
// columns in packs of VEC elements (16-byte loads when every row pointer is
// 16-byte aligned, single elements otherwise). Sums run over a row's sources
// in a fixed order inside one thread, so results are deterministic.
#include <cstdint>
#include <initializer_list>
#include <limits>
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/moe_permute_launch.h"

namespace moetrain::kernels::cuda {

namespace {

constexpr int kMaxThreads = 256;

// VEC consecutive elements moved with one load or store.
template <typename T, int VEC>
struct alignas(sizeof(T) * VEC) Pack {
  T v[VEC];
};

template <typename T, int VEC>
__device__ __forceinline__ const Pack<T, VEC>* pack_row(const T* base, int64_t row, int64_t dim) {
  return reinterpret_cast<const Pack<T, VEC>*>(base + row * dim);
}

template <typename T, int VEC>
__device__ __forceinline__ Pack<T, VEC>* pack_row(T* base, int64_t row, int64_t dim) {
  return reinterpret_cast<Pack<T, VEC>*>(base + row * dim);
}

// grid: num_rows blocks; block r copies x[token_index[r]] to out[r].
template <typename T, int VEC>
__global__ void permute_rows_kernel(const T* __restrict__ x, const int64_t* __restrict__ token_index,
                                    T* __restrict__ out, int64_t num_tokens, int64_t dim) {
  const int64_t r = blockIdx.x;
  const int64_t t = token_index[r];
  if (t < 0 || t >= num_tokens) __trap();
  const Pack<T, VEC>* src = pack_row<T, VEC>(x, t, dim);
  Pack<T, VEC>* dst = pack_row<T, VEC>(out, r, dim);
  const int64_t packs = dim / VEC;
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) dst[i] = src[i];
}

// grid: num_tokens blocks; block t sums its rows rows[offsets[t] .. offsets[t+1]).
template <typename T, int VEC>
__global__ void gather_sum_rows_kernel(const T* __restrict__ src, const float* __restrict__ weights,
                                       const int64_t* __restrict__ rows, const int64_t* __restrict__ offsets,
                                       T* __restrict__ out, int64_t dim) {
  const int64_t t = blockIdx.x;
  const int64_t begin = offsets[t];
  const int64_t end = offsets[t + 1];
  Pack<T, VEC>* dst = pack_row<T, VEC>(out, t, dim);
  const int64_t packs = dim / VEC;
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    float acc[VEC];
#pragma unroll
    for (int k = 0; k < VEC; ++k) acc[k] = 0.0f;
    for (int64_t j = begin; j < end; ++j) {
      const int64_t r = rows[j];
      const float w = weights != nullptr ? weights[r] : 1.0f;
      const Pack<T, VEC> s = pack_row<T, VEC>(src, r, dim)[i];
#pragma unroll
      for (int k = 0; k < VEC; ++k) acc[k] += w * to_float(s.v[k]);
    }
    Pack<T, VEC> o;
#pragma unroll
    for (int k = 0; k < VEC; ++k) o.v[k] = from_float<T>(acc[k]);
    dst[i] = o;
  }
}

// grid: num_rows blocks; block r reads grad_y[token_index[r]] once for both gradients.
template <typename T, int VEC>
__global__ void unpermute_rows_backward_kernel(const T* __restrict__ grad_y, const T* __restrict__ expert_output,
                                               const float* __restrict__ gates, const int64_t* __restrict__ token_index,
                                               T* __restrict__ grad_expert_output, float* __restrict__ grad_gates,
                                               int64_t dim) {
  __shared__ float scratch[32];
  const int64_t r = blockIdx.x;
  const int64_t t = token_index[r];
  const float gate = gates[r];
  const Pack<T, VEC>* gy_row = pack_row<T, VEC>(grad_y, t, dim);
  const int64_t packs = dim / VEC;
  float dot = 0.0f;
  for (int64_t i = threadIdx.x; i < packs; i += blockDim.x) {
    const Pack<T, VEC> gy = gy_row[i];
    if (grad_expert_output != nullptr) {
      Pack<T, VEC> o;
#pragma unroll
      for (int k = 0; k < VEC; ++k) o.v[k] = from_float<T>(gate * to_float(gy.v[k]));
      pack_row<T, VEC>(grad_expert_output, r, dim)[i] = o;
    }
    if (grad_gates != nullptr) {
      const Pack<T, VEC> e = pack_row<T, VEC>(expert_output, r, dim)[i];
#pragma unroll
      for (int k = 0; k < VEC; ++k) dot += to_float(e.v[k]) * to_float(gy.v[k]);
    }
  }
  // grad_gates is the same for every thread of the block, so all of them reach block_sum.
  if (grad_gates != nullptr) {
    dot = block_sum(dot, scratch);
    if (threadIdx.x == 0) grad_gates[r] = dot;
  }
}

bool aligned16(const void* p) { return p == nullptr || reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Elements per 16-byte pack when every row of every buffer starts 16-byte
// aligned (aligned bases and a dim that keeps rows aligned), else 1.
template <typename T>
constexpr int wide_vec() {
  return static_cast<int>(16 / sizeof(T));
}

template <typename T>
bool can_use_wide(int64_t dim, std::initializer_list<const void*> pointers) {
  if (dim % wide_vec<T>() != 0) return false;
  for (const void* p : pointers) {
    if (!aligned16(p)) return false;
  }
  return true;
}

// Threads for one row of `packs` packs: a multiple of 32, at most kMaxThreads.
unsigned int threads_for(int64_t packs) {
  const int64_t warps = (packs + 31) / 32;
  const int64_t threads = warps * 32;
  return static_cast<unsigned int>(threads < 32 ? 32 : (threads > kMaxThreads ? kMaxThreads : threads));
}

void check_grid(int64_t blocks, const char* who) {
  if (blocks > std::numeric_limits<int>::max()) {
    throw std::invalid_argument(std::string(who) + ": " + std::to_string(blocks) + " rows exceed one launch's grid");
  }
}

}  // namespace

void launch_permute_rows(const void* x, const int64_t* token_index, void* out, int64_t num_tokens, int64_t num_rows,
                         int64_t dim, DType dtype, cudaStream_t stream) {
  if (num_rows == 0 || dim == 0) return;
  check_grid(num_rows, "permute_rows");
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* xs = static_cast<const T*>(x);
    T* os = static_cast<T*>(out);
    if (can_use_wide<T>(dim, {x, out})) {
      constexpr int VEC = wide_vec<T>();
      permute_rows_kernel<T, VEC><<<static_cast<unsigned int>(num_rows), threads_for(dim / VEC), 0, stream>>>(
          xs, token_index, os, num_tokens, dim);
    } else {
      permute_rows_kernel<T, 1>
          <<<static_cast<unsigned int>(num_rows), threads_for(dim), 0, stream>>>(xs, token_index, os, num_tokens, dim);
    }
    MOETRAIN_CUDA_CHECK_LAUNCH("permute_rows_kernel");
  });
}

void launch_gather_sum_rows(const void* src, const float* weights, const int64_t* rows, const int64_t* offsets,
                            void* out, int64_t num_tokens, int64_t dim, DType dtype, cudaStream_t stream) {
  if (num_tokens == 0 || dim == 0) return;
  check_grid(num_tokens, "gather_sum_rows");
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* ss = static_cast<const T*>(src);
    T* os = static_cast<T*>(out);
    if (can_use_wide<T>(dim, {src, out})) {
      constexpr int VEC = wide_vec<T>();
      gather_sum_rows_kernel<T, VEC><<<static_cast<unsigned int>(num_tokens), threads_for(dim / VEC), 0, stream>>>(
          ss, weights, rows, offsets, os, dim);
    } else {
      gather_sum_rows_kernel<T, 1>
          <<<static_cast<unsigned int>(num_tokens), threads_for(dim), 0, stream>>>(ss, weights, rows, offsets, os, dim);
    }
    MOETRAIN_CUDA_CHECK_LAUNCH("gather_sum_rows_kernel");
  });
}

void launch_unpermute_rows_backward(const void* grad_y, const void* expert_output, const float* gates,
                                    const int64_t* token_index, void* grad_expert_output, float* grad_gates,
                                    int64_t num_rows, int64_t dim, DType dtype, cudaStream_t stream) {
  if (num_rows == 0) return;
  if (grad_expert_output == nullptr && grad_gates == nullptr) return;
  check_grid(num_rows, "unpermute_rows backward");
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    const T* gy = static_cast<const T*>(grad_y);
    const T* eo = static_cast<const T*>(expert_output);
    T* geo = static_cast<T*>(grad_expert_output);
    if (can_use_wide<T>(dim, {grad_y, expert_output, grad_expert_output})) {
      constexpr int VEC = wide_vec<T>();
      unpermute_rows_backward_kernel<T, VEC>
          <<<static_cast<unsigned int>(num_rows), threads_for(dim / VEC), 0, stream>>>(gy, eo, gates, token_index, geo,
                                                                                       grad_gates, dim);
    } else {
      unpermute_rows_backward_kernel<T, 1><<<static_cast<unsigned int>(num_rows), threads_for(dim), 0, stream>>>(
          gy, eo, gates, token_index, geo, grad_gates, dim);
    }
    MOETRAIN_CUDA_CHECK_LAUNCH("unpermute_rows_backward_kernel");
  });
}

}  // namespace moetrain::kernels::cuda
