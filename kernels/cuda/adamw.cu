// Multi-tensor AdamW. The host cuts every group into chunks of `chunk_size`
// elements (the last chunk of a group may be shorter) and lists them in a
// table passed by value as the kernel's argument; block b updates chunk b.
// The table needs CUDA 12.1's larger kernel-argument space (Volta or newer).
#include <cstdint>

#include "kernels/cuda/adamw_launch.h"
#include "kernels/cuda/common.cuh"

namespace moetrain::kernels::cuda {

namespace {

constexpr int kThreads = 256;
// Chunks are at least this long, and a multiple of kChunkAlign so that every
// chunk of a 16-byte aligned group starts 16-byte aligned.
constexpr int64_t kMinChunk = 16384;
constexpr int64_t kChunkAlign = 4 * kThreads;

struct ChunkTable {
  float* param[kAdamWMaxGroupsPerLaunch];
  const float* grad[kAdamWMaxGroupsPerLaunch];
  float* exp_avg[kAdamWMaxGroupsPerLaunch];
  float* exp_avg_sq[kAdamWMaxGroupsPerLaunch];
  int64_t numel[kAdamWMaxGroupsPerLaunch];
  int32_t chunk_index[kAdamWMaxChunksPerLaunch];   // chunk c covers [c * chunk_size, (c+1) * chunk_size)
  uint16_t chunk_group[kAdamWMaxChunksPerLaunch];  // slot of the chunk's group in the arrays above
  uint8_t weight_decay[kAdamWMaxGroupsPerLaunch];
};
static_assert(sizeof(ChunkTable) + sizeof(int64_t) + sizeof(AdamWScalars) <= 32764,
              "the chunk table must fit in the kernel argument space");
static_assert(kAdamWMaxGroupsPerLaunch <= 65536, "chunk_group is 16-bit");

__device__ __forceinline__ void adamw_element(float& p, float g, float& m, float& v, bool decay,
                                              const AdamWScalars& s) {
  if (decay) p = p * s.decay_factor;
  m = m * s.beta1 + s.one_minus_beta1 * g;
  v = v * s.beta2 + s.one_minus_beta2 * g * g;
  const float denom = sqrtf(v) / s.sqrt_bias_correction2 + s.eps;
  p = p + s.step_size * (m / denom);
}

__global__ void __launch_bounds__(kThreads) adamw_kernel(const ChunkTable table, int64_t chunk_size, AdamWScalars s) {
  const int group = table.chunk_group[blockIdx.x];
  const int64_t start = static_cast<int64_t>(table.chunk_index[blockIdx.x]) * chunk_size;
  const int64_t remaining = table.numel[group] - start;
  const int64_t n = remaining < chunk_size ? remaining : chunk_size;
  float* p = table.param[group] + start;
  const float* g = table.grad[group] + start;
  float* m = table.exp_avg[group] + start;
  float* v = table.exp_avg_sq[group] + start;
  const bool decay = table.weight_decay[group] != 0;

  int64_t done = 0;
  const bool aligned = ((reinterpret_cast<uintptr_t>(p) | reinterpret_cast<uintptr_t>(g) |
                         reinterpret_cast<uintptr_t>(m) | reinterpret_cast<uintptr_t>(v)) %
                        16) == 0;
  if (aligned) {
    const int64_t n4 = n / 4;
    float4* p4 = reinterpret_cast<float4*>(p);
    const float4* g4 = reinterpret_cast<const float4*>(g);
    float4* m4 = reinterpret_cast<float4*>(m);
    float4* v4 = reinterpret_cast<float4*>(v);
    for (int64_t i = threadIdx.x; i < n4; i += blockDim.x) {
      float4 pv = p4[i];
      const float4 gv = g4[i];
      float4 mv = m4[i];
      float4 vv = v4[i];
      adamw_element(pv.x, gv.x, mv.x, vv.x, decay, s);
      adamw_element(pv.y, gv.y, mv.y, vv.y, decay, s);
      adamw_element(pv.z, gv.z, mv.z, vv.z, decay, s);
      adamw_element(pv.w, gv.w, mv.w, vv.w, decay, s);
      p4[i] = pv;
      m4[i] = mv;
      v4[i] = vv;
    }
    done = n4 * 4;
  }
  for (int64_t i = done + threadIdx.x; i < n; i += blockDim.x) {
    float pv = p[i];
    float mv = m[i];
    float vv = v[i];
    adamw_element(pv, g[i], mv, vv, decay, s);
    p[i] = pv;
    m[i] = mv;
    v[i] = vv;
  }
}

// Chunk length for `total` elements: long enough that one table's chunks
// cover them with room to spare for the short last chunk of every group.
int64_t chunk_size_for(int64_t total) {
  const int64_t target_chunks = kAdamWMaxChunksPerLaunch / 2;
  int64_t chunk = (total + target_chunks - 1) / target_chunks;
  chunk = (chunk + kChunkAlign - 1) / kChunkAlign * kChunkAlign;
  return chunk < kMinChunk ? kMinChunk : chunk;
}

}  // namespace

int launch_adamw(const AdamWGroup* groups, int64_t num_groups, const AdamWScalars& scalars, cudaStream_t stream) {
  int64_t total = 0;
  for (int64_t i = 0; i < num_groups; ++i) total += groups[i].numel;
  if (total == 0) return 0;
  const int64_t chunk_size = chunk_size_for(total);

  ChunkTable table{};
  int num_slots = 0;
  int num_chunks = 0;
  int launches = 0;
  auto flush = [&]() {
    if (num_chunks > 0) {
      adamw_kernel<<<static_cast<unsigned int>(num_chunks), kThreads, 0, stream>>>(table, chunk_size, scalars);
      MOETRAIN_CUDA_CHECK_LAUNCH("adamw_kernel");
      ++launches;
    }
    num_slots = 0;
    num_chunks = 0;
  };
  // Puts group i in the next free slot and returns the slot.
  auto add_slot = [&](int64_t i) {
    if (num_slots == kAdamWMaxGroupsPerLaunch) flush();
    const int slot = num_slots++;
    table.param[slot] = groups[i].param;
    table.grad[slot] = groups[i].grad;
    table.exp_avg[slot] = groups[i].exp_avg;
    table.exp_avg_sq[slot] = groups[i].exp_avg_sq;
    table.numel[slot] = groups[i].numel;
    table.weight_decay[slot] = groups[i].weight_decay ? 1 : 0;
    return slot;
  };

  for (int64_t i = 0; i < num_groups; ++i) {
    if (groups[i].numel == 0) continue;
    int slot = add_slot(i);
    const int64_t chunks = (groups[i].numel + chunk_size - 1) / chunk_size;
    for (int64_t c = 0; c < chunks; ++c) {
      if (num_chunks == kAdamWMaxChunksPerLaunch) {
        flush();
        slot = add_slot(i);  // the group's remaining chunks go with the next launch
      }
      table.chunk_group[num_chunks] = static_cast<uint16_t>(slot);
      table.chunk_index[num_chunks] = static_cast<int32_t>(c);
      ++num_chunks;
    }
  }
  flush();
  return launches;
}

}  // namespace moetrain::kernels::cuda
