// The host-staged communicator (parallel/host_staged_communicator.h) over the
// MPI world: every operation gives what the MPI communicator gives, into the
// caller's own tensors (non-contiguous views included, which MPI itself
// refuses), with the same byte counts; split gives staged sub-communicators.
#include <gtest/gtest.h>

#include <vector>

#include "parallel/host_staged_communicator.h"
#include "tests/multirank/comm/comm_test_world.h"

namespace moetrain::parallel::comm_test {
namespace {

// A staged communicator over all ranks of the test world (a split of it, so
// its traffic is its own).
std::unique_ptr<Communicator> staged_world() {
  Communicator& world = test_world();
  return std::make_unique<HostStagedCommunicator>(world.split(all_ranks(world)));
}

TEST(HostStaged, CollectivesMatchTheHostCommunicator) {
  auto staged = staged_world();
  Communicator& world = test_world();
  EXPECT_EQ(staged->backend(), "mpi-staged");
  EXPECT_EQ(staged->rank(), world.rank());
  const int64_t n = world.size(), me = world.rank();
  for (auto dtype : {torch::kFloat, torch::kBFloat16, torch::kLong}) {
    auto a = rank_tensor(me, 12, dtype), b = a.clone();
    staged->all_reduce(a, ReduceOp::Max);
    world.all_reduce(b, ReduceOp::Max);
    EXPECT_TRUE(torch::equal(a, b)) << c10::toString(dtype);

    auto input = rank_tensor(me, 4 * n, dtype);
    auto rs_a = torch::empty({4}, dtype), rs_b = torch::empty({4}, dtype);
    staged->reduce_scatter(input, rs_a);
    world.reduce_scatter(input, rs_b);
    EXPECT_TRUE(torch::equal(rs_a, rs_b));

    auto ag_a = torch::empty({3 * n}, dtype), ag_b = torch::empty({3 * n}, dtype);
    staged->all_gather(rank_tensor(me, 3, dtype), ag_a);
    world.all_gather(rank_tensor(me, 3, dtype), ag_b);
    EXPECT_TRUE(torch::equal(ag_a, ag_b));

    auto bc = rank_tensor(me, 5, dtype);
    staged->broadcast(bc, n - 1);
    EXPECT_TRUE(torch::equal(bc, rank_tensor(n - 1, 5, dtype)));
  }
}

TEST(HostStaged, ResultsLandInNonContiguousViews) {
  auto staged = staged_world();
  const int64_t n = staged->size(), me = staged->rank();
  // Column 1 of a [6, 3] tensor: a strided view MPI could not take directly.
  auto matrix = torch::zeros({6, 3}, torch::kFloat);
  auto column = matrix.select(1, 1);
  column.copy_(rank_tensor(me, 6, torch::kFloat));
  staged->all_reduce(column);
  auto expected = torch::zeros({6}, torch::kFloat);
  for (int64_t r = 0; r < n; ++r) expected += rank_tensor(r, 6, torch::kFloat);
  EXPECT_TRUE(torch::equal(matrix.select(1, 1), expected));
  EXPECT_TRUE(torch::equal(matrix.select(1, 0), torch::zeros({6})));  // nothing else written
}

TEST(HostStaged, AllToAllAndSendRecvRing) {
  auto staged = staged_world();
  const int64_t n = staged->size(), me = staged->rank();
  // Rank s sends (s + d) % 3 rows of 2 to rank d, each row holding s * 10 + d.
  std::vector<int64_t> send_counts, recv_counts;
  std::vector<torch::Tensor> rows;
  for (int64_t d = 0; d < n; ++d) {
    send_counts.push_back((me + d) % 3);
    recv_counts.push_back((d + me) % 3);
    rows.push_back(torch::full({send_counts.back(), 2}, static_cast<float>(me * 10 + d)));
  }
  int64_t total = 0;
  for (int64_t c : recv_counts) total += c;
  auto out = torch::empty({total, 2});
  staged->all_to_all(torch::cat(rows), out, send_counts, recv_counts);
  int64_t row = 0;
  for (int64_t s = 0; s < n; ++s) {
    for (int64_t k = 0; k < recv_counts[static_cast<size_t>(s)]; ++k, ++row) {
      EXPECT_EQ(out[row][0].item<float>(), static_cast<float>(s * 10 + me)) << "row " << row;
    }
  }
  const int64_t next = (me + 1) % n, prev = (me + n - 1) % n;
  auto from_prev = torch::empty({3}, torch::kLong);
  staged->send_recv(rank_tensor(me, 3, torch::kLong), next, from_prev, prev);
  EXPECT_TRUE(torch::equal(from_prev, rank_tensor(prev, 3, torch::kLong)));
}

TEST(HostStaged, CountsWhatTheHostCountsAndSplits) {
  auto staged = staged_world();
  auto t = torch::ones({256}, torch::kFloat);  // 1 KiB
  staged->all_reduce(t);
  staged->barrier();
  const auto& stats = staged->stats();
  ASSERT_EQ(stats.count("all_reduce"), 1u);
  EXPECT_EQ(stats.at("all_reduce").calls, 1);
  EXPECT_EQ(stats.at("all_reduce").bytes, 2 * 1024);  // the MPI backend's 2 x tensor bytes
  // A call refused by an argument check counts nothing.
  auto wrong = torch::empty({3});
  EXPECT_ANY_THROW(staged->reduce_scatter(torch::ones({4 * staged->size() + 1}), wrong));
  EXPECT_EQ(staged->stats().count("reduce_scatter"), 0u);
  auto alone = staged->split({staged->rank()});
  EXPECT_EQ(alone->backend(), "mpi-staged");
  EXPECT_EQ(alone->size(), 1);
}

}  // namespace
}  // namespace moetrain::parallel::comm_test
