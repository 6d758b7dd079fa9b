// The comm benchmark on several ranks: every op runs, the table appears on
// rank 0 only, and the bandwidth columns follow nccl-tests' definitions.
#include <gtest/gtest.h>

#include <sstream>

#include "parallel/comm_benchmark.h"
#include "tests/multirank/comm/comm_test_world.h"

namespace moetrain::parallel::comm_test {
namespace {

TEST(CommBenchmark, EveryOpOnSeveralRanks) {
  Communicator& world = test_world();
  const int64_t n = world.size();
  CommBenchOptions options;
  options.sizes_bytes = {1024, 64 * 1024};
  options.warmup = 1;
  options.iters = 3;
  std::ostringstream out;
  const auto rows = run_comm_benchmark(world, options, out);

  ASSERT_EQ(rows.size(), 12u);  // 6 ops x 2 sizes
  for (const auto& row : rows) {
    EXPECT_GT(row.time_us, 0.0) << row.op;
    EXPECT_GT(row.algbw_gbps, 0.0) << row.op;
    EXPECT_EQ(row.size_bytes, row.count * 4) << row.op;
    EXPECT_NEAR(row.algbw_gbps, row.size_bytes / row.time_us / 1e3, 1e-9 * row.algbw_gbps);
    double factor = 1.0;
    if (row.op == "all_reduce") factor = 2.0 * (n - 1) / n;
    if (row.op == "reduce_scatter" || row.op == "all_gather" || row.op == "all_to_all") {
      factor = static_cast<double>(n - 1) / n;
      EXPECT_EQ(row.count % n, 0) << row.op;
    }
    EXPECT_NEAR(row.busbw_gbps, row.algbw_gbps * factor, 1e-9 * row.algbw_gbps) << row.op;
  }
  EXPECT_EQ(rows[0].op, "all_reduce");
  EXPECT_EQ(rows[0].size_bytes, 1024);
  EXPECT_EQ(rows[11].op, "send_recv");

  // Every rank got the same (max over ranks) times back.
  torch::Tensor mine = torch::full({1}, rows[0].time_us, torch::kDouble);
  torch::Tensor highest = mine.clone();
  world.all_reduce(highest, ReduceOp::Max);
  EXPECT_EQ(mine.item<double>(), highest.item<double>());

  const std::string table = out.str();
  if (world.rank() == 0) {
    EXPECT_NE(table.find(std::to_string(n) + " ranks"), std::string::npos) << table;
    EXPECT_NE(table.find("busbw(GB/s)"), std::string::npos) << table;
    EXPECT_NE(table.find("send_recv"), std::string::npos) << table;
  } else {
    EXPECT_TRUE(table.empty()) << "only rank 0 prints";
  }
}

}  // namespace
}  // namespace moetrain::parallel::comm_test
