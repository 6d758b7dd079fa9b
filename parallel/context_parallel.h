// Context parallelism (CP): the sequence dimension of every sample split over
// a group of ranks, and attention computed exactly across the pieces.
//
// Layout. A sequence of length L (a multiple of 2 * cp) is cut into 2 * cp
// chunks of L / (2 * cp) positions; rank r holds chunks r and 2 * cp - 1 - r,
// in that order. Every rank then holds one early and one late chunk, so under
// a causal mask each has the same amount of attention to compute. The
// encoder and the decoder use the same layout.
//
// Attention across the group, two ways (ContextParallelMode):
//   - all_to_all (DeepSpeed-Ulysses): one all-to-all turns q, k and v from
//     "this rank's positions, every head" into "every position, this rank's
//     heads / cp heads"; attention runs on whole sequences; one all-to-all
//     brings the output back. Moves 4 activations of this rank's size per
//     call whatever cp is; needs the heads (per TP rank) divisible by cp.
//   - ring: the keys and values travel around the group in cp - 1 steps
//     (rank r sends to r + 1); each step attends to the chunk at hand and
//     merges with what came before by its log-sum-exp (online softmax).
//     Moves (cp - 1) key/value pairs of this rank's size; any head count. A
//     block no query may see (the future, under a causal mask, or outside a
//     window) is passed on without being computed. The backward sends each
//     chunk round again with its gradient, which ends at its home rank.
//     Local self-attention whose window w is at most a quarter of a rank's
//     positions takes a halo exchange instead: every rank's first and last
//     w keys and values of each chunk are all-gathered, and each rank
//     attends over its own keys plus the strips next to its chunks (the
//     strips' gradients are reduce-scattered home).
// Both give softmax(q K^T / sqrt(head_dim) + mask) V over the gathered
// sequence, as one process computes it (up to the order of floating-point
// sums).
//
// Every function here is collective over `group`: every rank calls it in the
// same order with tensors of the same shapes (the ranks' chunks are equal by
// the layout). A null group or one of size 1 is one process: attention is
// then plain masked attention and nothing is communicated.
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <string>

#include "parallel/communicator.h"

namespace moetrain::parallel {

enum class ContextParallelMode { AllToAll, Ring };

// "all_to_all" or "ring"; throws std::invalid_argument otherwise.
ContextParallelMode parse_context_parallel_mode(const std::string& name);
const char* context_parallel_mode_name(ContextParallelMode mode);

// The global positions rank `rank` of `cp` holds of a sequence of `length`
// (a multiple of 2 * cp): int64 [length / cp], its first chunk then its
// second. cp = 1: every position.
torch::Tensor context_parallel_positions(int64_t length, int64_t cp, int64_t rank,
                                         const torch::Device& device = torch::kCPU);

// This rank's part of `x` along `dim` (whose size must be a multiple of
// 2 * cp), as the layout above places it. Not differentiable through the
// group: the data of every rank is sliced alike.
torch::Tensor context_parallel_slice(const torch::Tensor& x, int64_t dim, int64_t cp, int64_t rank);

// Which keys a query may see, besides the key mask: causal (key position <=
// query position) and a window as models/attention.h defines it (window <= 0:
// none). `diagonal`: a query always sees its own position (self-attention,
// which keeps a padded query's row finite).
struct ContextAttentionMask {
  bool causal = false;
  int64_t window = 0;
  bool diagonal = false;
};

// q [B, H, Tq, hd]: this rank's queries, at global positions q_positions
// [Tq] int64; k, v [B, H, Tk, hd]: this rank's keys and values, at
// k_positions [Tk]; key_mask [B, Tk] bool: this rank's keys that may be seen
// at all (padding false). Returns [B, H, Tq, hd] in q's dtype: each query
// attending to the keys of every rank of `group`. dropout_p: attention
// dropout on the probabilities, drawn from the current generator (its draws
// differ from one process's). Differentiable in q, k and v.
torch::Tensor context_parallel_attention(const torch::Tensor& q, const torch::Tensor& k, const torch::Tensor& v,
                                         const torch::Tensor& key_mask, const torch::Tensor& q_positions,
                                         const torch::Tensor& k_positions, const ContextAttentionMask& mask,
                                         ContextParallelMode mode, Communicator* group, double dropout_p = 0.0);

// The ring computes a key block against a tile of query rows at a time,
// holding at most about this many fp32 scores (default 2^24, 64 MiB). Tests
// set it small to cut even short sequences into tiles. Returns the old value.
int64_t set_ring_tile_elements(int64_t elements);

// x summed over `group`, on every rank; the backward sums the gradients over
// the group too. For a quantity every rank then uses alike in its own loss
// (so each rank's gradient must include the other ranks' uses).
torch::Tensor all_reduce_context_parallel(const torch::Tensor& x, Communicator* group);

}  // namespace moetrain::parallel
