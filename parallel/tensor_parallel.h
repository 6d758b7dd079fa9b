// Tensor-parallel building blocks (Megatron-style): the collectives that sit at
// the edges of a tensor-parallel region as autograd functions, the linear
// layers built on weight shards, the vocabulary split for the embedding and the
// output softmax, and the dropout generator for activations split over ranks.
//
// `group` is the TP communicator. A null group or a group of size 1 means no
// tensor parallelism: every function is then the plain single-process op and
// communicates nothing.
//
// What every rank must call: each function that communicates (in forward or
// in backward, as listed per function) is collective over the group; every
// rank of the group calls it in the same order with tensors of the same shape
// and dtype. Arguments are checked before anything is sent, from values every
// rank has (shapes, shard layout, replicated ids), so a bad call throws
// std::invalid_argument on every rank alike. The group must outlive the
// backward pass of every tensor computed through it. Tensors live where the
// group's backend wants them (CPU for MPI, CUDA for NCCL).
//
// The conjugate pair (Megatron's f and g): a column-parallel layer starts with
// f (identity forward; backward sums the input gradient over the ranks, since
// each rank only saw its share of the outputs), a row-parallel layer ends with
// g (forward sums the partial products; backward is the identity, the
// gradient is already replicated).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <vector>

#include "kernels/cross_entropy.h"
#include "parallel/communicator.h"

namespace moetrain::parallel {

// f: identity forward; backward all-reduces (sums) the gradient.
torch::Tensor copy_to_tensor_parallel_region(const torch::Tensor& x, Communicator* group);
// g: forward all-reduces (sums) x over the group; backward is the identity.
torch::Tensor reduce_from_tensor_parallel_region(const torch::Tensor& x, Communicator* group);
// Keeps this rank's chunk of the last dim (split into group size equal chunks,
// rank r's at [r*c, (r+1)*c)); backward all-gathers the gradient. The last dim
// must divide evenly.
torch::Tensor scatter_to_tensor_parallel_region(const torch::Tensor& x, Communicator* group);
// The inverse: all-gathers along the last dim (rank order); backward keeps this
// rank's chunk of the gradient.
torch::Tensor gather_from_tensor_parallel_region(const torch::Tensor& x, Communicator* group);

// Column-parallel linear: weight_shard [out/tp, in] (this rank's rows of the
// full [out, in] weight), bias_shard [out/tp] or undefined. Returns
// f(x) W_shard^T + b_shard, [..., out/tp]: this rank's slice of the output
// features. Communicates in backward only (the input gradient's all-reduce).
torch::Tensor column_parallel_linear(const torch::Tensor& x, const torch::Tensor& weight_shard,
                                     const torch::Tensor& bias_shard, Communicator* group);
// Row-parallel linear: x_shard [..., in/tp] (this rank's slice of the input
// features, as a column-parallel layer leaves them), weight_shard [out, in/tp]
// (this rank's columns of the full weight), bias [out] replicated on every
// rank, or undefined. Returns g(x_shard W_shard^T) + bias, [..., out], the
// same on every rank; the bias is added once, after the sum. Communicates in
// forward only.
torch::Tensor row_parallel_linear(const torch::Tensor& x_shard, const torch::Tensor& weight_shard,
                                  const torch::Tensor& bias, Communicator* group);

// The vocabulary split over TP ranks, padded so every rank holds the same
// number of rows. The padding sits at the end of the global vocabulary, so on
// every rank the real ids are a prefix of its rows: [begin, real_end) real,
// [real_end, begin + local_size) padding. With a tiny vocabulary a rank may
// hold padding only (real_end == begin).
struct VocabShard {
  int64_t vocab_size = 0;   // the real vocabulary V
  int64_t padded_size = 0;  // V rounded up to a multiple of tp
  int64_t local_size = 0;   // padded_size / tp: rows (or logit columns) on this rank
  int64_t begin = 0;        // first global id on this rank (tp_rank * local_size)
  int64_t real_end = 0;     // one past the last REAL id on this rank (<= begin + local_size; padding after it)

  int64_t real_size() const { return real_end - begin; }  // real rows on this rank
};
// Throws std::invalid_argument unless vocab_size >= 1, tp_size >= 1 and
// 0 <= tp_rank < tp_size.
VocabShard vocab_shard(int64_t vocab_size, int64_t tp_size, int64_t tp_rank);

// Vocabulary-parallel embedding: tokens (any shape, int64 global ids in
// [0, V); checked, an id outside throws), weight_shard [local_size, D] holding
// ids [begin, begin + local_size). Ids outside the shard contribute zero rows
// and the result is all-reduced (g), so every rank gets the full [..., D]
// embedding. The weight gradient stays local: only the rows of ids this rank
// holds get gradient, padding rows get zero. Any float dtype (the sum is exact:
// one rank contributes each row). `shard` must describe this rank of `group`.
// Communicates in forward only.
torch::Tensor vocab_parallel_embedding(const torch::Tensor& tokens, const torch::Tensor& weight_shard,
                                       const VocabShard& shard, Communicator* group);

// Vocabulary-parallel softmax cross-entropy, equal to
// kernels::softmax_cross_entropy on the full unpadded [N, V] logits.
// logits_shard [N, local_size] (any float dtype; computed in fp32, the caller's
// tensor is left as it is), targets [N] int64 GLOBAL ids (a masked-out token's
// target may hold anything, e.g. a padding id; a counted one must be in
// [0, V), checked), mask [N] bool (true = counts). label_smoothing in [0, 1):
// target distribution (1 - ls) * onehot + ls / V over the REAL vocabulary.
// Padded columns (global id >= V) never count, whatever they hold, and get a
// zero gradient.
//
// Returns loss_sum (fp32 scalar, differentiable w.r.t. logits_shard) and
// num_tokens. Forward makes exactly three all-reduces over the group: the
// per-token max, the per-token sum of exponentials, and the per-token target
// logit packed with (when label smoothing) the per-token sum of logits.
// Backward communicates nothing: each rank computes the gradient of its own
// columns from the saved logits and per-token log-normaliser. The caller must
// not modify logits_shard in place before backward (autograd checks).
kernels::CrossEntropyResult vocab_parallel_cross_entropy(const torch::Tensor& logits_shard,
                                                         const torch::Tensor& targets, const torch::Tensor& mask,
                                                         const VocabShard& shard, double label_smoothing,
                                                         Communicator* group);

// Dropout generators for tensor-parallel regions (seeded as Megatron does):
// activations split across TP ranks (attention probabilities, the FFN/expert
// hidden layer) need masks that DIFFER per TP rank, while the replicated
// residual stream keeps using the default generator, identical on all TP
// ranks. Holds a CPU generator and, when CUDA is available at construction,
// one per visible CUDA device, all seeded from a mix of (seed, tp_rank): the
// same pair always gives the same streams, different ranks different ones.
//
// Copies share the generators (at::Generator is a handle). Not thread-safe as
// a whole; each draw locks the generator it uses.
class TensorParallelRng {
 public:
  TensorParallelRng(uint64_t seed, int64_t tp_rank);

  // The generator for `device` (CPU, or CUDA: the given index, or the current
  // device when it has none). A handle sharing state with the one held here.
  at::Generator generator(const torch::Device& device);

  // Inverted dropout drawn from generator(x.device()): zeroes each element with
  // probability p and scales the rest by 1 / (1 - p). The identity when
  // !training or p == 0; p must be in [0, 1] (p == 1 gives zeros).
  torch::Tensor dropout(const torch::Tensor& x, double p, bool training);

  // Every generator's state, CPU first then CUDA devices in index order, for
  // activation checkpointing to replay a forward with the same masks.
  std::vector<torch::Tensor> get_state();
  // Restores what get_state returned (same object layout: throws
  // std::invalid_argument when the number of states differs).
  void set_state(const std::vector<torch::Tensor>& state);

  uint64_t seed() const { return seed_; }  // the derived seed every generator starts from
  int64_t tp_rank() const { return tp_rank_; }

 private:
  uint64_t seed_;
  int64_t tp_rank_;
  at::Generator cpu_;
  std::vector<at::Generator> cuda_;  // by device index
};

}  // namespace moetrain::parallel
