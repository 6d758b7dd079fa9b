// A toy model for the pipeline tests: a deep MLP cut into stages, whose
// stages pass TWO tensors, a hidden state and a second tensor that every
// later layer also reads (like the encoder output every decoder layer
// attends to), so its gradient must sum over every stage that uses it.
//
// Units, as the stage partitioner sees them:
//   0       input:  h = tanh(x Wh^T), e = tanh(x We^T)
//   1..L    layer:  h = tanh(h A^T + e B^T)
//   L+1     head:   loss = mean((h w - y)^2) / m   (m: micro-batches)
// Dense weights are [W, W] matrices; the "diagonal" variant uses [W] vectors
// multiplied elementwise (cheap compute, for large messages). Every rank builds
// the whole model from the same seed and uses only its stage's units; the
// same code run over all units on one process is the reference.
#pragma once

#include <torch/torch.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace moetrain::parallel::pipeline_test {

struct ToyModel {
  int64_t layers = 0;
  int64_t width = 0;
  int64_t rows = 0;  // rows of a micro-batch
  bool dense = true;
  uint64_t seed = 0;
  std::vector<std::vector<torch::Tensor>> units;  // parameters of each unit

  ToyModel(int64_t layers_, int64_t width_, int64_t rows_, bool dense_, uint64_t seed_)
      : layers(layers_), width(width_), rows(rows_), dense(dense_), seed(seed_) {
    torch::manual_seed(seed);
    auto weight = [&] {
      torch::Tensor w = dense ? torch::randn({width, width}) / std::sqrt(static_cast<double>(width))
                              : 1.0 + 0.5 * torch::randn({width});
      return w.requires_grad_(true);
    };
    units.push_back({weight(), weight()});
    for (int64_t l = 0; l < layers; ++l) units.push_back({weight(), weight()});
    units.push_back({(torch::randn({width}) / std::sqrt(static_cast<double>(width))).requires_grad_(true)});
  }

  int64_t unit_count() const { return static_cast<int64_t>(units.size()); }
  int64_t head_unit() const { return layers + 1; }

  std::vector<int64_t> parameter_counts() const {
    std::vector<int64_t> counts;
    for (const auto& params : units) {
      int64_t n = 0;
      for (const auto& p : params) n += p.numel();
      counts.push_back(n);
    }
    return counts;
  }

  torch::Tensor apply(const torch::Tensor& w, const torch::Tensor& t) const { return dense ? t.matmul(w.t()) : t * w; }

  // Micro-batch data, the same on every rank.
  torch::Tensor input(int64_t micro_batch) const {
    auto g = torch::make_generator<at::CPUGeneratorImpl>(seed * 1000 + 2 * micro_batch + 1);
    return torch::randn({rows, width}, g);
  }
  torch::Tensor target(int64_t micro_batch) const {
    auto g = torch::make_generator<at::CPUGeneratorImpl>(seed * 1000 + 2 * micro_batch + 2);
    return torch::randn({rows}, g);
  }

  // Units [begin, end) on (h, e); returns the loss instead of h when the head
  // is among them (h and e are then unused by the caller).
  torch::Tensor run_units(int64_t begin, int64_t end, int64_t micro_batch, int64_t micro_batches, torch::Tensor& h,
                          torch::Tensor& e) const {
    for (int64_t u = begin; u < end; ++u) {
      const auto& p = units[u];
      if (u == 0) {
        const torch::Tensor x = input(micro_batch);
        h = torch::tanh(apply(p[0], x));
        e = torch::tanh(apply(p[1], x));
      } else if (u == head_unit()) {
        return (h.matmul(p[0]) - target(micro_batch)).pow(2).mean() / static_cast<double>(micro_batches);
      } else {
        h = torch::tanh(apply(p[0], h) + apply(p[1], e));
      }
    }
    return {};
  }

  // Every parameter's gradient, flattened in unit order (zeros where undefined
  // or, with `owned`, where the unit is not in [begin, end)).
  torch::Tensor flat_grads(int64_t begin = 0, int64_t end = -1) const {
    if (end < 0) end = unit_count();
    std::vector<torch::Tensor> parts;
    for (int64_t u = 0; u < unit_count(); ++u) {
      for (const auto& p : units[u]) {
        const bool mine = u >= begin && u < end && p.grad().defined();
        parts.push_back(mine ? p.grad().reshape({-1}) : torch::zeros({p.numel()}));
      }
    }
    return torch::cat(parts);
  }
};

// The single-process computation: every micro-batch through every unit,
// backward per micro-batch in order. Returns the summed loss; gradients are
// left in `model`.
inline double reference_step(ToyModel& model, int64_t micro_batches) {
  double loss = 0;
  for (int64_t mb = 0; mb < micro_batches; ++mb) {
    torch::Tensor h, e;
    torch::Tensor l = model.run_units(0, model.unit_count(), mb, micro_batches, h, e);
    l.backward();
    loss += l.item<double>();
  }
  return loss;
}

}  // namespace moetrain::parallel::pipeline_test
