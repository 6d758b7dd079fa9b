#include "eval/generate.h"

#include <algorithm>
#include <cmath>
#include <stdexcept>

namespace moetrain::eval {

namespace {

void check_options(const GenerateOptions& o) {
  if (o.max_length < 1) throw std::invalid_argument("generate: max_length must be at least 1");
  if (o.beam_size < 1) throw std::invalid_argument("generate: beam_size must be at least 1");
  if (!(o.temperature > 0)) throw std::invalid_argument("generate: temperature must be positive");
  if (!(o.top_p > 0 && o.top_p <= 1)) throw std::invalid_argument("generate: top_p must be in (0, 1]");
}

// Log-probabilities of the next token after each row's prefix, whose last
// token is `tokens` [N] (the rest is in `state`, which this extends): fp32 [N, V].
torch::Tensor next_log_probs(models::Seq2SeqTransformerImpl& model, models::DecoderState& state,
                             const std::vector<int64_t>& tokens) {
  const auto last = torch::tensor(tokens, torch::kInt64).to(state.cross_mask.device());
  return torch::log_softmax(model.decode_step(state, last).to(torch::kFloat32), -1).cpu();
}

// Greedy and sampling: every row advances one token per step.
std::vector<Generated> generate_stepwise(models::Seq2SeqTransformerImpl& model, const torch::Tensor& encoded,
                                         const torch::Tensor& src_mask, const GenerateOptions& o) {
  const int64_t batch = encoded.size(0);
  std::vector<Generated> out(static_cast<size_t>(batch));
  std::vector<int64_t> last(static_cast<size_t>(batch), o.bos);
  std::vector<bool> done(static_cast<size_t>(batch), false);
  auto state = model.start_decoding(encoded, src_mask);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  for (int64_t step = 0; step < o.max_length; ++step) {
    const auto log_probs = next_log_probs(model, state, last);
    torch::Tensor chosen;
    if (o.method == DecodeMethod::Greedy) {
      chosen = log_probs.argmax(-1);
    } else {
      auto probs = torch::softmax(log_probs / o.temperature, -1);
      if (o.top_p < 1) {
        // Nucleus: the most probable tokens until their mass reaches top_p
        // (the token that crosses it included).
        const auto [sorted, order] = probs.sort(-1, /*descending=*/true);
        const auto before = sorted.cumsum(-1) - sorted;
        const auto kept = sorted.masked_fill(before >= o.top_p, 0.0);
        probs = torch::zeros_like(probs).scatter(-1, order, kept);
      }
      chosen = torch::multinomial(probs, 1, /*replacement=*/false, generator).squeeze(-1);
    }
    auto ids = chosen.accessor<int64_t, 1>();
    auto lp = log_probs.accessor<float, 2>();
    bool all_done = true;
    for (int64_t b = 0; b < batch; ++b) {
      const auto i = static_cast<size_t>(b);
      // A finished row keeps decoding padding, which no other row sees.
      const int64_t token = done[i] ? o.pad : ids[b];
      last[i] = token;
      if (done[i]) continue;
      out[i].log_prob += lp[b][token];
      if (token == o.eos) {
        done[i] = true;
      } else {
        out[i].tokens.push_back(token);
      }
      all_done = all_done && done[i];
    }
    if (all_done) break;
  }
  return out;
}

struct Hypothesis {
  std::vector<int64_t> tokens;  // generated, EOS excluded
  double log_prob = 0;
  bool finished = false;
};

double normalized(const Hypothesis& h, double penalty) {
  const double length = static_cast<double>(h.tokens.size() + (h.finished ? 1 : 0));
  return penalty == 0 ? h.log_prob : h.log_prob / std::pow(std::max(length, 1.0), penalty);
}

// Beam search for one source row (encoded [1, S, D]).
Generated beam_search(models::Seq2SeqTransformerImpl& model, const torch::Tensor& encoded,
                      const torch::Tensor& src_mask, const GenerateOptions& o) {
  const int64_t k = o.beam_size;
  std::vector<Hypothesis> beams(1), finished;
  // Row r of the decoder state holds beams[r]'s prefix but its last token.
  auto state = model.start_decoding(encoded, src_mask);
  std::vector<int64_t> last{o.bos};
  for (int64_t step = 0; step < o.max_length && !beams.empty(); ++step) {
    const auto log_probs = next_log_probs(model, state, last);
    const int64_t vocab = log_probs.size(1);
    std::vector<double> base;
    for (const auto& h : beams) base.push_back(h.log_prob);
    const auto scores = (log_probs.to(torch::kFloat64) + torch::tensor(base, torch::kFloat64).unsqueeze(1)).reshape(-1);
    const int64_t candidates = std::min<int64_t>(2 * k, scores.numel());
    const auto [top, index] = scores.topk(candidates);
    std::vector<Hypothesis> next;
    std::vector<int64_t> parents;
    last.clear();
    for (int64_t c = 0; c < candidates && static_cast<int64_t>(next.size()) < k; ++c) {
      const int64_t i = index[c].item<int64_t>();
      const auto& parent = beams[static_cast<size_t>(i / vocab)];
      Hypothesis h{parent.tokens, top[c].item<double>(), false};
      if (i % vocab == o.eos) {
        // An ending among the k best candidates is a finished hypothesis.
        if (c < k) {
          h.finished = true;
          finished.push_back(std::move(h));
        }
        continue;
      }
      h.tokens.push_back(i % vocab);
      next.push_back(std::move(h));
      parents.push_back(i / vocab);
      last.push_back(i % vocab);
    }
    beams = std::move(next);
    if (!beams.empty()) state.select_rows(torch::tensor(parents, torch::kInt64));
    // Done when k hypotheses have finished and no open beam can still beat
    // the k-th best of them (exact for penalty 0: scores only fall).
    if (static_cast<int64_t>(finished.size()) >= k && !beams.empty()) {
      std::vector<double> done;
      for (const auto& h : finished) done.push_back(normalized(h, o.length_penalty));
      std::nth_element(done.begin(), done.begin() + (k - 1), done.end(), std::greater<double>());
      double best_open = -INFINITY;
      for (const auto& h : beams) best_open = std::max(best_open, normalized(h, o.length_penalty));
      if (best_open <= done[static_cast<size_t>(k - 1)]) break;
    }
  }
  // Beams still open at max_length compete as they are.
  for (auto& h : beams) finished.push_back(std::move(h));
  const auto best = std::max_element(finished.begin(), finished.end(), [&](const Hypothesis& a, const Hypothesis& b) {
    return normalized(a, o.length_penalty) < normalized(b, o.length_penalty);
  });
  return {best->tokens, best->log_prob};
}

}  // namespace

DecodeMethod parse_decode_method(const std::string& name) {
  if (name == "greedy") return DecodeMethod::Greedy;
  if (name == "beam") return DecodeMethod::Beam;
  if (name == "sample") return DecodeMethod::Sample;
  throw std::invalid_argument("unknown decoding method '" + name + "' (expected greedy, beam or sample)");
}

std::vector<Generated> generate(models::Seq2SeqTransformerImpl& model, const torch::Tensor& src_tokens,
                                const torch::Tensor& src_mask, const GenerateOptions& options) {
  check_options(options);
  torch::NoGradGuard no_grad;
  model.eval();
  const auto encoded = model.encode(src_tokens, src_mask).hidden;
  if (options.method != DecodeMethod::Beam) return generate_stepwise(model, encoded, src_mask, options);
  std::vector<Generated> out;
  for (int64_t b = 0; b < src_tokens.size(0); ++b) {
    out.push_back(beam_search(model, encoded.narrow(0, b, 1), src_mask.narrow(0, b, 1), options));
  }
  return out;
}

double sequence_log_prob(models::Seq2SeqTransformerImpl& model, const torch::Tensor& src_tokens,
                         const torch::Tensor& src_mask, const std::vector<int64_t>& tokens, bool with_eos,
                         const GenerateOptions& options) {
  torch::NoGradGuard no_grad;
  model.eval();
  const auto encoded = model.encode(src_tokens, src_mask).hidden;
  auto targets = tokens;
  if (with_eos) targets.push_back(options.eos);
  std::vector<int64_t> inputs{options.bos};
  inputs.insert(inputs.end(), tokens.begin(), tokens.end());
  inputs.resize(targets.size());
  const auto tgt = torch::tensor(inputs, torch::kInt64).unsqueeze(0).to(encoded.device());
  const auto out = model.decode(tgt, torch::ones_like(tgt, torch::kBool), encoded, src_mask);
  const auto log_probs = torch::log_softmax(out.logits[0].to(torch::kFloat32), -1).cpu();
  double sum = 0;
  for (size_t t = 0; t < targets.size(); ++t) sum += log_probs[static_cast<int64_t>(t)][targets[t]].item<double>();
  return sum;
}

}  // namespace moetrain::eval
