#include "optim/zero3_params.h"

#include "models/activation_checkpoint.h"

#include <mutex>
#include <optional>
#include <stdexcept>
#include <utility>

namespace moetrain::optim {

namespace {

void gather_all(Zero3Params& z, const std::vector<size_t>& units) {
  for (const size_t u : units) z.gather(u);
}
void release_all(Zero3Params& z, const std::vector<size_t>& units) {
  for (const size_t u : units) z.release(u);
}

// Runs fn with a layer's units bound, releasing them however fn ends.
std::vector<torch::Tensor> with_units(Zero3Params& z, const std::vector<size_t>& units, const models::LayerFunction& fn,
                                      const std::vector<torch::Tensor>& inputs) {
  gather_all(z, units);
  std::vector<torch::Tensor> out;
  try {
    out = fn(inputs);
  } catch (...) {
    release_all(z, units);
    throw;
  }
  release_all(z, units);
  return out;
}

// What backward needs; a capsule in ctx->saved_data (std::function is no IValue).
struct LayerState : torch::CustomClassHolder {
  Zero3Params* owner = nullptr;
  std::vector<size_t> units;  // the layer's unit, and its expert unit under EP
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
      outputs = with_units(*state->owner, state->units, state->fn, input_vec);
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
    std::vector<size_t> weight_entries;
    for (const size_t u : state->units) {
      const auto [first, last] = flat.unit_entries(u);
      for (size_t i = first; i < last; ++i) weight_entries.push_back(i);
    }

    // Slots: the state, each input, the anchor.
    torch::autograd::variable_list result(1 + inputs.size() + 1);
    std::vector<torch::Tensor> weight_grads(weight_entries.size());
    gather_all(z, state->units);
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
      for (const size_t i : weight_entries) targets.push_back(flat.entries()[i].param);
      if (!roots.empty()) {
        const auto grads = torch::autograd::grad(roots, targets, root_grads, /*retain_graph=*/false,
                                                 /*create_graph=*/false, /*allow_unused=*/true);
        for (size_t j = 0; j < input_slot.size(); ++j) result[1 + input_slot[j]] = grads[j];
        for (size_t i = 0; i < weight_grads.size(); ++i) weight_grads[i] = grads[input_slot.size() + i];
      }
    } catch (...) {
      release_all(z, state->units);
      throw;
    }
    release_all(z, state->units);
    // Every rank reaches these collectives for every layer, in the same
    // order, even when the recompute produced no gradient (zeros are reduced
    // then).
    size_t next = 0;
    for (const size_t u : state->units) {
      const auto [first, last] = flat.unit_entries(u);
      std::vector<torch::Tensor> unit_grads(weight_grads.begin() + static_cast<std::ptrdiff_t>(next),
                                            weight_grads.begin() + static_cast<std::ptrdiff_t>(next + (last - first)));
      next += last - first;
      z.reduce_grads(u, unit_grads);
    }
    return result;
  }
};

}  // namespace

Zero3Params::Zero3Params(optim::FlatParameters& params, parallel::Communicator& dp, parallel::Communicator* expert_dp)
    : params_(params), dp_(dp), expert_dp_(expert_dp ? *expert_dp : dp) {
  if (!params_.sharding().shard_params) {
    throw std::invalid_argument("Zero3Params: the flat parameters are not sharded for ZeRO 3");
  }
  const auto& units = params_.units();
  for (size_t u = 0; u < units.size(); ++u) {
    if (units[u].shards != group_of(u).size()) {
      throw std::invalid_argument("Zero3Params: unit '" + units[u].name + "' is sharded over " +
                                  std::to_string(units[u].shards) + " ranks, its group has " +
                                  std::to_string(group_of(u).size()));
    }
    // unit_of names a layer's unit "<stack>.layers.N" and its expert unit
    // "<stack>.layers.N.moe.experts"; the model's runner calls use the first.
    const std::string& name = units[u].name;
    if (name.find(".layers.") != std::string::npos) {
      const auto experts = name.find(".moe.experts");
      layer_units_[experts == std::string::npos ? name : name.substr(0, experts)].push_back(u);
    } else {
      non_layer_units_.push_back(u);
    }
  }
  anchor_ = torch::zeros({0}, params_.master().options()).requires_grad_();
}

const std::vector<size_t>* Zero3Params::layer_units(const std::string& name) const {
  const auto it = layer_units_.find(name);
  return it == layer_units_.end() ? nullptr : &it->second;
}

parallel::Communicator& Zero3Params::group_of(size_t u) { return params_.units().at(u).expert ? expert_dp_ : dp_; }

void Zero3Params::gather(size_t u) {
  torch::NoGradGuard no_grad;
  const auto& unit = params_.units().at(u);
  const auto piece = params_.master().narrow(0, unit.local_offset, unit.shard);
  auto full = torch::empty({unit.padded}, piece.options().dtype(params_.compute_dtype()));
  auto& group = group_of(u);
  if (group.size() == 1) {
    full.copy_(piece);  // a copy even in fp32: the model must never alias the master
  } else {
    group.all_gather(piece.to(params_.compute_dtype()).contiguous(), full);
  }
  params_.bind_unit(u, full);
}

void Zero3Params::reduce_grads(size_t u, const std::vector<torch::Tensor>& grads) {
  torch::NoGradGuard no_grad;
  const auto& unit = params_.units().at(u);
  auto flat = torch::empty({unit.padded}, params_.grads().options());
  params_.flatten_unit_grads(u, grads, flat);
  auto piece = params_.grads().narrow(0, unit.local_offset, unit.shard);
  auto& group = group_of(u);
  if (group.size() == 1) {
    piece.add_(flat);
    return;
  }
  auto reduced = torch::empty_like(piece);
  group.reduce_scatter(flat, reduced);
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
    const std::vector<size_t>* units = layer_units(name);
    if (!units) return fn(inputs);  // a wholly frozen layer: its weights are not sharded
    if (!torch::GradMode::is_enabled()) return with_units(*this, *units, fn, inputs);
    auto state = c10::make_intrusive<LayerState>();
    state->owner = this;
    state->units = *units;
    state->fn = fn;
    return Zero3LayerFunction::apply(state, at::TensorList(inputs), anchor_);
  };
}

}  // namespace moetrain::optim
