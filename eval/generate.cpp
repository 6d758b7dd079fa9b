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

// The encoder output and the source mask, both on the model's device.
struct Encoded {
  torch::Tensor hidden, mask;
};

Encoded encode_on_model_device(models::Seq2SeqTransformerImpl& model, const torch::Tensor& src_tokens,
                               const torch::Tensor& src_mask) {
  const auto device = model.embed_tokens->weight.device();
  const auto mask = src_mask.to(device);
  return {model.encode(src_tokens.to(device), mask).hidden, mask};
}

// Log-probabilities of the next token after each row's prefix, whose last
// token is `tokens` [N] (the rest is in `state`, which this extends): fp32 [N, V].
torch::Tensor next_log_probs(models::Seq2SeqTransformerImpl& model, models::DecoderState& state,
                             const std::vector<int64_t>& tokens) {
  const auto last = torch::tensor(tokens, torch::kInt64).to(state.cross_mask.device());
  return torch::log_softmax(model.decode_step(state, last).to(torch::kFloat32), -1).cpu();
}

// Greedy and sampling: every unfinished row advances one token per step; a
// row that reaches EOS leaves the decoder's batch.
std::vector<Generated> generate_stepwise(models::Seq2SeqTransformerImpl& model, const torch::Tensor& encoded,
                                         const torch::Tensor& src_mask, const GenerateOptions& o) {
  const int64_t batch = encoded.size(0);
  std::vector<Generated> out(static_cast<size_t>(batch));
  std::vector<int64_t> active(static_cast<size_t>(batch));  // the source of each decoder row
  for (int64_t b = 0; b < batch; ++b) active[static_cast<size_t>(b)] = b;
  std::vector<int64_t> last(active.size(), o.decoder_start);  // each decoder row's newest token
  auto state = model.start_decoding(encoded, src_mask);
  auto generator = at::make_generator<at::CPUGeneratorImpl>(o.seed);
  for (int64_t step = 0; step < o.max_length && !active.empty(); ++step) {
    const auto log_probs = next_log_probs(model, state, last);
    const bool forced = step < static_cast<int64_t>(o.forced_prefix.size());
    torch::Tensor chosen;
    if (forced) {
      chosen =
          torch::full({static_cast<int64_t>(active.size())}, o.forced_prefix[static_cast<size_t>(step)], torch::kInt64);
    } else if (o.method == DecodeMethod::Greedy) {
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
    std::vector<int64_t> keep, still_active;
    last.clear();
    for (int64_t r = 0; r < static_cast<int64_t>(active.size()); ++r) {
      auto& result = out[static_cast<size_t>(active[static_cast<size_t>(r)])];
      const int64_t token = ids[r];
      if (!forced) result.log_prob += lp[r][token];
      if (token == o.eos) continue;
      result.tokens.push_back(token);
      keep.push_back(r);
      still_active.push_back(active[static_cast<size_t>(r)]);
      last.push_back(token);
    }
    if (keep.size() < active.size() && !keep.empty()) state.select_rows(torch::tensor(keep, torch::kInt64));
    active = std::move(still_active);
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

// One source's beam search: its open beams and its finished hypotheses.
struct BeamSearch {
  std::vector<Hypothesis> beams{Hypothesis{}};
  std::vector<Hypothesis> finished;
  bool done = false;  // nothing left that could beat the finished ones

  // Extends the beams with their next-token log-probabilities [n, V] (row r
  // for beams[r]): the k best continuations stay open, an EOS among the k
  // best candidates finishes its hypothesis. Returns each new beam's parent.
  std::vector<int64_t> advance(const torch::Tensor& log_probs, int64_t k, int64_t eos) {
    const int64_t vocab = log_probs.size(1);
    std::vector<double> base;
    for (const auto& h : beams) base.push_back(h.log_prob);
    const auto scores = (log_probs.to(torch::kFloat64) + torch::tensor(base, torch::kFloat64).unsqueeze(1)).reshape(-1);
    const int64_t candidates = std::min<int64_t>(2 * k, scores.numel());
    const auto [top_t, index_t] = scores.topk(candidates);
    const auto top = top_t.accessor<double, 1>();
    const auto index = index_t.accessor<int64_t, 1>();
    std::vector<Hypothesis> next;
    std::vector<int64_t> parents;
    for (int64_t c = 0; c < candidates && static_cast<int64_t>(next.size()) < k; ++c) {
      const int64_t parent = index[c] / vocab, token = index[c] % vocab;
      Hypothesis h{beams[static_cast<size_t>(parent)].tokens, top[c], false};
      if (token == eos) {
        if (c < k) {
          h.finished = true;
          finished.push_back(std::move(h));
        }
        continue;
      }
      h.tokens.push_back(token);
      next.push_back(std::move(h));
      parents.push_back(parent);
    }
    beams = std::move(next);
    return parents;
  }

  // Done when no beam is open, or k hypotheses have finished and no open
  // beam can still beat the k-th best of them: by its score now (Heuristic;
  // exact for penalty 0, where scores only fall), or by the best it could
  // reach, its log-probability over the longest length (Never).
  void check_done(int64_t k, double penalty, BeamStop stop, int64_t max_length) {
    if (beams.empty()) {
      done = true;
      return;
    }
    if (static_cast<int64_t>(finished.size()) < k) return;
    std::vector<double> scores;
    for (const auto& h : finished) scores.push_back(normalized(h, penalty));
    std::nth_element(scores.begin(), scores.begin() + (k - 1), scores.end(), std::greater<double>());
    double best_open = -INFINITY;
    for (const auto& h : beams) {
      const double reachable = stop == BeamStop::Never && penalty > 0
                                   ? h.log_prob / std::pow(static_cast<double>(max_length + 1), penalty)
                                   : normalized(h, penalty);
      best_open = std::max(best_open, reachable);
    }
    done = best_open <= scores[static_cast<size_t>(k - 1)];
  }

  // The best hypothesis; beams still open compete as they are.
  Generated best(double penalty) {
    for (auto& h : beams) finished.push_back(std::move(h));
    beams.clear();
    const auto it = std::max_element(finished.begin(), finished.end(), [&](const Hypothesis& a, const Hypothesis& b) {
      return normalized(a, penalty) < normalized(b, penalty);
    });
    return {it->tokens, it->log_prob};
  }
};

// Beam search for every source row at once: the decoder state holds the
// open beams of every unfinished search, search after search, so each step
// is one decoder call however many sources there are.
std::vector<Generated> beam_search(models::Seq2SeqTransformerImpl& model, const torch::Tensor& encoded,
                                   const torch::Tensor& src_mask, const GenerateOptions& o) {
  const int64_t k = o.beam_size;
  std::vector<BeamSearch> searches(static_cast<size_t>(encoded.size(0)));
  auto state = model.start_decoding(encoded, src_mask);         // row b: source b's first beam
  std::vector<int64_t> last(searches.size(), o.decoder_start);  // each row's newest token
  for (int64_t step = 0; step < o.max_length && !last.empty(); ++step) {
    const auto log_probs = next_log_probs(model, state, last);
    if (step < static_cast<int64_t>(o.forced_prefix.size())) {
      // Every open beam takes the forced token; the rows stay as they are.
      const int64_t token = o.forced_prefix[static_cast<size_t>(step)];
      for (auto& search : searches)
        for (auto& beam : search.beams) beam.tokens.push_back(token);
      std::fill(last.begin(), last.end(), token);
      continue;
    }
    std::vector<int64_t> rows;
    last.clear();
    int64_t first_row = 0;
    for (auto& search : searches) {
      if (search.done) continue;
      const auto n = static_cast<int64_t>(search.beams.size());
      const auto parents = search.advance(log_probs.narrow(0, first_row, n), k, o.eos);
      search.check_done(k, o.length_penalty, o.beam_stop, o.max_length);
      if (!search.done) {
        for (size_t j = 0; j < parents.size(); ++j) {
          rows.push_back(first_row + parents[j]);
          last.push_back(search.beams[j].tokens.back());
        }
      }
      first_row += n;
    }
    if (!rows.empty()) state.select_rows(torch::tensor(rows, torch::kInt64));
  }
  std::vector<Generated> out;
  for (auto& search : searches) out.push_back(search.best(o.length_penalty));
  return out;
}

}  // namespace

BeamStop parse_beam_stop(const std::string& name) {
  if (name == "heuristic") return BeamStop::Heuristic;
  if (name == "never") return BeamStop::Never;
  throw std::invalid_argument("unknown beam stop '" + name + "' (expected heuristic or never)");
}

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
  const auto source = encode_on_model_device(model, src_tokens, src_mask);
  if (options.method == DecodeMethod::Beam) return beam_search(model, source.hidden, source.mask, options);
  return generate_stepwise(model, source.hidden, source.mask, options);
}

double sequence_log_prob(models::Seq2SeqTransformerImpl& model, const torch::Tensor& src_tokens,
                         const torch::Tensor& src_mask, const std::vector<int64_t>& tokens, bool with_eos,
                         const GenerateOptions& options) {
  torch::NoGradGuard no_grad;
  model.eval();
  const auto source = encode_on_model_device(model, src_tokens, src_mask);
  auto targets = tokens;
  if (with_eos) targets.push_back(options.eos);
  std::vector<int64_t> inputs{options.decoder_start};
  inputs.insert(inputs.end(), tokens.begin(), tokens.end());
  inputs.resize(targets.size());
  const auto tgt = torch::tensor(inputs, torch::kInt64).unsqueeze(0).to(source.hidden.device());
  const auto out = model.decode(tgt, torch::ones_like(tgt, torch::kBool), source.hidden, source.mask);
  const auto log_probs = torch::log_softmax(out.logits[0].to(torch::kFloat32), -1).cpu();
  double sum = 0;
  for (size_t t = 0; t < targets.size(); ++t) sum += log_probs[static_cast<int64_t>(t)][targets[t]].item<double>();
  return sum;
}

}  // namespace moetrain::eval
