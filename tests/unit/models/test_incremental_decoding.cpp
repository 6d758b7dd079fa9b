// Incremental decoding (start_decoding / decode_step, the key/value cache that
// generation uses) against the whole-prefix decoder: for every attention kind
// and position kind, with MoE layers, each step's logits equal decode()'s at
// that position; reordering the cache's rows (beam search) equals decoding
// the reordered batch; bad input is refused.
#include <gtest/gtest.h>

#include <string>
#include <tuple>
#include <vector>

#include "model_test_util.h"
#include "models/seq2seq_transformer.h"

namespace moetrain::models {
namespace {

using testing::tiny_config;

// Longer than local_window (3), so the window cuts in during the steps.
constexpr int64_t kSteps = 9;

class IncrementalDecoding : public ::testing::TestWithParam<std::tuple<AttentionType, PositionType>> {
 protected:
  Seq2SeqTransformer model() const {
    ModelConfig c = tiny_config();
    c.attention = std::get<0>(GetParam());
    c.position = std::get<1>(GetParam());
    c.tie_embeddings = c.position != PositionType::Learned;  // both head kinds
    torch::manual_seed(11);
    Seq2SeqTransformer m(c);
    m->eval();
    return m;
  }
};

TEST_P(IncrementalDecoding, EachStepEqualsTheWholePrefixDecoder) {
  torch::NoGradGuard no_grad;
  auto m = model();
  const auto b = testing::make_batch(m->config(), /*src_len=*/7, kSteps, /*src_pad=*/3, /*tgt_pad=*/0);
  const auto encoded = m->encode(b.src, b.src_mask).hidden;
  const auto whole = m->decode(b.tgt, b.tgt_mask, encoded, b.src_mask).logits;  // [2, T, V]

  auto state = m->start_decoding(encoded, b.src_mask);
  for (int64_t t = 0; t < kSteps; ++t) {
    const auto step = m->decode_step(state, b.tgt.select(1, t));
    ASSERT_EQ(step.sizes(), (std::vector<int64_t>{2, m->config().vocab_size}));
    EXPECT_TRUE(torch::allclose(step, whole.select(1, t), /*rtol=*/1e-5, /*atol=*/1e-5))
        << "step " << t << ": max difference " << (step - whole.select(1, t)).abs().max().item<double>();
  }
  EXPECT_EQ(state.length, kSteps);
  EXPECT_EQ(state.layers.at(0).self.length(), kSteps);
}

TEST_P(IncrementalDecoding, ReorderedRowsContinueAsTheReorderedBatch) {
  torch::NoGradGuard no_grad;
  auto m = model();
  const auto b = testing::make_batch(m->config(), /*src_len=*/6, kSteps, /*src_pad=*/2, /*tgt_pad=*/0);
  const auto encoded = m->encode(b.src, b.src_mask).hidden;
  // Beam search keeps some rows twice and drops others: rows 1, 0, 1.
  const auto order = torch::tensor({1, 0, 1}, torch::kLong);
  const auto tgt = b.tgt.index_select(0, order);
  const auto whole = m->decode(tgt, torch::ones_like(tgt, torch::kBool), encoded.index_select(0, order),
                               b.src_mask.index_select(0, order))
                         .logits;

  auto state = m->start_decoding(encoded, b.src_mask);
  const int64_t cut = 4;
  for (int64_t t = 0; t < cut; ++t) m->decode_step(state, b.tgt.select(1, t));
  state.select_rows(order);
  ASSERT_EQ(state.batch(), 3);
  for (int64_t t = cut; t < kSteps; ++t) {
    const auto step = m->decode_step(state, tgt.select(1, t));
    EXPECT_TRUE(torch::allclose(step, whole.select(1, t), 1e-5, 1e-5))
        << "step " << t << ": max difference " << (step - whole.select(1, t)).abs().max().item<double>();
  }
}

std::string case_name(const ::testing::TestParamInfo<std::tuple<AttentionType, PositionType>>& info) {
  static const char* const attention[] = {"Global", "Local", "Dynamic"};
  static const char* const position[] = {"Sinusoidal", "Learned", "Rotary", "SinusoidalFairseq"};
  return std::string(attention[static_cast<int>(std::get<0>(info.param))]) +
         position[static_cast<int>(std::get<1>(info.param))];
}

INSTANTIATE_TEST_SUITE_P(AttentionAndPositions, IncrementalDecoding,
                         ::testing::Combine(::testing::Values(AttentionType::Global, AttentionType::Local,
                                                              AttentionType::Dynamic),
                                            ::testing::Values(PositionType::Sinusoidal, PositionType::Learned,
                                                              PositionType::Rotary, PositionType::SinusoidalFairseq)),
                         case_name);

// In bf16 (the dtype generation usually runs in on a GPU) the cached steps
// agree with the whole-prefix decoder to bf16's precision.
TEST(IncrementalDecodingBf16, StepsMatchTheWholePrefixDecoder) {
  torch::NoGradGuard no_grad;
  ModelConfig c = tiny_config();
  c.attention = AttentionType::Dynamic;
  c.position = PositionType::Rotary;
  torch::manual_seed(11);
  Seq2SeqTransformer m(c);
  m->eval();
  m->place(torch::kCPU, torch::kBFloat16);
  const auto b = testing::make_batch(c, /*src_len=*/7, kSteps, /*src_pad=*/3, /*tgt_pad=*/0);
  const auto encoded = m->encode(b.src, b.src_mask).hidden;
  const auto whole = m->decode(b.tgt, b.tgt_mask, encoded, b.src_mask).logits.to(torch::kFloat32);
  auto state = m->start_decoding(encoded, b.src_mask);
  for (int64_t t = 0; t < kSteps; ++t) {
    const auto step = m->decode_step(state, b.tgt.select(1, t));
    ASSERT_EQ(step.scalar_type(), torch::kBFloat16);
    const auto expected = whole.select(1, t);
    const double scale = expected.abs().max().item<double>();
    EXPECT_LE((step.to(torch::kFloat32) - expected).abs().max().item<double>(), 0.02 * scale) << "step " << t;
  }
}

TEST(IncrementalDecodingErrors, RefusesBadTokensAndPositionsPastTheTable) {
  torch::NoGradGuard no_grad;
  ModelConfig c = tiny_config();
  c.max_positions = 4;
  Seq2SeqTransformer m(c);
  m->eval();
  const auto b = testing::make_batch(c, /*src_len=*/3, /*tgt_len=*/2, /*src_pad=*/1);
  const auto encoded = m->encode(b.src, b.src_mask).hidden;
  EXPECT_THROW(m->start_decoding(encoded, b.src_mask.narrow(1, 0, 2)), std::invalid_argument);
  EXPECT_THROW(m->start_decoding(torch::Tensor(), b.src_mask), std::invalid_argument);
  auto state = m->start_decoding(encoded, b.src_mask);
  EXPECT_THROW(m->decode_step(state, torch::ones({3}, torch::kLong)), std::invalid_argument);     // 3 rows, not 2
  EXPECT_THROW(m->decode_step(state, torch::ones({2, 1}, torch::kLong)), std::invalid_argument);  // not [B]
  EXPECT_EQ(state.length, 0);
  for (int64_t t = 0; t < c.max_positions; ++t) m->decode_step(state, torch::ones({2}, torch::kLong));
  EXPECT_THROW(m->decode_step(state, torch::ones({2}, torch::kLong)), std::invalid_argument);  // position 4 of 4
  // A layer runner (ZeRO 3) wraps whole-layer calls, which decode_step does not make.
  m->set_layer_runner(
      [](const std::string&, const LayerFunction& fn, const std::vector<torch::Tensor>& in) { return fn(in); });
  EXPECT_THROW(m->start_decoding(encoded, b.src_mask), std::logic_error);
  EXPECT_THROW(m->decode_step(state, torch::ones({2}, torch::kLong)), std::logic_error);
}

}  // namespace
}  // namespace moetrain::models
