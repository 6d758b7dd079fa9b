#include "parallel/expert_dispatch.h"

#include <cstdint>
#include <numeric>
#include <stdexcept>
#include <string>
#include <vector>

#include "kernels/dispatch.h"
#include "parallel/collective_checks.h"

namespace moetrain::parallel {

namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

int64_t sum_of(const std::vector<int64_t>& values) { return std::accumulate(values.begin(), values.end(), int64_t{0}); }

bool ep_off(const Communicator* group) { return group == nullptr || group->size() == 1; }

torch::Tensor arange_rows(int64_t rows) { return torch::arange(rows, torch::kLong); }

// Moves rows of `rows` (send[j] of them to rank j, in order) and returns what
// arrives (recv[j] rows from rank j, in rank order).
torch::Tensor exchange_rows(const torch::Tensor& rows, const std::vector<int64_t>& send,
                            const std::vector<int64_t>& recv, Communicator& group) {
  const torch::Tensor input = rows.contiguous();
  std::vector<int64_t> shape = input.sizes().vec();
  shape[0] = sum_of(recv);
  torch::Tensor output = torch::empty(shape, input.options());
  group.all_to_all(input, output, send, recv);
  return output;
}

// Permuted rows -> the owners' local-expert-major rows.
torch::Tensor send_to_experts(const torch::Tensor& permuted, const std::vector<int64_t>& send_counts,
                              const std::vector<int64_t>& recv_counts, const torch::Tensor& regroup_inverse,
                              Communicator& group) {
  const torch::Tensor received = exchange_rows(permuted, send_counts, recv_counts, group);
  return received.index_select(0, regroup_inverse.to(received.device()));
}

// Local-expert-major rows -> back to the ranks they came from, in their order.
torch::Tensor return_to_sources(const torch::Tensor& expert_rows, const std::vector<int64_t>& send_counts,
                                const std::vector<int64_t>& recv_counts, const torch::Tensor& regroup_index,
                                Communicator& group) {
  const torch::Tensor source_major = expert_rows.index_select(0, regroup_index.to(expert_rows.device()));
  return exchange_rows(source_major, recv_counts, send_counts, group);
}

// What backward needs, copied out of the plan so the plan may die after
// forward. The communicator is kept as an integer: autograd's saved_data holds
// IValues only, and the communicator outlives backward by contract.
void save_route(AutogradContext* ctx, const ExpertDispatchPlan& plan, Communicator* group) {
  ctx->saved_data["send_counts"] = plan.send_counts;
  ctx->saved_data["recv_counts"] = plan.recv_counts;
  ctx->saved_data["regroup_index"] = plan.regroup_index;
  ctx->saved_data["regroup_inverse"] = plan.regroup_inverse;
  ctx->saved_data["group"] = static_cast<int64_t>(reinterpret_cast<intptr_t>(group));
}

Communicator& saved_group(AutogradContext* ctx) {
  return *reinterpret_cast<Communicator*>(static_cast<intptr_t>(ctx->saved_data["group"].toInt()));
}

class DispatchTokensFunction : public torch::autograd::Function<DispatchTokensFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& permuted, const ExpertDispatchPlan& plan,
                               Communicator* group) {
    save_route(ctx, plan, group);
    return send_to_experts(permuted, plan.send_counts, plan.recv_counts, plan.regroup_inverse, *group);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const torch::Tensor grad = return_to_sources(grad_outputs[0], ctx->saved_data["send_counts"].toIntVector(),
                                                 ctx->saved_data["recv_counts"].toIntVector(),
                                                 ctx->saved_data["regroup_index"].toTensor(), saved_group(ctx));
    return {grad, torch::Tensor(), torch::Tensor()};
  }
};

// `link` is the dispatched tensor of the same plan: an input whose gradient is
// always undefined, there only so that this node's backward schedules the
// dispatch's backward on every rank (see the header comment).
class CombineTokensFunction : public torch::autograd::Function<CombineTokensFunction> {
 public:
  static torch::Tensor forward(AutogradContext* ctx, const torch::Tensor& expert_output, const torch::Tensor& link,
                               const ExpertDispatchPlan& plan, Communicator* group) {
    (void)link;
    save_route(ctx, plan, group);
    return return_to_sources(expert_output, plan.send_counts, plan.recv_counts, plan.regroup_index, *group);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grad_outputs) {
    const torch::Tensor grad = send_to_experts(grad_outputs[0], ctx->saved_data["send_counts"].toIntVector(),
                                               ctx->saved_data["recv_counts"].toIntVector(),
                                               ctx->saved_data["regroup_inverse"].toTensor(), saved_group(ctx));
    return {grad, torch::Tensor(), torch::Tensor(), torch::Tensor()};
  }
};

void check_rows(const char* who, const torch::Tensor& t, const char* what, int64_t expected,
                const char* expected_what) {
  if (!t.defined() || t.dim() < 1) {
    throw std::invalid_argument(std::string(who) + ": " + what + " must be a tensor of rows [n, ...], got " +
                                kernels::describe_tensor(t));
  }
  if (t.size(0) != expected) {
    throw std::invalid_argument(std::string(who) + ": " + what + " has " + std::to_string(t.size(0)) +
                                " rows but the plan has " + std::to_string(expected) + " (" + expected_what + ")");
  }
}

void check_plan_matches_group(const char* who, const ExpertDispatchPlan& plan, const Communicator* group) {
  const int64_t size = group == nullptr ? 1 : group->size();
  if (plan.group_size != size || static_cast<int64_t>(plan.send_counts.size()) != size ||
      static_cast<int64_t>(plan.recv_counts.size()) != size || !plan.regroup_index.defined() ||
      !plan.regroup_inverse.defined()) {
    throw std::invalid_argument(std::string(who) + ": the plan was made for a group of " +
                                std::to_string(plan.group_size) +
                                " ranks (or not by plan_expert_dispatch), "
                                "but the group has " +
                                std::to_string(size));
  }
}

}  // namespace

int64_t ExpertDispatchPlan::num_send_rows() const { return sum_of(send_counts); }
int64_t ExpertDispatchPlan::num_recv_rows() const { return sum_of(recv_counts); }

ExpertDispatchPlan plan_expert_dispatch(const std::vector<int64_t>& tokens_per_expert, Communicator* group) {
  const int64_t num_experts = static_cast<int64_t>(tokens_per_expert.size());
  const int64_t ep = group == nullptr ? 1 : group->size();
  if (num_experts == 0 || num_experts % ep != 0) {
    throw std::invalid_argument("plan_expert_dispatch: " + std::to_string(num_experts) +
                                " experts cannot be split evenly over an expert group of " + std::to_string(ep) +
                                " ranks");
  }
  for (int64_t c : tokens_per_expert) {
    if (c < 0) {
      throw std::invalid_argument("plan_expert_dispatch: tokens_per_expert " + format_list(tokens_per_expert) +
                                  " has a negative count");
    }
  }

  ExpertDispatchPlan plan;
  plan.group_size = ep;
  plan.num_local_experts = num_experts / ep;
  const int64_t local = plan.num_local_experts;

  if (ep_off(group)) {
    const int64_t rows = sum_of(tokens_per_expert);
    plan.send_counts = {rows};
    plan.recv_counts = {rows};
    plan.recv_counts_per_expert = tokens_per_expert;
    plan.local_tokens_per_expert = tokens_per_expert;
    plan.regroup_index = arange_rows(rows);
    plan.regroup_inverse = plan.regroup_index;
    return plan;
  }

  // Row j of `mine` holds the counts for rank j's experts; after the exchange,
  // row s of `theirs` holds what source s sends to this rank's experts. The
  // counts are host values, so they travel on the host (over MPI, also for
  // an NCCL group): no device round trip.
  const torch::Tensor mine = torch::tensor(tokens_per_expert, torch::kLong).reshape({ep, local});
  torch::Tensor theirs = torch::empty_like(mine);
  const std::vector<int64_t> one_row_each(static_cast<size_t>(ep), 1);
  group->all_to_all(mine, theirs, one_row_each, one_row_each);
  const int64_t* from = theirs.data_ptr<int64_t>();
  plan.recv_counts_per_expert.assign(from, from + ep * local);

  plan.send_counts.assign(static_cast<size_t>(ep), 0);
  plan.recv_counts.assign(static_cast<size_t>(ep), 0);
  plan.local_tokens_per_expert.assign(static_cast<size_t>(local), 0);
  for (int64_t j = 0; j < ep; ++j) {
    for (int64_t l = 0; l < local; ++l) {
      plan.send_counts[j] += tokens_per_expert[j * local + l];
      plan.recv_counts[j] += from[j * local + l];
      plan.local_tokens_per_expert[l] += from[j * local + l];
    }
  }

  // Local-expert-major start of the block (expert l, source s): the rows of
  // earlier experts, then the rows earlier sources sent to expert l.
  std::vector<int64_t> block_start(static_cast<size_t>(ep * local), 0);
  int64_t offset = 0;
  for (int64_t l = 0; l < local; ++l) {
    for (int64_t s = 0; s < ep; ++s) {
      block_start[s * local + l] = offset;
      offset += from[s * local + l];
    }
  }
  const int64_t rows = plan.num_recv_rows();
  plan.regroup_index = torch::empty({rows}, torch::kLong);
  plan.regroup_inverse = torch::empty({rows}, torch::kLong);
  int64_t* index = plan.regroup_index.data_ptr<int64_t>();
  int64_t* inverse = plan.regroup_inverse.data_ptr<int64_t>();
  int64_t received = 0;  // source-major row
  for (int64_t s = 0; s < ep; ++s) {
    for (int64_t l = 0; l < local; ++l) {
      for (int64_t i = 0; i < from[s * local + l]; ++i, ++received) {
        const int64_t target = block_start[s * local + l] + i;
        index[received] = target;
        inverse[target] = received;
      }
    }
  }
  return plan;
}

torch::Tensor dispatch_tokens(const torch::Tensor& permuted, const ExpertDispatchPlan& plan, Communicator* group) {
  check_plan_matches_group("dispatch_tokens", plan, group);
  check_rows("dispatch_tokens", permuted, "permuted", plan.num_send_rows(), "sum of send_counts");
  if (ep_off(group)) return permuted;
  torch::Tensor dispatched = DispatchTokensFunction::apply(permuted, plan, group);
  if (plan.link) plan.link->dispatched = dispatched;
  return dispatched;
}

torch::Tensor combine_tokens(const torch::Tensor& expert_output, const ExpertDispatchPlan& plan, Communicator* group) {
  check_plan_matches_group("combine_tokens", plan, group);
  check_rows("combine_tokens", expert_output, "expert_output", plan.num_recv_rows(), "sum of recv_counts");
  if (ep_off(group)) return expert_output;
  // Without a dispatch through this plan (the combine alone is still a valid
  // exchange) there is nothing to link; autograd wants a defined tensor.
  const bool dispatched = plan.link && plan.link->dispatched.defined();
  const torch::Tensor link = dispatched ? plan.link->dispatched : torch::empty({0}, expert_output.options());
  return CombineTokensFunction::apply(expert_output, link, plan, group);
}

}  // namespace moetrain::parallel
