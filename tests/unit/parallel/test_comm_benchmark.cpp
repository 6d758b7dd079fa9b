// The comm benchmark on a world of one rank: options, table and errors.
#include <gtest/gtest.h>

#include <sstream>

#include "parallel/comm_benchmark.h"
#include "parallel/mpi_communicator.h"

namespace moetrain::parallel {
namespace {

TEST(CommBenchOptions, DefaultsAreOneKibToSixtyFourMibInStepsOfFour) {
  CommBenchOptions options;
  ASSERT_EQ(options.sizes_bytes.size(), 9u);
  EXPECT_EQ(options.sizes_bytes.front(), 1024);
  EXPECT_EQ(options.sizes_bytes.back(), 64LL * 1024 * 1024);
  for (size_t i = 1; i < options.sizes_bytes.size(); ++i) {
    EXPECT_EQ(options.sizes_bytes[i], 4 * options.sizes_bytes[i - 1]);
  }
  EXPECT_EQ(options.ops, (std::vector<std::string>{"all_reduce", "reduce_scatter", "all_gather", "broadcast",
                                                   "all_to_all", "send_recv"}));
  EXPECT_EQ(options.warmup, 5);
  EXPECT_EQ(options.iters, 20);
  EXPECT_EQ(options.dtype, torch::kFloat);
  EXPECT_TRUE(options.device.is_cpu());
}

TEST(CommBenchmark, SingleRankPrintsATableAndSkipsSendRecv) {
  auto world = make_world_communicator(30.0);
  CommBenchOptions options;
  options.sizes_bytes = {1000, 4096};
  options.warmup = 1;
  options.iters = 3;
  options.dtype = torch::kBFloat16;
  std::ostringstream out;
  const auto rows = run_comm_benchmark(*world, options, out);
  ASSERT_EQ(rows.size(), 10u);
  EXPECT_EQ(rows[0].op, "all_reduce");
  EXPECT_EQ(rows[0].count, 500);
  EXPECT_EQ(rows[0].size_bytes, 1000);
  for (const auto& row : rows) {
    EXPECT_GT(row.time_us, 0.0) << row.op;
    if (row.op != "broadcast") {
      EXPECT_EQ(row.busbw_gbps, 0.0) << row.op << ": (n-1)/n is 0 on one rank";
    }
  }
  const std::string table = out.str();
  EXPECT_NE(table.find("backend mpi, 1 rank, dtype bfloat16"), std::string::npos) << table;
  EXPECT_NE(table.find("send_recv: skipped"), std::string::npos) << table;
  EXPECT_NE(table.find("reduce_scatter"), std::string::npos) << table;
  // Stats show the benchmark really called the communicator.
  EXPECT_GE(world->stats().at("all_to_all").calls, 2 * (1 + 3));
}

TEST(CommBenchmark, RejectsUnknownOpsAndBadSizes) {
  auto world = make_world_communicator(30.0);
  std::ostringstream out;
  CommBenchOptions options;
  options.ops = {"all_reduce", "allreduce"};
  EXPECT_THROW(run_comm_benchmark(*world, options, out), std::invalid_argument);
  options = CommBenchOptions();
  options.sizes_bytes = {0};
  EXPECT_THROW(run_comm_benchmark(*world, options, out), std::invalid_argument);
  options = CommBenchOptions();
  options.iters = 0;
  EXPECT_THROW(run_comm_benchmark(*world, options, out), std::invalid_argument);
  EXPECT_TRUE(out.str().empty());
}

}  // namespace
}  // namespace moetrain::parallel
