#include <gtest/gtest.h>

#include "parallel/process_grid.h"

using moetrain::parallel::LayoutError;
using moetrain::parallel::ParallelConfig;
using moetrain::parallel::ProcessGrid;

TEST(ProcessGrid, TensorParallelIsFastestThenDataThenPipeline) {
  ParallelConfig cfg;
  cfg.tp = 2;
  cfg.pp = 2;  // dp derived: 8 / 4 = 2
  // rank 5 = pp 1 * 4 + dp 0 * 2 + tp 1
  ProcessGrid grid(8, 5, cfg);
  EXPECT_EQ(grid.dp_size(), 2);
  EXPECT_EQ(grid.tp_rank(), 1);
  EXPECT_EQ(grid.dp_rank(), 0);
  EXPECT_EQ(grid.pp_rank(), 1);
  EXPECT_EQ(grid.tp_group(), (std::vector<int64_t>{4, 5}));
  EXPECT_EQ(grid.dp_group(), (std::vector<int64_t>{5, 7}));
  EXPECT_EQ(grid.pp_group(), (std::vector<int64_t>{1, 5}));
}

TEST(ProcessGrid, ExpertGroupsSplitDataParallelRanks) {
  ParallelConfig cfg;
  cfg.ep = 2;  // dp = 4
  ProcessGrid grid(4, 3, cfg);
  EXPECT_EQ(grid.ep_rank(), 1);
  EXPECT_EQ(grid.ep_group(), (std::vector<int64_t>{2, 3}));
  EXPECT_EQ(grid.expert_dp_group(), (std::vector<int64_t>{1, 3}));
}

TEST(ProcessGrid, ContextParallelSitsBetweenTensorAndDataParallel) {
  ParallelConfig cfg;
  cfg.tp = 2;
  cfg.cp = 2;
  cfg.ep = 2;  // dp derived: 16 / (2 * 2 * 2) = 2
  cfg.pp = 2;
  // rank 13 = ((pp 1 * 2 + dp 1) * 2 + cp 0) * 2 + tp 1
  ProcessGrid grid(16, 13, cfg);
  EXPECT_EQ(grid.dp_size(), 2);
  EXPECT_EQ(grid.cp_size(), 2);
  EXPECT_EQ(grid.tp_rank(), 1);
  EXPECT_EQ(grid.cp_rank(), 0);
  EXPECT_EQ(grid.dp_rank(), 1);
  EXPECT_EQ(grid.pp_rank(), 1);
  EXPECT_EQ(grid.tp_group(), (std::vector<int64_t>{12, 13}));
  EXPECT_EQ(grid.cp_group(), (std::vector<int64_t>{13, 15}));
  EXPECT_EQ(grid.dp_group(), (std::vector<int64_t>{9, 13}));
  EXPECT_EQ(grid.replica_group(), (std::vector<int64_t>{9, 11, 13, 15}));
  EXPECT_EQ(grid.ep_group(), (std::vector<int64_t>{9, 13}));
  EXPECT_EQ(grid.expert_dp_group(), (std::vector<int64_t>{13, 15}));
  EXPECT_EQ(grid.pp_group(), (std::vector<int64_t>{5, 13}));
  EXPECT_EQ(grid.rank_of(1, 1, 1, 1), 15);
  ParallelConfig three;
  three.cp = 3;
  EXPECT_THROW(ProcessGrid(4, 0, three), LayoutError);
}

TEST(ProcessGrid, EveryRankAppearsOnceAcrossGroups) {
  ParallelConfig cfg;
  cfg.tp = 2;
  cfg.pp = 3;
  std::vector<int> seen(12, 0);
  for (int64_t r = 0; r < 12; ++r) {
    ProcessGrid grid(12, r, cfg);
    EXPECT_EQ(grid.rank_of(grid.dp_rank(), grid.pp_rank(), grid.tp_rank()), r);
    seen[grid.rank_of(grid.dp_rank(), grid.pp_rank(), grid.tp_rank())]++;
  }
  for (int count : seen) EXPECT_EQ(count, 1);
}

TEST(ProcessGrid, ImpossibleLayoutsSayWhy) {
  ParallelConfig cfg;
  cfg.tp = 3;
  EXPECT_THROW(ProcessGrid(4, 0, cfg), LayoutError);
  cfg.tp = 1;
  cfg.dp = 3;
  EXPECT_THROW(ProcessGrid(4, 0, cfg), LayoutError);
  cfg.dp = 0;
  cfg.ep = 3;
  try {
    ProcessGrid(4, 0, cfg);
    FAIL() << "expected LayoutError";
  } catch (const LayoutError& e) {
    EXPECT_NE(std::string(e.what()).find("does not divide"), std::string::npos) << e.what();
  }
}
