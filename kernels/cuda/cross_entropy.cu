// Fused softmax cross-entropy over the vocabulary (declared in
// cross_entropy_launch.h). One thread block per row: the logits are read in
// their own dtype, 16 bytes at a time where the row allows, and everything
// else (max, log-sum-exp, sums, gradients) is computed in fp32 registers, so
// no fp32 copy of the logits exists anywhere.
#include <cfloat>
#include <climits>
#include <cstdint>
#include <stdexcept>
#include <string>

#include "kernels/cuda/common.cuh"
#include "kernels/cuda/cross_entropy_launch.h"

namespace moetrain::kernels::cuda {
namespace {

constexpr int kVectorBytes = 16;
constexpr int kMaxThreads = 512;

// kSize elements of T moved by one 16-byte load or store.
template <typename T>
struct alignas(kVectorBytes) Vec {
  static constexpr int kSize = kVectorBytes / static_cast<int>(sizeof(T));
  T v[kSize];
};

// How a row of n elements splits for 16-byte access: `head` scalar elements
// up to the first 16-byte boundary, then `vectors` whole Vec<T>, then scalar
// elements from head + vectors * kSize to n. Without `vectorize` the whole
// row is scalar (head = n).
struct RowSplit {
  int64_t head;
  int64_t vectors;
};

template <typename T>
__device__ __forceinline__ RowSplit split_row(const T* row, int64_t n, bool vectorize) {
  if (!vectorize) return {n, 0};
  const auto misalign = static_cast<int64_t>(reinterpret_cast<uintptr_t>(row) % kVectorBytes);
  int64_t head = misalign == 0 ? 0 : (kVectorBytes - misalign) / static_cast<int64_t>(sizeof(T));
  if (head > n) head = n;
  return {head, (n - head) / Vec<T>::kSize};
}

// What one thread has seen of a row: the running max, the sum of
// exp(z - max) rescaled whenever the max grows (online softmax), and the sum
// of z (for label smoothing). The max starts at -FLT_MAX rather than -inf so
// that -inf logits add exp(-inf) = 0 instead of exp(-inf - -inf) = NaN.
struct RowStats {
  float max = -FLT_MAX;
  float sum_exp = 0.0f;
  float sum = 0.0f;

  // Adds a chunk of values: at most one rescale per chunk.
  template <int N>
  __device__ __forceinline__ void add(const float (&z)[N]) {
    float chunk_max = z[0];
#pragma unroll
    for (int e = 1; e < N; ++e) chunk_max = fmaxf(chunk_max, z[e]);
    if (chunk_max > max) {
      sum_exp *= expf(max - chunk_max);
      max = chunk_max;
    }
#pragma unroll
    for (int e = 0; e < N; ++e) {
      sum_exp += expf(z[e] - max);
      sum += z[e];
    }
  }
};

// A row counts when its mask is set and its target is a real class; other
// rows (padding, or a bad target the caller reports) are left alone.
__device__ __forceinline__ bool row_counts(const bool* mask, int64_t row, int64_t target, int64_t vocab) {
  return mask[row] && target >= 0 && target < vocab;
}

template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
    cross_entropy_forward_kernel(const T* __restrict__ logits, const int64_t* __restrict__ targets,
                                 const bool* __restrict__ mask, int64_t vocab, float label_smoothing,
                                 float* __restrict__ loss, float* __restrict__ lse) {
  __shared__ float scratch[32];
  const int64_t row = blockIdx.x;
  const int64_t target = targets[row];
  if (!row_counts(mask, row, target, vocab)) {  // the same for the whole block
    if (threadIdx.x == 0) {
      loss[row] = 0.0f;
      lse[row] = 0.0f;
    }
    return;
  }

  const T* z = logits + row * vocab;
  const RowSplit split = split_row(z, vocab, /*vectorize=*/true);
  const int64_t tail_begin = split.head + split.vectors * Vec<T>::kSize;
  const auto* body = reinterpret_cast<const Vec<T>*>(z + split.head);

  RowStats stats;
  for (int64_t j = threadIdx.x; j < split.head; j += blockDim.x) {
    const float v[1] = {to_float(z[j])};
    stats.add(v);
  }
  for (int64_t k = threadIdx.x; k < split.vectors; k += blockDim.x) {
    const Vec<T> packed = body[k];
    float v[Vec<T>::kSize];
#pragma unroll
    for (int e = 0; e < Vec<T>::kSize; ++e) v[e] = to_float(packed.v[e]);
    stats.add(v);
  }
  for (int64_t j = tail_begin + threadIdx.x; j < vocab; j += blockDim.x) {
    const float v[1] = {to_float(z[j])};
    stats.add(v);
  }

  // Combine the threads: rescale every partial sum to the row's max.
  const float row_max = block_max(stats.max, scratch);
  const float row_sum_exp = block_sum(stats.sum_exp * expf(stats.max - row_max), scratch);
  const float row_sum = label_smoothing > 0.0f ? block_sum(stats.sum, scratch) : 0.0f;

  if (threadIdx.x == 0) {
    const float row_lse = row_max + logf(row_sum_exp);
    float row_loss = row_lse - to_float(z[target]);
    if (label_smoothing > 0.0f) {
      const float smooth = row_lse - row_sum / static_cast<float>(vocab);
      row_loss = (1.0f - label_smoothing) * row_loss + label_smoothing * smooth;
    }
    loss[row] = row_loss;
    lse[row] = row_lse;
  }
}

// `vectorize` is set only when logits and grad_logits have the same offset
// from a 16-byte boundary, so that one split fits both rows.
template <typename T>
__global__ void __launch_bounds__(kMaxThreads)
    cross_entropy_backward_kernel(const T* __restrict__ logits, const int64_t* __restrict__ targets,
                                  const bool* __restrict__ mask, const float* __restrict__ lse,
                                  const float* __restrict__ grad_loss, int64_t vocab, float label_smoothing,
                                  bool vectorize, T* __restrict__ grad_logits) {
  const int64_t row = blockIdx.x;
  const int64_t target = targets[row];
  T* g = grad_logits + row * vocab;
  const RowSplit split = split_row(g, vocab, vectorize);
  const int64_t tail_begin = split.head + split.vectors * Vec<T>::kSize;
  auto* g_body = reinterpret_cast<Vec<T>*>(g + split.head);

  if (!row_counts(mask, row, target, vocab)) {  // zero gradient, logits unread
    const T zero = from_float<T>(0.0f);
    Vec<T> zeros;
#pragma unroll
    for (int e = 0; e < Vec<T>::kSize; ++e) zeros.v[e] = zero;
    for (int64_t j = threadIdx.x; j < split.head; j += blockDim.x) g[j] = zero;
    for (int64_t k = threadIdx.x; k < split.vectors; k += blockDim.x) g_body[k] = zeros;
    for (int64_t j = tail_begin + threadIdx.x; j < vocab; j += blockDim.x) g[j] = zero;
    return;
  }

  const T* z = logits + row * vocab;
  const auto* z_body = reinterpret_cast<const Vec<T>*>(z + split.head);
  const float row_lse = lse[row];
  const float scale = grad_loss[row];
  const float smooth = label_smoothing / static_cast<float>(vocab);
  const float on_target = 1.0f - label_smoothing;
  // d loss_i / d z_ij = softmax_ij - (1 - ls) * [j == t_i] - ls / V, times the upstream gradient.
  const auto grad = [&](float zj, int64_t j) {
    const float p = expf(zj - row_lse);
    return from_float<T>((p - smooth - (j == target ? on_target : 0.0f)) * scale);
  };

  for (int64_t j = threadIdx.x; j < split.head; j += blockDim.x) g[j] = grad(to_float(z[j]), j);
  for (int64_t k = threadIdx.x; k < split.vectors; k += blockDim.x) {
    const Vec<T> packed = z_body[k];
    const int64_t first = split.head + k * Vec<T>::kSize;
    Vec<T> out;
#pragma unroll
    for (int e = 0; e < Vec<T>::kSize; ++e) out.v[e] = grad(to_float(packed.v[e]), first + e);
    g_body[k] = out;
  }
  for (int64_t j = tail_begin + threadIdx.x; j < vocab; j += blockDim.x) g[j] = grad(to_float(z[j]), j);
}

// Wide rows get more threads; every count is a multiple of 32, at most kMaxThreads.
int threads_for(int64_t vocab) {
  if (vocab <= 2048) return 128;
  if (vocab <= 32768) return 256;
  return kMaxThreads;
}

void check_sizes(int64_t rows, int64_t vocab, const char* who) {
  if (rows < 0 || rows > INT_MAX || vocab < 1) {
    throw std::invalid_argument(std::string(who) + ": needs 0 <= rows <= 2^31 - 1 and vocab >= 1, got rows " +
                                std::to_string(rows) + ", vocab " + std::to_string(vocab));
  }
}

}  // namespace

void launch_cross_entropy_forward(const void* logits, DType dtype, const int64_t* targets, const bool* mask,
                                  int64_t rows, int64_t vocab, float label_smoothing, float* loss, float* lse,
                                  cudaStream_t stream) {
  check_sizes(rows, vocab, "launch_cross_entropy_forward");
  if (rows == 0) return;
  const int threads = threads_for(vocab);
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    cross_entropy_forward_kernel<T><<<static_cast<unsigned int>(rows), threads, 0, stream>>>(
        static_cast<const T*>(logits), targets, mask, vocab, label_smoothing, loss, lse);
  });
  MOETRAIN_CUDA_CHECK_LAUNCH("cross_entropy_forward_kernel");
}

void launch_cross_entropy_backward(const void* logits, DType dtype, const int64_t* targets, const bool* mask,
                                   const float* lse, const float* grad_loss, int64_t rows, int64_t vocab,
                                   float label_smoothing, void* grad_logits, cudaStream_t stream) {
  check_sizes(rows, vocab, "launch_cross_entropy_backward");
  if (rows == 0) return;
  const int threads = threads_for(vocab);
  const bool vectorize =
      reinterpret_cast<uintptr_t>(logits) % kVectorBytes == reinterpret_cast<uintptr_t>(grad_logits) % kVectorBytes;
  dispatch_dtype(dtype, [&](auto tag) {
    using T = decltype(tag);
    cross_entropy_backward_kernel<T><<<static_cast<unsigned int>(rows), threads, 0, stream>>>(
        static_cast<const T*>(logits), targets, mask, lse, grad_loss, vocab, label_smoothing, vectorize,
        static_cast<T*>(grad_logits));
  });
  MOETRAIN_CUDA_CHECK_LAUNCH("cross_entropy_backward_kernel");
}

}  // namespace moetrain::kernels::cuda
