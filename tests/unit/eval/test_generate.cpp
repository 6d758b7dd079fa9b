// Generation on small random models (weights large enough that the next-token
// distributions are far from uniform): greedy picks each step's argmax and
// reports the sequence's log-probability; batched rows do not affect each
// other; beam search with a beam wide enough to hold every prefix finds the
// most probable output of an exhaustive search, and with one beam is greedy;
// sampling follows softmax(logits / temperature), keeps to the nucleus under
// top-p, and with a vanishing top-p is greedy; with a length penalty, beam
// search stopped only when no open beam can win finds the best output of an
// exhaustive search; greedy and beam search over a
// batch whose rows end at different steps give each source what it gets alone.
#include <gtest/gtest.h>

#include <cmath>
#include <iostream>
#include <map>
#include <set>

#include "eval/generate.h"

using namespace moetrain;
using namespace moetrain::eval;

namespace {

models::Seq2SeqTransformer small_model(int64_t vocab, bool moe) {
  models::ModelConfig c;
  c.vocab_size = vocab;
  c.d_model = 16;
  c.n_heads = 2;
  c.d_ff = 32;
  c.encoder_layers = 1;
  c.decoder_layers = 2;
  c.max_positions = 64;
  c.dropout = 0;
  c.init_std = 0.5;
  c.moe.every = moe ? 2 : 0;
  c.moe.num_experts = 4;
  c.moe.capacity_factor = 0;  // dropless: rows never compete for capacity
  torch::manual_seed(5);
  return models::Seq2SeqTransformer(c);
}

struct Source {
  torch::Tensor tokens, mask;
};

Source sources(int64_t rows, int64_t length, int64_t vocab) {
  torch::manual_seed(9);
  Source s{torch::randint(4, vocab, {rows, length}, torch::kInt64), torch::ones({rows, length}, torch::kBool)};
  if (rows > 1) {  // the second row padded
    s.mask[1].narrow(0, length / 2, length - length / 2).fill_(false);
    s.tokens[1].narrow(0, length / 2, length - length / 2).fill_(0);
  }
  return s;
}

// Decodes the 5 rows of `src` (row 1 padded) as one batch and each alone, with
// EOS set to the token row 0 emits at `eos_at` when decoded without one, so
// rows end at different steps and leave the batch while others go on.
// Expects the same output either way, and at least two output lengths.
void expect_batch_equals_each_alone(models::Seq2SeqTransformerImpl& model, const Source& src, GenerateOptions o,
                                    size_t eos_at) {
  o.eos = -1;
  o.eos = generate(model, src.tokens.narrow(0, 0, 1), src.mask.narrow(0, 0, 1), o)[0].tokens.at(eos_at);
  const auto batched = generate(model, src.tokens, src.mask, o);
  ASSERT_EQ(batched.size(), 5u);
  std::set<size_t> lengths;
  for (int64_t row = 0; row < 5; ++row) {
    const auto alone = generate(model, src.tokens.narrow(0, row, 1), src.mask.narrow(0, row, 1), o)[0];
    EXPECT_EQ(batched[static_cast<size_t>(row)].tokens, alone.tokens) << "row " << row;
    EXPECT_NEAR(batched[static_cast<size_t>(row)].log_prob, alone.log_prob, 1e-4) << "row " << row;
    lengths.insert(alone.tokens.size());
  }
  EXPECT_GE(lengths.size(), 2u);
}

TEST(Generate, GreedyTakesEachStepsArgmaxAndRowsAreIndependent) {
  for (bool moe : {false, true}) {
    auto model = small_model(12, moe);
    const auto src = sources(3, 7, 12);
    GenerateOptions o;
    o.max_length = 6;
    const auto batch = generate(*model, src.tokens, src.mask, o);
    ASSERT_EQ(batch.size(), 3u);
    for (int64_t b = 0; b < 3; ++b) {
      const auto row_tokens = src.tokens.narrow(0, b, 1), row_mask = src.mask.narrow(0, b, 1);
      const auto alone = generate(*model, row_tokens, row_mask, o)[0];
      EXPECT_EQ(alone.tokens, batch[static_cast<size_t>(b)].tokens) << "row " << b << " moe " << moe;
      // Step by step: the argmax of the full decode over the prefix.
      std::vector<int64_t> prefix{o.decoder_start};
      std::vector<int64_t> expected;
      for (int64_t t = 0; t < o.max_length; ++t) {
        const auto enc = model->encode(row_tokens, row_mask).hidden;
        const auto tgt = torch::tensor(prefix, torch::kInt64).unsqueeze(0);
        const auto logits = model->decode(tgt, torch::ones_like(tgt, torch::kBool), enc, row_mask).logits;
        const int64_t next = logits[0][-1].argmax().item<int64_t>();
        if (next == o.eos) break;
        expected.push_back(next);
        prefix.push_back(next);
      }
      EXPECT_EQ(alone.tokens, expected);
      const bool ended = static_cast<int64_t>(expected.size()) < o.max_length;
      EXPECT_NEAR(alone.log_prob, sequence_log_prob(*model, row_tokens, row_mask, expected, ended, o), 1e-4);
    }
  }
}

TEST(Generate, GreedyRowsThatEndEarlyLeaveTheBatchUnchanged) {
  auto model = small_model(8, true);
  GenerateOptions o;
  o.max_length = 12;
  expect_batch_equals_each_alone(*model, sources(5, 6, 8), o, /*eos_at=*/3);
}

// The best output of an exhaustive search by log-probability /
// length^penalty (EOS counts in the length): every output is non-EOS tokens
// then EOS (lengths 0..max_length - 1), or max_length tokens cut there.
std::pair<double, std::vector<int64_t>> exhaustive_best(models::Seq2SeqTransformerImpl& model,
                                                        const torch::Tensor& tokens, const torch::Tensor& mask,
                                                        int64_t vocab, const GenerateOptions& o) {
  double best = -INFINITY;
  std::vector<int64_t> best_tokens;
  std::vector<std::vector<int64_t>> frontier{{}};
  for (int64_t len = 0; len <= o.max_length; ++len) {
    std::vector<std::vector<int64_t>> longer;
    for (const auto& seq : frontier) {
      const bool cut = len == o.max_length;
      const double lp = sequence_log_prob(model, tokens, mask, seq, !cut, o);
      const double length = static_cast<double>(seq.size() + (cut ? 0 : 1));
      const double score = o.length_penalty == 0 ? lp : lp / std::pow(length, o.length_penalty);
      if (score > best) {
        best = score;
        best_tokens = seq;
      }
      if (cut) continue;
      for (int64_t t = 0; t < vocab; ++t) {
        if (t == o.eos) continue;
        auto next = seq;
        next.push_back(t);
        longer.push_back(next);
      }
    }
    frontier = std::move(longer);
  }
  return {best, best_tokens};
}

TEST(Generate, WideBeamFindsTheExhaustiveBestAndOneBeamIsGreedy) {
  const int64_t vocab = 6, max_length = 3;
  auto model = small_model(vocab, false);
  const auto src = sources(2, 5, vocab);
  for (int64_t row = 0; row < 2; ++row) {
    const auto tokens = src.tokens.narrow(0, row, 1), mask = src.mask.narrow(0, row, 1);
    GenerateOptions o;
    o.max_length = max_length;
    o.eos = 1;
    o.length_penalty = 0;
    const auto [best, best_tokens] = exhaustive_best(*model, tokens, mask, vocab, o);
    o.method = DecodeMethod::Beam;
    o.beam_size = 125;  // every 3-token prefix of the 5 non-EOS tokens
    const auto beam = generate(*model, tokens, mask, o)[0];
    EXPECT_NEAR(beam.log_prob, best, 1e-4) << "row " << row;
    EXPECT_EQ(beam.tokens, best_tokens) << "row " << row;
    o.beam_size = 1;
    GenerateOptions greedy = o;
    greedy.method = DecodeMethod::Greedy;
    EXPECT_EQ(generate(*model, tokens, mask, o)[0].tokens, generate(*model, tokens, mask, greedy)[0].tokens);
  }
}

// With a length penalty an open beam's score can still rise: --beam-stop
// never keeps searching until none can win, so a wide beam finds the
// exhaustive best by log-probability / length, and a narrow one never ends
// below where the heuristic stop ends (it extends the same search).
TEST(Generate, BeamStopNeverFindsTheBestUnderALengthPenalty) {
  const int64_t vocab = 6;
  auto model = small_model(vocab, false);
  const auto src = sources(6, 5, vocab);
  int64_t better = 0;
  for (int64_t row = 0; row < 6; ++row) {
    const auto tokens = src.tokens.narrow(0, row, 1), mask = src.mask.narrow(0, row, 1);
    GenerateOptions o;
    o.method = DecodeMethod::Beam;
    o.max_length = 3;
    o.eos = 1;
    o.length_penalty = 1;
    o.beam_stop = BeamStop::Never;
    const auto [best, best_tokens] = exhaustive_best(*model, tokens, mask, vocab, o);
    o.beam_size = 125;
    EXPECT_EQ(generate(*model, tokens, mask, o)[0].tokens, best_tokens) << "row " << row;
    // A narrow beam, longer outputs: the two stops against each other.
    o.beam_size = 2;
    o.max_length = 12;
    const auto score = [&](const Generated& g) {
      const bool ended = static_cast<int64_t>(g.tokens.size()) < o.max_length;
      return g.log_prob / static_cast<double>(g.tokens.size() + (ended ? 1 : 0));
    };
    const double never = score(generate(*model, tokens, mask, o)[0]);
    o.beam_stop = BeamStop::Heuristic;
    const double heuristic = score(generate(*model, tokens, mask, o)[0]);
    EXPECT_GE(never, heuristic - 1e-9) << "row " << row;
    if (never > heuristic + 1e-9) ++better;
  }
  std::cout << "beam stop never beat the heuristic on " << better << " of 6 sources" << std::endl;
  EXPECT_THROW(parse_beam_stop("sometimes"), std::invalid_argument);
}

TEST(Generate, ForcedPrefixComesFirstAndAddsNoLogProbability) {
  const int64_t vocab = 8;
  auto model = small_model(vocab, true);
  const auto src = sources(1, 5, vocab);
  GenerateOptions o;
  o.max_length = 6;
  o.eos = 1;
  const auto free = generate(*model, src.tokens, src.mask, o)[0];
  ASSERT_FALSE(free.tokens.empty());
  // A first token greedy decoding would not choose (nor EOS).
  int64_t forced = (free.tokens[0] + 1) % vocab;
  if (forced == o.eos) forced = (forced + 1) % vocab;
  o.forced_prefix = {forced};
  for (DecodeMethod method : {DecodeMethod::Greedy, DecodeMethod::Beam}) {
    o.method = method;
    o.beam_size = 3;
    const auto out = generate(*model, src.tokens, src.mask, o)[0];
    ASSERT_FALSE(out.tokens.empty());
    EXPECT_EQ(out.tokens[0], forced);
    EXPECT_LE(static_cast<int64_t>(out.tokens.size()), o.max_length);
    const bool ended = static_cast<int64_t>(out.tokens.size()) < o.max_length;
    const double forced_lp = sequence_log_prob(*model, src.tokens, src.mask, {forced}, false, o);
    EXPECT_NEAR(out.log_prob, sequence_log_prob(*model, src.tokens, src.mask, out.tokens, ended, o) - forced_lp, 1e-4);
  }
  // One beam is greedy, forced prefix and all.
  GenerateOptions greedy = o, one_beam = o;
  greedy.method = DecodeMethod::Greedy;
  one_beam.method = DecodeMethod::Beam;
  one_beam.beam_size = 1;
  EXPECT_EQ(generate(*model, src.tokens, src.mask, greedy)[0].tokens,
            generate(*model, src.tokens, src.mask, one_beam)[0].tokens);
}

TEST(Generate, BeamSearchOverABatchEqualsEachSourceAlone) {
  auto model = small_model(8, true);
  GenerateOptions o;
  o.method = DecodeMethod::Beam;
  o.beam_size = 3;
  o.max_length = 12;
  expect_batch_equals_each_alone(*model, sources(5, 6, 8), o, /*eos_at=*/5);
}

TEST(Generate, OnTheGpuMatchesTheCpu) {
  if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device";
  const int64_t vocab = 16;
  auto model = small_model(vocab, true);
  const auto src = sources(3, 6, vocab);  // stays on the CPU: generate moves it
  GenerateOptions o;
  o.max_length = 10;
  o.eos = 1;
  for (const auto method : {DecodeMethod::Greedy, DecodeMethod::Beam}) {
    o.method = method;
    model->to(torch::kCPU);
    const auto cpu = generate(*model, src.tokens, src.mask, o);
    model->to(torch::Device(torch::kCUDA, 0));
    const auto gpu = generate(*model, src.tokens, src.mask, o);
    for (size_t r = 0; r < cpu.size(); ++r) {
      EXPECT_EQ(gpu[r].tokens, cpu[r].tokens) << "row " << r;
      EXPECT_NEAR(gpu[r].log_prob, cpu[r].log_prob, 1e-3) << "row " << r;
    }
  }
}

TEST(Generate, SamplingFollowsTemperatureAndNucleus) {
  const int64_t vocab = 12, rows = 4000;
  auto model = small_model(vocab, false);
  const auto one = sources(1, 6, vocab);
  const auto tokens = one.tokens.expand({rows, -1}).contiguous(), mask = one.mask.expand({rows, -1}).contiguous();
  // The model's first-step distribution.
  const auto enc = model->encode(one.tokens, one.mask).hidden;
  const auto bos = torch::full({1, 1}, 3, torch::kInt64);
  const auto logits = model->decode(bos, torch::ones_like(bos, torch::kBool), enc, one.mask).logits[0][0].detach();
  GenerateOptions o;
  o.method = DecodeMethod::Sample;
  o.max_length = 1;
  o.seed = 11;
  for (double temperature : {1.0, 2.0}) {
    o.temperature = temperature;
    o.top_p = 1.0;
    const auto out = generate(*model, tokens, mask, o);
    std::vector<double> freq(static_cast<size_t>(vocab), 0.0);
    for (const auto& g : out) freq[static_cast<size_t>(g.tokens.empty() ? o.eos : g.tokens[0])] += 1.0 / rows;
    const auto p = torch::softmax(logits / temperature, -1);
    for (int64_t v = 0; v < vocab; ++v) {
      // Binomial standard error at 4000 draws is below 0.008.
      EXPECT_NEAR(freq[static_cast<size_t>(v)], p[v].item<double>(), 0.03) << "token " << v << " T " << temperature;
    }
  }
  // top_p 0.5: only the smallest set of most probable tokens reaching 0.5.
  o.temperature = 1.0;
  o.top_p = 0.5;
  const auto p = torch::softmax(logits, -1);
  const auto [sorted, order] = p.sort(-1, true);
  std::map<int64_t, bool> nucleus;
  double mass = 0;
  for (int64_t i = 0; i < vocab && mass < 0.5; ++i) {
    nucleus[order[i].item<int64_t>()] = true;
    mass += sorted[i].item<double>();
  }
  ASSERT_LT(static_cast<int64_t>(nucleus.size()), vocab);
  for (const auto& g : generate(*model, tokens, mask, o)) {
    EXPECT_TRUE(nucleus.count(g.tokens.empty() ? o.eos : g.tokens[0]));
  }
  // A vanishing nucleus is the argmax.
  o.top_p = 1e-9;
  o.max_length = 5;
  GenerateOptions greedy;
  greedy.max_length = 5;
  EXPECT_EQ(generate(*model, one.tokens, one.mask, o)[0].tokens,
            generate(*model, one.tokens, one.mask, greedy)[0].tokens);
  o.temperature = 0;
  EXPECT_THROW(generate(*model, one.tokens, one.mask, o), std::invalid_argument);
}

}  // namespace
