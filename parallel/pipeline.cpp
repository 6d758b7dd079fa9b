#include "parallel/pipeline.h"

#include <algorithm>
#include <chrono>
#include <limits>
#include <map>
#include <stdexcept>

namespace moetrain::parallel {
namespace {

using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point start) { return std::chrono::duration<double>(Clock::now() - start).count(); }

void check_shape(const char* fn, int64_t stages, int64_t stage, int64_t micro_batches) {
  if (stages < 1) {
    throw std::invalid_argument(std::string(fn) + ": stages must be at least 1, got " + std::to_string(stages));
  }
  if (stage < 0 || stage >= stages) {
    throw std::invalid_argument(std::string(fn) + ": stage " + std::to_string(stage) + " is outside [0, " +
                                std::to_string(stages) + ")");
  }
  if (micro_batches < 1) {
    throw std::invalid_argument(std::string(fn) + ": micro_batches must be at least 1, got " +
                                std::to_string(micro_batches));
  }
}

// What the step needs received before it runs, and what it sends after.
std::optional<PipelineMessage> message_before(const PipelineStep& step, int64_t stages, int64_t stage) {
  if (step.kind == StepKind::Forward && stage > 0) {
    return PipelineMessage{MessageKind::Activation, step.micro_batch, stage - 1};
  }
  if (step.kind == StepKind::Backward && stage < stages - 1) {
    return PipelineMessage{MessageKind::Gradient, step.micro_batch, stage + 1};
  }
  return std::nullopt;
}

std::optional<PipelineMessage> message_after(const PipelineStep& step, int64_t stages, int64_t stage) {
  if (step.kind == StepKind::Forward && stage < stages - 1) {
    return PipelineMessage{MessageKind::Activation, step.micro_batch, stage + 1};
  }
  if (step.kind == StepKind::Backward && stage > 0) {
    return PipelineMessage{MessageKind::Gradient, step.micro_batch, stage - 1};
  }
  return std::nullopt;
}

PipelineAction make_exchange(std::optional<PipelineMessage> send, std::optional<PipelineMessage> recv) {
  PipelineAction action;
  action.type = PipelineAction::Type::Exchange;
  action.send = send;
  action.recv = recv;
  return action;
}

// One micro-batch between its forward and its backward.
struct MicroBatchState {
  std::vector<torch::Tensor> inputs;        // received leaves (empty on the first stage)
  std::vector<torch::Tensor> outputs;       // what forward returned
  std::vector<torch::Tensor> output_grads;  // received from the next stage
};

std::string format_starts(const std::vector<int64_t>& starts) {
  std::string text = "[";
  for (size_t i = 0; i < starts.size(); ++i) text += (i ? ", " : "") + std::to_string(starts[i]);
  return text + "]";
}

std::string where(int64_t stage, int64_t micro_batch) {
  return "stage " + std::to_string(stage) + ", micro-batch " + std::to_string(micro_batch);
}

// The stats of this rank's stage, once the micro-batch count is checked.
PipelineStats start_stats(const std::string& caller, int64_t micro_batches, const Communicator& pp_group) {
  if (micro_batches < 1) {
    throw std::invalid_argument(caller + ": micro_batches must be at least 1, got " + std::to_string(micro_batches));
  }
  PipelineStats stats;
  stats.stage = pp_group.rank();
  stats.stages = pp_group.size();
  stats.micro_batches = micro_batches;
  return stats;
}

// Throws when a callback returned an undefined tensor.
void require_defined(const std::vector<torch::Tensor>& tensors, const std::string& what, int64_t stage,
                     int64_t micro_batch) {
  for (size_t i = 0; i < tensors.size(); ++i) {
    if (!tensors[i].defined()) {
      throw std::runtime_error(what + " returned an undefined tensor at index " + std::to_string(i) + " (" +
                               where(stage, micro_batch) + ")");
    }
  }
}

// One send_recv with a neighbour, counted in `stats`.
void exchange(Communicator& pp_group, const std::vector<torch::Tensor>& sends, int64_t dst,
              std::vector<torch::Tensor>& recvs, int64_t src, PipelineStats& stats) {
  const auto wait_start = Clock::now();
  pp_group.send_recv(sends, dst, recvs, src);
  stats.wait_s += seconds_since(wait_start);
  stats.exchanges += 1;
  for (const torch::Tensor& t : sends) stats.bytes_sent += t.nbytes();
  for (const torch::Tensor& t : recvs) stats.bytes_received += t.nbytes();
}

// One stage's side of run_pipeline(): the micro-batches between their forward
// and backward, and the tensors waiting for the exchange that sends them.
class StageRunner {
 public:
  StageRunner(Communicator& pp_group, const PipelineStageCallbacks& callbacks, PipelineStats& stats)
      : pp_group_(pp_group),
        callbacks_(callbacks),
        stats_(stats),
        stage_(stats.stage),
        first_(stats.stage == 0),
        last_(stats.stage == stats.stages - 1) {}

  // Sends the queued tensors the action's send names and receives what its recv names.
  void run_exchange(const PipelineAction& action) {
    std::vector<torch::Tensor> sends, recvs;
    int64_t dst = -1, src = -1;
    if (action.send) {
      auto& outbox = action.send->kind == MessageKind::Activation ? activations_out_ : gradients_out_;
      sends = std::move(outbox.at(action.send->micro_batch));
      outbox.erase(action.send->micro_batch);
      dst = action.send->peer;
    }
    // Gradients come back for the floating-point tensors only; `grad_slots`
    // says which output each received gradient belongs to.
    std::vector<size_t> grad_slots;
    if (action.recv) {
      recvs = receive_buffers(*action.recv, grad_slots);
      src = action.recv->peer;
    }
    if (sends.empty()) dst = -1;
    if (recvs.empty()) src = -1;
    if (dst != -1 || src != -1) exchange(pp_group_, sends, dst, recvs, src, stats_);
    if (action.recv) store_received(*action.recv, recvs, grad_slots);
  }

  // Runs the forward callback of micro-batch `mb` and queues its outputs for the next stage.
  void run_forward(int64_t mb) {
    MicroBatchState& state = live_[mb];
    const auto forward_start = Clock::now();
    state.outputs = callbacks_.forward(mb, state.inputs);
    stats_.forward_s += seconds_since(forward_start);
    require_defined(state.outputs, "run_pipeline: forward", stage_, mb);
    if (!last_) {
      std::vector<torch::Tensor> outbox;
      for (const torch::Tensor& t : state.outputs) outbox.push_back(t.detach().contiguous());
      activations_out_[mb] = std::move(outbox);
    }
    stats_.max_in_flight = std::max(stats_.max_in_flight, static_cast<int64_t>(live_.size()));
  }

  // Runs the backward callback of micro-batch `mb`, queues its input gradients
  // for the previous stage and drops the micro-batch's activations and graph.
  void run_backward(int64_t mb) {
    auto it = live_.find(mb);
    MicroBatchState& state = it->second;
    const auto backward_start = Clock::now();
    callbacks_.backward(mb, state.outputs, state.output_grads);
    if (!first_) {
      std::vector<torch::Tensor> outbox;
      for (const torch::Tensor& input : state.inputs) {
        if (!input.is_floating_point()) continue;
        const torch::Tensor& grad = input.grad();
        outbox.push_back(grad.defined() ? grad.detach().contiguous() : torch::zeros_like(input));
      }
      gradients_out_[mb] = std::move(outbox);
    }
    stats_.backward_s += seconds_since(backward_start);
    live_.erase(it);
  }

 private:
  // The buffers `message` is received into: the input_buffers callback's for
  // activations, fresh ones for the gradients of floating-point outputs.
  std::vector<torch::Tensor> receive_buffers(const PipelineMessage& message, std::vector<size_t>& grad_slots) {
    const int64_t mb = message.micro_batch;
    std::vector<torch::Tensor> recvs;
    if (message.kind == MessageKind::Activation) {
      recvs = callbacks_.input_buffers(mb);
      require_defined(recvs, "run_pipeline: input_buffers", stage_, mb);
      return recvs;
    }
    const std::vector<torch::Tensor>& outputs = live_.at(mb).outputs;
    for (size_t i = 0; i < outputs.size(); ++i) {
      if (!outputs[i].is_floating_point()) continue;
      recvs.push_back(torch::empty(outputs[i].sizes(),
                                   torch::TensorOptions().dtype(outputs[i].dtype()).device(outputs[i].device())));
      grad_slots.push_back(i);
    }
    return recvs;
  }

  // Files the received tensors into the micro-batch's state.
  void store_received(const PipelineMessage& message, std::vector<torch::Tensor>& recvs,
                      const std::vector<size_t>& grad_slots) {
    MicroBatchState& state = live_[message.micro_batch];
    if (message.kind == MessageKind::Activation) {
      // Fresh leaves: the backward callback's autograd stops here and
      // leaves each input's gradient in its grad().
      for (torch::Tensor& t : recvs) {
        torch::Tensor leaf = t.detach();
        if (leaf.is_floating_point()) leaf.requires_grad_(true);
        state.inputs.push_back(leaf);
      }
    } else {
      state.output_grads.assign(state.outputs.size(), torch::Tensor());
      for (size_t j = 0; j < grad_slots.size(); ++j) state.output_grads[grad_slots[j]] = recvs[j];
    }
  }

  Communicator& pp_group_;
  const PipelineStageCallbacks& callbacks_;
  PipelineStats& stats_;
  const int64_t stage_;
  const bool first_, last_;
  std::map<int64_t, MicroBatchState> live_;
  // Tensors waiting for the exchange that sends them, by micro-batch.
  std::map<int64_t, std::vector<torch::Tensor>> activations_out_, gradients_out_;
};

}  // namespace

std::string schedule_name(PipelineSchedule schedule) {
  return schedule == PipelineSchedule::OneFOneB ? "1f1b" : "gpipe";
}

PipelineSchedule parse_schedule(const std::string& name) {
  if (name == "1f1b") return PipelineSchedule::OneFOneB;
  if (name == "gpipe") return PipelineSchedule::GPipe;
  throw std::invalid_argument("unknown pipeline schedule '" + name + "' (expected 1f1b or gpipe)");
}

std::vector<PipelineStep> pipeline_steps(PipelineSchedule schedule, int64_t stages, int64_t stage,
                                         int64_t micro_batches) {
  check_shape("pipeline_steps", stages, stage, micro_batches);
  const int64_t m = micro_batches;
  std::vector<PipelineStep> steps;
  steps.reserve(2 * m);
  int64_t forwards = 0, backwards = 0;
  auto forward = [&] { steps.push_back({StepKind::Forward, forwards++}); };
  auto backward = [&] { steps.push_back({StepKind::Backward, backwards++}); };

  if (schedule == PipelineSchedule::GPipe && stages > 1) {
    while (forwards < m) forward();
    while (backwards < m) backward();
    return steps;
  }
  // 1F1B, and either schedule on a single stage (where warmup is 0).
  const int64_t warmup = std::min(stages - stage - 1, m);
  for (int64_t i = 0; i < warmup; ++i) forward();
  while (forwards < m) {
    forward();
    backward();
  }
  while (backwards < m) backward();
  return steps;
}

std::vector<PipelineAction> pipeline_plan(PipelineSchedule schedule, int64_t stages, int64_t stage,
                                          int64_t micro_batches) {
  std::vector<PipelineAction> plan;
  std::optional<PipelineMessage> pending_send;
  for (const PipelineStep& step : pipeline_steps(schedule, stages, stage, micro_batches)) {
    std::optional<PipelineMessage> recv = message_before(step, stages, stage);
    if (pending_send || recv) plan.push_back(make_exchange(pending_send, recv));
    PipelineAction compute;
    compute.type = PipelineAction::Type::Compute;
    compute.step = step;
    plan.push_back(compute);
    pending_send = message_after(step, stages, stage);
  }
  if (pending_send) plan.push_back(make_exchange(pending_send, std::nullopt));
  return plan;
}

double ideal_bubble_ratio(int64_t stages, int64_t micro_batches) {
  check_shape("ideal_bubble_ratio", stages, 0, micro_batches);
  return static_cast<double>(stages - 1) / static_cast<double>(micro_batches);
}

double ideal_bubble_fraction(int64_t stages, int64_t micro_batches) {
  check_shape("ideal_bubble_fraction", stages, 0, micro_batches);
  return static_cast<double>(stages - 1) / static_cast<double>(micro_batches + stages - 1);
}

double PipelineStats::idle_fraction() const {
  if (total_s <= 0) return 0;
  return std::max(0.0, total_s - compute_s()) / total_s;
}

double PipelineStats::bubble_ratio() const {
  if (compute_s() <= 0) return 0;
  return std::max(0.0, total_s - compute_s()) / compute_s();
}

void backward_from_outputs(const std::vector<torch::Tensor>& outputs, const std::vector<torch::Tensor>& output_grads) {
  if (outputs.size() != output_grads.size()) {
    throw std::invalid_argument("backward_from_outputs: " + std::to_string(outputs.size()) + " outputs but " +
                                std::to_string(output_grads.size()) + " output gradients");
  }
  std::vector<torch::Tensor> roots, grads;
  for (size_t i = 0; i < outputs.size(); ++i) {
    if (!outputs[i].requires_grad() || !output_grads[i].defined()) continue;
    roots.push_back(outputs[i]);
    grads.push_back(output_grads[i]);
  }
  if (!roots.empty()) torch::autograd::backward(roots, grads);
}

PipelineStats run_pipeline(PipelineSchedule schedule, int64_t micro_batches, Communicator& pp_group,
                           const PipelineStageCallbacks& callbacks) {
  const auto start = Clock::now();
  PipelineStats stats = start_stats("run_pipeline", micro_batches, pp_group);
  const int64_t stages = stats.stages;
  const int64_t stage = stats.stage;
  const bool first = stage == 0;
  if (!callbacks.forward || !callbacks.backward) {
    throw std::invalid_argument("run_pipeline: the forward and backward callbacks must both be set");
  }
  if (!first && !callbacks.input_buffers) {
    throw std::invalid_argument("run_pipeline: stage " + std::to_string(stage) +
                                " receives inputs, so the input_buffers callback must be set");
  }

  StageRunner runner(pp_group, callbacks, stats);
  for (const PipelineAction& action : pipeline_plan(schedule, stages, stage, micro_batches)) {
    if (action.type == PipelineAction::Type::Exchange) {
      runner.run_exchange(action);
    } else if (action.step.kind == StepKind::Forward) {
      runner.run_forward(action.step.micro_batch);
    } else {
      runner.run_backward(action.step.micro_batch);
    }
  }
  stats.total_s = seconds_since(start);
  return stats;
}

PipelineStats run_forward_pipeline(int64_t micro_batches, Communicator& pp_group,
                                   const PipelineStageCallbacks& callbacks) {
  const auto start = Clock::now();
  PipelineStats stats = start_stats("run_forward_pipeline", micro_batches, pp_group);
  const int64_t stage = stats.stage;
  const bool first = stage == 0;
  const bool last = stage == stats.stages - 1;
  if (!callbacks.forward || (!first && !callbacks.input_buffers)) {
    throw std::invalid_argument("run_forward_pipeline: stage " + std::to_string(stage) + " needs the forward callback" +
                                (first ? "" : " and the input_buffers callback"));
  }
  for (int64_t mb = 0; mb < micro_batches; ++mb) {
    std::vector<torch::Tensor> inputs, none;
    if (!first) {
      inputs = callbacks.input_buffers(mb);
      require_defined(inputs, "run_forward_pipeline: input_buffers", stage, mb);
      if (!inputs.empty()) exchange(pp_group, none, -1, inputs, stage - 1, stats);
    }
    const auto forward_start = Clock::now();
    const std::vector<torch::Tensor> outputs = callbacks.forward(mb, inputs);
    stats.forward_s += seconds_since(forward_start);
    if (last) continue;
    require_defined(outputs, "run_forward_pipeline: forward", stage, mb);
    std::vector<torch::Tensor> sends;
    for (const torch::Tensor& t : outputs) sends.push_back(t.detach().contiguous());
    if (!sends.empty()) exchange(pp_group, sends, stage + 1, none, -1, stats);
  }
  stats.max_in_flight = 1;
  stats.total_s = seconds_since(start);
  return stats;
}

std::vector<int64_t> partition_stages(const std::vector<int64_t>& unit_costs, int64_t stages) {
  const int64_t n = static_cast<int64_t>(unit_costs.size());
  if (stages < 1) {
    throw std::invalid_argument("partition_stages: stages must be at least 1, got " + std::to_string(stages));
  }
  if (stages > n) {
    throw std::invalid_argument("partition_stages: cannot split " + std::to_string(n) + " units into " +
                                std::to_string(stages) + " non-empty stages");
  }
  std::vector<int64_t> prefix(n + 1, 0);
  for (int64_t i = 0; i < n; ++i) {
    if (unit_costs[i] < 0) {
      throw std::invalid_argument("partition_stages: unit " + std::to_string(i) + " has negative cost " +
                                  std::to_string(unit_costs[i]));
    }
    prefix[i + 1] = prefix[i] + unit_costs[i];
  }
  auto cost = [&](int64_t begin, int64_t end) { return prefix[end] - prefix[begin]; };

  // best[k][i]: the smallest possible largest stage cost when units [i, n)
  // form k non-empty stages (i <= n - k).
  constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  std::vector<std::vector<int64_t>> best(stages + 1, std::vector<int64_t>(n + 1, kNone));
  for (int64_t i = 0; i < n; ++i) best[1][i] = cost(i, n);
  for (int64_t k = 2; k <= stages; ++k) {
    for (int64_t i = 0; i <= n - k; ++i) {
      for (int64_t j = i + 1; j <= n - k + 1; ++j) {
        best[k][i] = std::min(best[k][i], std::max(cost(i, j), best[k - 1][j]));
      }
    }
  }
  const int64_t optimum = best[stages][0];

  // Each stage ends at the first unit that still leaves the rest feasible.
  std::vector<int64_t> starts{0};
  for (int64_t k = stages; k > 1; --k) {
    const int64_t begin = starts.back();
    int64_t end = begin + 1;
    while (cost(begin, end) > optimum || best[k - 1][end] > optimum) ++end;
    starts.push_back(end);
  }
  return starts;
}

std::vector<int64_t> partition_from_cuts(const std::vector<int64_t>& cuts, int64_t units, int64_t stages) {
  if (stages < 1) {
    throw std::invalid_argument("stage cut points: stages must be at least 1, got " + std::to_string(stages));
  }
  if (units < stages) {
    throw std::invalid_argument("stage cut points: cannot split " + std::to_string(units) + " units into " +
                                std::to_string(stages) + " non-empty stages");
  }
  if (static_cast<int64_t>(cuts.size()) != stages - 1) {
    throw std::invalid_argument("stage cut points: " + std::to_string(stages) + " stages need " +
                                std::to_string(stages - 1) + " cut points (the units where stages 1.." +
                                std::to_string(stages - 1) + " begin), got " + std::to_string(cuts.size()));
  }
  std::vector<int64_t> starts{0};
  for (size_t i = 0; i < cuts.size(); ++i) {
    const int64_t cut = cuts[i];
    const std::string name = "cut point " + std::to_string(i) + " (" + std::to_string(cut) + ", where stage " +
                             std::to_string(i + 1) + " begins)";
    if (cut < 0 || cut > units) {
      throw std::invalid_argument("stage cut points: " + name + " is out of range: the model has " +
                                  std::to_string(units) + " units, indices 0.." + std::to_string(units - 1));
    }
    if (cut < starts.back()) {
      throw std::invalid_argument("stage cut points: cut points must increase, but " + name + " comes after " +
                                  std::to_string(starts.back()));
    }
    if (cut == starts.back()) {
      throw std::invalid_argument("stage cut points: " + name + " leaves stage " + std::to_string(i) + " empty");
    }
    if (cut == units) {
      throw std::invalid_argument("stage cut points: " + name + " leaves stage " + std::to_string(i + 1) +
                                  " empty (the model has " + std::to_string(units) + " units)");
    }
    starts.push_back(cut);
  }
  return starts;
}

std::vector<int64_t> stage_costs(const std::vector<int64_t>& unit_costs, const std::vector<int64_t>& starts) {
  const int64_t n = static_cast<int64_t>(unit_costs.size());
  if (starts.empty() || starts.front() != 0) {
    throw std::invalid_argument("stage_costs: a partition starts with unit 0, got " + format_starts(starts));
  }
  std::vector<int64_t> costs;
  for (size_t s = 0; s < starts.size(); ++s) {
    const int64_t begin = starts[s];
    const int64_t end = s + 1 < starts.size() ? starts[s + 1] : n;
    if (begin < 0 || end > n || begin >= end) {
      throw std::invalid_argument("stage_costs: stage " + std::to_string(s) + " spans units [" + std::to_string(begin) +
                                  ", " + std::to_string(end) + ") of " + std::to_string(n) + "; not a partition");
    }
    int64_t sum = 0;
    for (int64_t u = begin; u < end; ++u) sum += unit_costs[u];
    costs.push_back(sum);
  }
  return costs;
}

}  // namespace moetrain::parallel
