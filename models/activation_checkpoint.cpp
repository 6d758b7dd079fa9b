#include "models/activation_checkpoint.h"

#include <mutex>
#include <optional>
#include <stdexcept>
#include <utility>

namespace moetrain::models {

namespace {

torch::Tensor get_generator_state(c10::Device device) {
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  return gen.get_state();
}

void set_generator_state(c10::Device device, const torch::Tensor& state) {
  at::Generator gen = at::globalContext().defaultGenerator(device);
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(state);
}

}  // namespace

namespace {
parallel::TensorParallelRng* g_tensor_parallel_rng = nullptr;
}  // namespace

void set_tensor_parallel_rng(parallel::TensorParallelRng* rng) { g_tensor_parallel_rng = rng; }
parallel::TensorParallelRng* tensor_parallel_rng() { return g_tensor_parallel_rng; }

RngSnapshot capture_rng(const std::vector<torch::Tensor>& inputs) {
  RngSnapshot s;
  if (g_tensor_parallel_rng) s.tensor_parallel = g_tensor_parallel_rng->get_state();
  s.cpu = get_generator_state(c10::Device(c10::kCPU));
  for (const auto& t : inputs) {
    if (t.defined() && t.is_cuda()) {
      s.cuda_device = t.device();
      s.cuda = get_generator_state(t.device());
      break;
    }
  }
  return s;
}

void restore_rng(const RngSnapshot& s) {
  set_generator_state(c10::Device(c10::kCPU), s.cpu);
  if (s.cuda_device) set_generator_state(*s.cuda_device, s.cuda);
  if (g_tensor_parallel_rng && !s.tensor_parallel.empty()) g_tensor_parallel_rng->set_state(s.tensor_parallel);
}

namespace {

// What backward needs besides the saved inputs; travels in ctx->saved_data as
// a capsule because an std::function is not an IValue.
struct CheckpointState : torch::CustomClassHolder {
  CheckpointedFunction fn;
  std::vector<torch::Tensor> params;
  std::vector<bool> input_requires_grad;
  RngSnapshot rng;
};

class CheckpointFunction : public torch::autograd::Function<CheckpointFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                c10::intrusive_ptr<CheckpointState> state, at::TensorList inputs,
                                                at::TensorList /*params*/) {
    std::vector<torch::Tensor> input_vec(inputs.begin(), inputs.end());
    state->rng = capture_rng(input_vec);
    for (const auto& t : input_vec) state->input_requires_grad.push_back(t.requires_grad());

    std::vector<torch::Tensor> outputs;
    {
      torch::NoGradGuard no_grad;
      outputs = state->fn(input_vec);
    }
    for (const auto& out : outputs) {
      if (!out.defined()) {
        throw std::invalid_argument("checkpoint: the checkpointed function returned an undefined tensor");
      }
      if (!at::isFloatingType(out.scalar_type())) ctx->mark_non_differentiable({out});
    }
    ctx->save_for_backward(input_vec);
    ctx->saved_data["state"] = c10::IValue::make_capsule(std::move(state));
    return outputs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto state = c10::static_intrusive_pointer_cast<CheckpointState>(ctx->saved_data["state"].toCapsule());
    const std::vector<torch::Tensor> saved = ctx->get_saved_variables();

    std::vector<torch::Tensor> inputs;
    inputs.reserve(saved.size());
    for (size_t i = 0; i < saved.size(); ++i) {
      inputs.push_back(saved[i].detach().requires_grad_(state->input_requires_grad[i]));
    }

    std::vector<torch::Tensor> outputs;
    {
      // Replay from the forward's RNG state, then give the generator back the
      // state it had, so checkpointing does not shift later random draws.
      const RngSnapshot now = capture_rng(inputs);
      restore_rng(state->rng);
      torch::AutoGradMode enable_grad(true);
      try {
        outputs = state->fn(inputs);
      } catch (...) {
        restore_rng(now);
        throw;
      }
      restore_rng(now);
    }

    std::vector<torch::Tensor> roots;
    std::vector<torch::Tensor> root_grads;
    for (size_t i = 0; i < outputs.size() && i < grad_outputs.size(); ++i) {
      if (outputs[i].requires_grad() && grad_outputs[i].defined()) {
        roots.push_back(outputs[i]);
        root_grads.push_back(grad_outputs[i]);
      }
    }
    // The replay's backward accumulates the parameters' gradients into their
    // .grad itself, as any backward does, so their hooks (the DP gradient
    // reducer's) fire once; the inputs' gradients land on the detached
    // copies and leave through this node's input slots. (Asking
    // autograd::grad for the parameters' gradients and returning them would
    // fire each parameter's hooks twice: once inside the replay, once when
    // the returned gradient is accumulated.)
    std::vector<torch::Tensor> targets;
    for (const auto& input : inputs) {
      if (input.requires_grad()) targets.push_back(input);
    }
    for (const auto& param : state->params) {
      if (param.requires_grad()) targets.push_back(param);
    }

    // Gradient slots: the state argument, then each input, then each param
    // (left empty: the parameters have theirs already).
    torch::autograd::variable_list result(1 + inputs.size() + state->params.size());
    if (roots.empty() || targets.empty()) return result;
    torch::autograd::backward(roots, root_grads, /*retain_graph=*/false, /*create_graph=*/false, targets);
    for (size_t i = 0; i < inputs.size(); ++i) {
      if (inputs[i].requires_grad()) result[1 + i] = inputs[i].grad();
    }
    return result;
  }
};

}  // namespace

std::vector<torch::Tensor> checkpoint(CheckpointedFunction fn, const std::vector<torch::Tensor>& inputs,
                                      const std::vector<torch::Tensor>& params) {
  if (!fn) throw std::invalid_argument("checkpoint: empty function");
  for (const auto& t : inputs) {
    if (!t.defined()) throw std::invalid_argument("checkpoint: undefined input tensor");
  }
  auto state = c10::make_intrusive<CheckpointState>();
  state->fn = std::move(fn);
  state->params = params;
  return CheckpointFunction::apply(state, at::TensorList(inputs), at::TensorList(params));
}

}  // namespace moetrain::models
