#include "trainer/zero3_params.h"

#include "models/activation_checkpoint.h"

#include <mutex>
#include <optional>
#include <stdexcept>
#include <utility>

namespace moetrain::trainer {

namespace {

// Runs fn with unit u bound, releasing it however fn ends.
std::vector<torch::Tensor> with_unit(Zero3Params& z, size_t u, const models::LayerFunction& fn,
                                     const std::vector<torch::Tensor>& inputs) {
  z.gather(u);
  std::vector<torch::Tensor> out;
  try {
    out = fn(inputs);
  } catch (...) {
    z.release(u);
    throw;
  }
  z.release(u);
  return out;
}

// What backward needs; a capsule in ctx->saved_data (std::function is no IValue).
struct LayerState : torch::CustomClassHolder {
  Zero3Params* owner = nullptr;
  size_t unit = 0;
  models::LayerFunction fn;
  std::vector<bool> input_requires_grad;
  models::RngSnapshot rng;
};

class Zero3LayerFunction : public torch::autograd::Function<Zero3LayerFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                c10::intrusive_ptr<LayerState> state, at::TensorList inputs,
                                                const torch::Tensor& /*anchor*/) {
    std::vector<torch::Tensor> input_vec(inputs.begin(), inputs.end());
    state->rng = models::capture_rng(input_vec);
    for (const auto& t : input_vec) state->input_requires_grad.push_back(t.requires_grad());
    std::vector<torch::Tensor> outputs;
    {
      torch::NoGradGuard no_grad;
      outputs = with_unit(*state->owner, state->unit, state->fn, input_vec);
    }
    for (const auto& out : outputs) {
      if (!at::isFloatingType(out.scalar_type())) ctx->mark_non_differentiable({out});
    }
    ctx->save_for_backward(input_vec);
    ctx->saved_data["state"] = c10::IValue::make_capsule(std::move(state));
    return outputs;
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_outputs) {
    auto state = c10::static_intrusive_pointer_cast<LayerState>(ctx->saved_data["state"].toCapsule());
    const std::vector<torch::Tensor> saved = ctx->get_saved_variables();
    std::vector<torch::Tensor> inputs;
    for (size_t i = 0; i < saved.size(); ++i) {
      inputs.push_back(saved[i].detach().requires_grad_(state->input_requires_grad[i]));
    }
    Zero3Params& z = *state->owner;
    auto& flat = z.params();
    const auto [first, last] = flat.unit_entries(state->unit);

    // Slots: the state, each input, the anchor.
    torch::autograd::variable_list result(1 + inputs.size() + 1);
    std::vector<torch::Tensor> weight_grads(last - first);
    z.gather(state->unit);
    try {
      std::vector<torch::Tensor> outputs;
      {
        const models::RngSnapshot now = models::capture_rng(inputs);
        models::restore_rng(state->rng);
        torch::AutoGradMode enable_grad(true);
        try {
          outputs = state->fn(inputs);
        } catch (...) {
          models::restore_rng(now);
          throw;
        }
        models::restore_rng(now);
      }
      std::vector<torch::Tensor> roots, root_grads;
      for (size_t i = 0; i < outputs.size() && i < grad_outputs.size(); ++i) {
        if (outputs[i].requires_grad() && grad_outputs[i].defined()) {
          roots.push_back(outputs[i]);
          root_grads.push_back(grad_outputs[i]);
        }
      }
      std::vector<torch::Tensor> targets;
      std::vector<size_t> input_slot;
      for (size_t i = 0; i < inputs.size(); ++i) {
        if (inputs[i].requires_grad()) {
          targets.push_back(inputs[i]);
          input_slot.push_back(i);
        }
      }
      for (size_t i = first; i < last; ++i) targets.push_back(flat.entries()[i].param);
      if (!roots.empty()) {
        const auto grads = torch::autograd::grad(roots, targets, root_grads, /*retain_graph=*/false,
                                                 /*create_graph=*/false, /*allow_unused=*/true);
        for (size_t j = 0; j < input_slot.size(); ++j) result[1 + input_slot[j]] = grads[j];
        for (size_t i = 0; i < weight_grads.size(); ++i) weight_grads[i] = grads[input_slot.size() + i];
      }
    } catch (...) {
      z.release(state->unit);
      throw;
    }
    z.release(state->unit);
    // Every rank reaches this collective for every layer, in the same order,
    // even when the recompute produced no gradient (zeros are reduced then).
    z.reduce_grads(state->unit, weight_grads);
    return result;
  }
};

}  // namespace

Zero3Params::Zero3Params(optim::FlatParameters& params, parallel::Communicator& dp)
    : params_(params), dp_(dp) {
  if (!params_.sharding().shard_params) {
    throw std::invalid_argument("Zero3Params: the flat parameters are not sharded for ZeRO 3");
  }
  if (params_.sharding().shards != dp_.size()) {
    throw std::invalid_argument("Zero3Params: shards != data-parallel size");
  }
  const auto& units = params_.units();
  for (size_t u = 0; u < units.size(); ++u) {
    // unit_of names a layer's unit "<stack>.layers.N"; the model's runner
    // calls use the same names.
    if (units[u].name.find(".layers.") != std::string::npos) {
      layer_units_.emplace(units[u].name, u);
    } else {
      non_layer_units_.push_back(u);
    }
  }
  anchor_ = torch::zeros({0}, params_.master().options()).requires_grad_();
}

int64_t Zero3Params::layer_unit(const std::string& name) const {
  const auto it = layer_units_.find(name);
  return it == layer_units_.end() ? -1 : static_cast<int64_t>(it->second);
}

void Zero3Params::gather(size_t u) {
  torch::NoGradGuard no_grad;
  const auto& unit = params_.units().at(u);
  const auto piece = params_.master().narrow(0, unit.local_offset, unit.shard);
  auto full = torch::empty({unit.padded}, piece.options().dtype(params_.compute_dtype()));
  if (dp_.size() == 1) {
    full.copy_(piece);  // a copy even in fp32: the model must never alias the master
  } else {
    dp_.all_gather(piece.to(params_.compute_dtype()).contiguous(), full);
  }
  params_.bind_unit(u, full);
}

void Zero3Params::reduce_grads(size_t u, const std::vector<torch::Tensor>& grads) {
  torch::NoGradGuard no_grad;
  const auto& unit = params_.units().at(u);
  auto flat = torch::empty({unit.padded}, params_.grads().options());
  params_.flatten_unit_grads(u, grads, flat);
  auto piece = params_.grads().narrow(0, unit.local_offset, unit.shard);
  if (dp_.size() == 1) {
    piece.add_(flat);
    return;
  }
  auto reduced = torch::empty_like(piece);
  dp_.reduce_scatter(flat, reduced);
  piece.add_(reduced);
}

void Zero3Params::gather_non_layer() {
  for (const size_t u : non_layer_units_) gather(u);
}

void Zero3Params::release_non_layer() {
  for (const size_t u : non_layer_units_) release(u);
}

void Zero3Params::reduce_non_layer_grads() {
  for (const size_t u : non_layer_units_) {
    const auto [first, last] = params_.unit_entries(u);
    std::vector<torch::Tensor> grads;
    for (size_t i = first; i < last; ++i) {
      auto param = params_.entries()[i].param;
      grads.push_back(param.grad());
      param.mutable_grad() = torch::Tensor();
    }
    release(u);
    reduce_grads(u, grads);
  }
}

models::LayerRunner Zero3Params::layer_runner() {
  return [this](const std::string& name, const models::LayerFunction& fn,
                const std::vector<torch::Tensor>& inputs) -> std::vector<torch::Tensor> {
    const int64_t u = layer_unit(name);
    if (u < 0) return fn(inputs);  // a wholly frozen layer: its weights are not sharded
    if (!torch::GradMode::is_enabled()) return with_unit(*this, static_cast<size_t>(u), fn, inputs);
    auto state = c10::make_intrusive<LayerState>();
    state->owner = this;
    state->unit = static_cast<size_t>(u);
    state->fn = fn;
    return Zero3LayerFunction::apply(state, at::TensorList(inputs), anchor_);
  };
}

}  // namespace moetrain::trainer
