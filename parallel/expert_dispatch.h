// Expert-parallel token dispatch: the two all-to-alls around the experts of a
// MoE layer when its E experts are split over the ranks of an expert (EP)
// group.
//
// Layout. With ep ranks in the group and L = E / ep, EP rank r holds the global
// experts [r*L, (r+1)*L). Every rank routes its own tokens over all E experts
// and permutes the kept copies into segments by global expert id (expert 0's
// rows first). Then, on every rank of the group:
//
//   plan     = plan_expert_dispatch(tokens_per_expert, group);  // counts
//   local    = dispatch_tokens(permuted, plan, group);          // to the owners
//   out      = <local expert l on rows of segment l, for l < L>;
//   returned = combine_tokens(out, plan, group);                // back home
//
// `returned` has this rank's rows in its own permuted order, so the
// single-process unpermute finishes the layer. Row orders:
//   - what a rank sends: its permuted rows, rank 0's experts first (the
//     segments of experts [j*L, (j+1)*L) go to rank j);
//   - what a rank receives ("source-major"): rank 0's rows first; within one
//     source, by local expert; within that, in the source's order;
//   - what dispatch returns ("local-expert-major"): local expert 0's rows
//     first; within one expert, by source rank; within that, in the source's
//     order. Each local expert's rows are contiguous, sized
//     plan.local_tokens_per_expert.
//
// Collectives. plan_expert_dispatch makes one all_to_all of the counts;
// dispatch_tokens and combine_tokens one each in forward and one each in
// backward. Every rank of the group must make these calls in the same order,
// whatever its counts: a rank that sends nothing, receives nothing or has no
// token at all still takes part (with zero-row tensors).
//
// Backward. Both functions are differentiable; the gradient travels the
// reverse all-to-all. So that backward stays collective on every rank, the
// plan links a dispatch to its combine in the autograd graph: combine's
// backward always feeds dispatch's backward, even on a rank whose experts got
// no row (where the expert computation usually returns a fresh, unconnected
// empty tensor). The caller's part: on every rank of the group, either all or
// none of the dispatched inputs require grad, and backward is run through the
// combined output on all ranks or on none.
//
// Lifetimes. backward uses `group` (by pointer) and copies of the plan's
// counts, so the plan may die after forward but the communicator must outlive
// backward. One plan serves one dispatch and its combine.
//
// A null group or a group of one rank means EP is off: the plan is derived
// locally (L = E, everything stays), dispatch and combine return their input.
//
// Tensors: [rows, ...] of any dtype (bf16/fp16 included: rows are moved, never
// reduced), on the device the communicator takes (CPU for MPI, CUDA for NCCL).
#pragma once

#include <torch/torch.h>

#include <cstdint>
#include <memory>
#include <vector>

#include "parallel/communicator.h"

namespace moetrain::parallel {

// What a dispatch needs to know beyond this rank's own counts. Built by
// plan_expert_dispatch; all vectors hold host values.
struct ExpertDispatchPlan {
  int64_t group_size = 1;                        // EP ranks
  int64_t num_local_experts = 0;                 // L = E / group_size
  std::vector<int64_t> send_counts;              // [group_size] rows this rank sends to each EP rank
  std::vector<int64_t> recv_counts;              // [group_size] rows it receives from each EP rank
  std::vector<int64_t> recv_counts_per_expert;   // [group_size * L]: entry s*L + l = rows from
                                                 // source s for local expert l
  std::vector<int64_t> local_tokens_per_expert;  // [L] rows per local expert (sum over sources)
  // int64 CPU [recv rows]: regroup_index[i] is where received (source-major)
  // row i goes in the local-expert-major order; regroup_inverse is its inverse
  // (local-expert-major row j came from received row regroup_inverse[j]).
  torch::Tensor regroup_index;
  torch::Tensor regroup_inverse;

  int64_t num_send_rows() const;  // sum(send_counts): rows of `permuted`
  int64_t num_recv_rows() const;  // sum(recv_counts): rows of dispatch's result

  // The dispatched tensor, recorded by dispatch_tokens and read by
  // combine_tokens to tie their backward passes together (see the header
  // comment). Shared, so copies of a plan share it.
  struct AutogradLink {
    torch::Tensor dispatched;
  };
  std::shared_ptr<AutogradLink> link = std::make_shared<AutogradLink>();
};

// tokens_per_expert: this rank's kept assignments per GLOBAL expert (size E,
// E divisible by the group size, counts >= 0). Collective over the group: one
// all_to_all of E int64 counts (the size-1 / null group communicates nothing).
// Throws std::invalid_argument (before communicating) on bad counts.
ExpertDispatchPlan plan_expert_dispatch(const std::vector<int64_t>& tokens_per_expert, Communicator* group);

// permuted [M, ...] (segments by global expert, M = plan.num_send_rows()) ->
// [plan.num_recv_rows(), ...] in local-expert-major order. Differentiable:
// backward regroups the gradient to source-major and sends it back.
torch::Tensor dispatch_tokens(const torch::Tensor& permuted, const ExpertDispatchPlan& plan, Communicator* group);

// expert_output [plan.num_recv_rows(), ...] in local-expert-major order ->
// [M, ...] back in this rank's original permuted order. Differentiable:
// backward is dispatch of the gradient.
torch::Tensor combine_tokens(const torch::Tensor& expert_output, const ExpertDispatchPlan& plan, Communicator* group);

}  // namespace moetrain::parallel
