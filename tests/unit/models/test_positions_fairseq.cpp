// sinusoidal_fairseq positions: the table of fairseq / M2M100 / NLLB (all
// sines, then all cosines, frequencies 10000^(-i/(h-1))), read from row 1 on.
#include <gtest/gtest.h>
#include <torch/torch.h>

#include <cmath>
#include <stdexcept>
#include <string>

#include "model_test_util.h"
#include "models/positions.h"
#include "models/seq2seq_transformer.h"

namespace moetrain::models {
namespace {

TEST(FairseqPositions, TableIsSinesThenCosinesWithFairseqFrequencies) {
  // d = 4: h = 2, frequencies 1 and 10000^-1.
  const torch::Tensor small = fairseq_sinusoidal_table(3, 4);
  ASSERT_EQ(small.sizes(), (std::vector<int64_t>{3, 4}));
  EXPECT_EQ(small.scalar_type(), torch::kFloat);
  for (int64_t c = 0; c < 2; ++c) {
    EXPECT_EQ(small[0][c].item<float>(), 0.0f);
    EXPECT_EQ(small[0][c + 2].item<float>(), 1.0f);
  }
  EXPECT_NEAR(small[1][0].item<double>(), std::sin(1.0), 1e-7);
  EXPECT_NEAR(small[1][1].item<double>(), std::sin(1e-4), 1e-9);
  EXPECT_NEAR(small[1][2].item<double>(), std::cos(1.0), 1e-7);
  EXPECT_NEAR(small[2][3].item<double>(), std::cos(2e-4), 1e-7);

  const int64_t d = 10, h = 5;
  const torch::Tensor table = fairseq_sinusoidal_table(40, d);
  for (int64_t r : {0, 1, 7, 39}) {
    for (int64_t i = 0; i < h; ++i) {
      const double angle = static_cast<double>(r) * std::pow(10000.0, -static_cast<double>(i) / (h - 1));
      EXPECT_NEAR(table[r][i].item<double>(), std::sin(angle), 2e-5) << r << "," << i;
      EXPECT_NEAR(table[r][h + i].item<double>(), std::cos(angle), 2e-5) << r << "," << i;
    }
  }
}

TEST(FairseqPositions, OddDimensionEndsWithAZeroColumnAndTinyDimensionsAreRefused) {
  const torch::Tensor table = fairseq_sinusoidal_table(6, 7);
  ASSERT_EQ(table.size(1), 7);
  EXPECT_TRUE(table.select(1, 6).eq(0).all().item<bool>());
  EXPECT_TRUE(table.narrow(1, 0, 6).equal(fairseq_sinusoidal_table(6, 6)));
  EXPECT_THROW(fairseq_sinusoidal_table(6, 3), std::invalid_argument);
}

TEST(FairseqPositions, PositionPReadsRowPPlusOne) {
  ModelConfig cfg = testing::tiny_config();
  cfg.position = PositionType::SinusoidalFairseq;
  cfg.max_positions = 12;
  AbsolutePositions pos(cfg);
  ASSERT_EQ(pos->table.sizes(), (std::vector<int64_t>{12, cfg.d_model}));
  const torch::Tensor rows = fairseq_sinusoidal_table(13, cfg.d_model);
  const torch::Tensor y = pos(torch::zeros({2, 5, cfg.d_model}), 3);
  EXPECT_TRUE(y[0].equal(rows.narrow(0, 4, 5)));
  EXPECT_TRUE(y[1].equal(rows.narrow(0, 4, 5)));
  EXPECT_NO_THROW(pos(torch::zeros({1, 12, cfg.d_model})));
  EXPECT_THROW(pos(torch::zeros({1, 13, cfg.d_model})), std::invalid_argument);
}

TEST(FairseqPositions, PositionsStartAfterThePadIdAsInFairseq) {
  // NLLB's pad id 1: the first token reads row 2, as transformers'
  // cumsum(mask) + padding_idx numbering gives it.
  ModelConfig cfg = testing::tiny_config();
  cfg.position = PositionType::SinusoidalFairseq;
  cfg.max_positions = 12;
  cfg.pad_id = 1;
  AbsolutePositions pos(cfg);
  const torch::Tensor rows = fairseq_sinusoidal_table(14, cfg.d_model);
  EXPECT_TRUE(pos(torch::zeros({1, 12, cfg.d_model}))[0].equal(rows.narrow(0, 2, 12)));
  EXPECT_TRUE(pos(torch::zeros({1, 2, cfg.d_model}), 5)[0].equal(rows.narrow(0, 7, 2)));
  cfg.pad_id = -1;
  EXPECT_THROW(AbsolutePositions{cfg}, std::invalid_argument);
}

TEST(FairseqPositions, ModelAddsThemAndTrainsNoPositionParameter) {
  ModelConfig cfg = testing::tiny_config();
  cfg.position = PositionType::SinusoidalFairseq;
  cfg.dropout = 0.0;
  torch::manual_seed(3);
  Seq2SeqTransformer model(cfg);
  model->eval();
  for (const auto& p : model->named_parameters()) EXPECT_EQ(p.key().rfind("embed_positions", 0), std::string::npos);
  const torch::Tensor tokens = torch::tensor({{5, 6, 7}}, torch::kLong);
  const torch::Tensor expected = model->embed_tokens(tokens) * std::sqrt(static_cast<double>(cfg.d_model)) +
                                 fairseq_sinusoidal_table(4, cfg.d_model).narrow(0, 1, 3).unsqueeze(0);
  EXPECT_LT(testing::max_abs_diff(model->embed(tokens), expected), 1e-6);
}

}  // namespace
}  // namespace moetrain::models
