// Every operation of the MPI communicator on 2 and 4 ranks, checked against
// values each rank computes locally from the rank-dependent inputs of all
// ranks. Small integers make every dtype (bf16 and int8 included) exact.
#include <gtest/gtest.h>

#include <functional>
#include <numeric>
#include <string>

#include "parallel/mpi_communicator.h"
#include "parallel/mpi_runtime.h"
#include "tests/multirank/comm/comm_test_world.h"

namespace moetrain::parallel::comm_test {
namespace {

std::string dtype_name(torch::ScalarType t) { return c10::toString(t); }

// The reduction over ranks 0..n-1 of rank_tensor(r), computed locally in
// int64 and cast to `dtype`.
torch::Tensor expected_reduction(int64_t n, int64_t numel, torch::ScalarType dtype, ReduceOp op) {
  torch::Tensor acc = rank_tensor(0, numel, dtype).to(torch::kLong);
  for (int64_t r = 1; r < n; ++r) {
    torch::Tensor x = rank_tensor(r, numel, dtype).to(torch::kLong);
    if (op == ReduceOp::Sum) acc = acc + x;
    if (op == ReduceOp::Max) acc = torch::maximum(acc, x);
    if (op == ReduceOp::Min) acc = torch::minimum(acc, x);
  }
  return acc.to(dtype);
}

TEST(MpiCollectives, WorldHasTheLaunchedRanks) {
  Communicator& world = test_world();
  EXPECT_EQ(world.size(), world_size());
  EXPECT_EQ(world.rank(), world_rank());
  EXPECT_EQ(world.backend(), "mpi");
  EXPECT_GE(world.size(), 2) << "this suite is meant for mpirun -np 2 or more";
}

TEST(MpiCollectives, AllReduceSumMaxMinEveryDtype) {
  Communicator& world = test_world();
  const int64_t n = world.size();
  for (auto dtype : all_dtypes()) {
    for (auto op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min}) {
      torch::Tensor t = rank_tensor(world.rank(), 37, dtype).reshape({37});
      world.all_reduce(t, op);
      EXPECT_EQ(t.scalar_type(), dtype);
      EXPECT_TRUE(torch::equal(t, expected_reduction(n, 37, dtype, op)))
          << dtype_name(dtype) << " op " << static_cast<int>(op) << ": got " << t;
    }
  }
}

TEST(MpiCollectives, AllReduceOfMultiDimTensorKeepsShape) {
  Communicator& world = test_world();
  torch::Tensor t = rank_tensor(world.rank(), 24, torch::kFloat).reshape({2, 3, 4});
  world.all_reduce(t);
  EXPECT_EQ(t.sizes(), (std::vector<int64_t>{2, 3, 4}));
  EXPECT_TRUE(torch::equal(t, expected_reduction(world.size(), 24, torch::kFloat, ReduceOp::Sum).reshape({2, 3, 4})));
}

TEST(MpiCollectives, BoolReducesAsOrAndAnd) {
  Communicator& world = test_world();
  const int64_t n = world.size();
  auto mine = [](int64_t r) { return (torch::arange(16) + r) % 3 == 0; };
  torch::Tensor any = mine(0), all = mine(0);
  for (int64_t r = 1; r < n; ++r) {
    any = any.logical_or(mine(r));
    all = all.logical_and(mine(r));
  }
  for (auto [op, expected] :
       {std::pair{ReduceOp::Sum, any}, std::pair{ReduceOp::Max, any}, std::pair{ReduceOp::Min, all}}) {
    torch::Tensor t = mine(world.rank());
    world.all_reduce(t, op);
    EXPECT_EQ(t.scalar_type(), torch::kBool);
    EXPECT_TRUE(torch::equal(t, expected)) << "op " << static_cast<int>(op);
  }
}

// bf16 and fp16 are summed in fp32 and rounded once: rank 0 holds 256 and the
// others 1, whose exact sum (256 + n - 1) rounded to bf16 differs from what
// adding 1 to 256 in bf16 step by step gives (256, since 257 rounds down).
TEST(MpiCollectives, HalfPrecisionSumsInFp32AndRoundsOnce) {
  Communicator& world = test_world();
  const int64_t n = world.size();
  for (auto dtype : {torch::kBFloat16, torch::kHalf}) {
    const double scale = dtype == torch::kBFloat16 ? 256.0 : 2048.0;  // where the spacing becomes 2
    torch::Tensor t = torch::full({5}, world.rank() == 0 ? scale : 1.0, torch::kFloat).to(dtype);
    world.all_reduce(t);
    const torch::Tensor expected = torch::full({5}, scale + static_cast<double>(n - 1), torch::kFloat).to(dtype);
    EXPECT_TRUE(torch::equal(t, expected)) << dtype_name(dtype) << ": got " << t[0].item<float>();
    if (n >= 4) {
      EXPECT_GT(t[0].item<float>(), scale) << "rounded at every step instead of once";
    }
  }
}

TEST(MpiCollectives, ReduceScatterEveryDtype) {
  Communicator& world = test_world();
  const int64_t n = world.size(), k = 7;
  for (auto dtype : all_dtypes()) {
    for (auto op : {ReduceOp::Sum, ReduceOp::Max}) {
      torch::Tensor input = rank_tensor(world.rank(), n * k, dtype);
      torch::Tensor output = torch::empty({k}, dtype);
      world.reduce_scatter(input, output, op);
      torch::Tensor expected =
          expected_reduction(n, n * k, dtype, op).slice(0, world.rank() * k, (world.rank() + 1) * k);
      EXPECT_TRUE(torch::equal(output, expected)) << dtype_name(dtype) << ": got " << output;
    }
  }
}

TEST(MpiCollectives, AllGatherEveryDtype) {
  Communicator& world = test_world();
  const int64_t n = world.size(), k = 5;
  for (auto dtype : all_dtypes()) {
    torch::Tensor input = rank_tensor(world.rank(), k, dtype);
    torch::Tensor output = torch::empty({n * k}, dtype);
    world.all_gather(input, output);
    std::vector<torch::Tensor> parts;
    for (int64_t r = 0; r < n; ++r) parts.push_back(rank_tensor(r, k, dtype));
    EXPECT_TRUE(torch::equal(output, torch::cat(parts))) << dtype_name(dtype);
  }
  // bool moves as bytes.
  torch::Tensor flag = torch::full({1}, world.rank() % 2 == 1, torch::kBool);
  torch::Tensor flags = torch::empty({n}, torch::kBool);
  world.all_gather(flag, flags);
  EXPECT_TRUE(torch::equal(flags, torch::arange(n) % 2 == 1));
}

TEST(MpiCollectives, ReduceScatterThenAllGatherEqualsAllReduce) {
  Communicator& world = test_world();
  const int64_t n = world.size(), k = 9;
  torch::Tensor x = rank_tensor(world.rank(), n * k, torch::kFloat).reshape({n, k});
  torch::Tensor shard = torch::empty({k}, torch::kFloat);
  world.reduce_scatter(x, shard);
  torch::Tensor gathered = torch::empty({n, k}, torch::kFloat);
  world.all_gather(shard, gathered);
  torch::Tensor reduced = x.clone();
  world.all_reduce(reduced);
  EXPECT_TRUE(torch::equal(gathered, reduced));
}

TEST(MpiCollectives, BroadcastFromEveryRootEveryDtype) {
  Communicator& world = test_world();
  for (int64_t root = world.size() - 1; root >= 0; --root) {
    for (auto dtype : all_dtypes()) {
      torch::Tensor t = rank_tensor(world.rank(), 13, dtype).reshape({13, 1});
      world.broadcast(t, root);
      EXPECT_TRUE(torch::equal(t, rank_tensor(root, 13, dtype).reshape({13, 1})))
          << "root " << root << " " << dtype_name(dtype);
    }
  }
}

// Row j that rank `src` sends to rank `dst` holds src*100 + dst*10 + j in each
// of its 3 columns, so every row says where it came from.
torch::Tensor a2a_rows(int64_t src, int64_t dst, int64_t count, torch::ScalarType dtype) {
  torch::Tensor rows = (src * 100 + dst * 10 + torch::arange(count, torch::kLong)).unsqueeze(1).repeat({1, 3});
  return rows.to(dtype);
}

// Exchanges with counts[src][dst] rows from src to dst and checks each rank's
// output against the rows it must receive, in source order.
void check_all_to_all(Communicator& world, const std::function<int64_t(int64_t, int64_t)>& counts,
                      torch::ScalarType dtype) {
  const int64_t n = world.size(), me = world.rank();
  std::vector<int64_t> send_counts(n), recv_counts(n);
  std::vector<torch::Tensor> outgoing, incoming;
  for (int64_t r = 0; r < n; ++r) {
    send_counts[r] = counts(me, r);
    recv_counts[r] = counts(r, me);
    outgoing.push_back(a2a_rows(me, r, send_counts[r], dtype));
    incoming.push_back(a2a_rows(r, me, recv_counts[r], dtype));
  }
  torch::Tensor input = torch::cat(outgoing);
  torch::Tensor expected = torch::cat(incoming);
  torch::Tensor output = torch::full({expected.size(0), 3}, -1, dtype);
  world.all_to_all(input, output, send_counts, recv_counts);
  EXPECT_TRUE(torch::equal(output, expected)) << dtype_name(dtype) << " rank " << me << ": got " << output;
}

TEST(MpiCollectives, AllToAllUnevenCountsWithZeros) {
  Communicator& world = test_world();
  // (src + 2 dst) % 3 rows: some pairs exchange nothing, counts differ per pair.
  auto uneven = [](int64_t src, int64_t dst) { return (src + 2 * dst) % 3; };
  for (auto dtype : {torch::kFloat, torch::kLong, torch::kInt, torch::kBFloat16, torch::kDouble}) {
    check_all_to_all(world, uneven, dtype);
  }
}

TEST(MpiCollectives, AllToAllRankThatSendsNothing) {
  Communicator& world = test_world();
  // Rank 0 sends nothing to anyone but receives; the last rank receives nothing.
  const int64_t last = world.size() - 1;
  auto counts = [last](int64_t src, int64_t dst) -> int64_t {
    if (src == 0 || dst == last) return 0;
    return src + 1;
  };
  check_all_to_all(world, counts, torch::kFloat);
  // Nobody sends anything at all: empty inputs and outputs.
  check_all_to_all(
      world, [](int64_t, int64_t) -> int64_t { return 0; }, torch::kFloat);
}

TEST(MpiCollectives, AllToAllEvenSplitMatchesTranspose) {
  Communicator& world = test_world();
  check_all_to_all(
      world, [](int64_t, int64_t) -> int64_t { return 4; }, torch::kHalf);
}

TEST(MpiCollectives, SendRecvRing) {
  Communicator& world = test_world();
  const int64_t n = world.size(), me = world.rank();
  const int64_t next = (me + 1) % n, prev = (me + n - 1) % n;
  for (auto dtype : {torch::kFloat, torch::kBFloat16, torch::kLong, torch::kBool}) {
    // Large enough (1 MiB of fp32) that MPI uses its rendezvous protocol, so
    // the even/odd order is what prevents the ring from deadlocking.
    const int64_t numel = 1 << 18;
    torch::Tensor out = rank_tensor(me, numel, torch::kLong).to(dtype);
    torch::Tensor in = torch::empty({numel}, dtype);
    if (me % 2 == 0) {
      world.send(out, next);
      world.recv(in, prev);
    } else {
      world.recv(in, prev);
      world.send(out, next);
    }
    EXPECT_TRUE(torch::equal(in, rank_tensor(prev, numel, torch::kLong).to(dtype))) << dtype_name(dtype);
  }
}

TEST(MpiCollectives, SendRecvPreservesOrderBetweenAPair) {
  Communicator& world = test_world();
  if (world.rank() > 1) return;
  // Three messages of different values from rank 0 to rank 1 arrive in order.
  for (int64_t i = 0; i < 3; ++i) {
    if (world.rank() == 0) {
      world.send(torch::full({4, 2}, static_cast<double>(i), torch::kDouble), 1);
    } else {
      torch::Tensor t = torch::empty({4, 2}, torch::kDouble);
      world.recv(t, 0);
      EXPECT_TRUE(torch::equal(t, torch::full({4, 2}, static_cast<double>(i), torch::kDouble)));
    }
  }
}

TEST(MpiCollectives, RecvOfAShorterMessageThrows) {
  Communicator& world = test_world();
  if (world.rank() == 0) {
    world.send(torch::ones({3}, torch::kFloat), 1);
  } else if (world.rank() == 1) {
    torch::Tensor t = torch::zeros({4}, torch::kFloat);
    try {
      world.recv(t, 0);
      ADD_FAILURE() << "a 3-element message filled a 4-element tensor silently";
    } catch (const CommunicatorError& e) {
      EXPECT_NE(std::string(e.what()).find("received 3 elements from rank 0 into a tensor of 4"), std::string::npos)
          << e.what();
    }
  }
}

TEST(MpiCollectives, BarrierCompletes) {
  Communicator& world = test_world();
  for (int i = 0; i < 3; ++i) world.barrier();
  SUCCEED();
}

// Pairs {0,1}, {2,3}, ...: the group of a tensor-parallel pair.
std::vector<int64_t> my_pair(const Communicator& world) {
  const int64_t first = world.rank() - world.rank() % 2;
  std::vector<int64_t> group{first};
  if (first + 1 < world.size()) group.push_back(first + 1);
  return group;
}

TEST(MpiCollectives, SplitIntoPairsAndReduceWithinEach) {
  Communicator& world = test_world();
  const auto group = my_pair(world);
  auto pair = world.split(group);
  ASSERT_EQ(pair->size(), static_cast<int64_t>(group.size()));
  EXPECT_EQ(pair->rank(), world.rank() % 2);
  EXPECT_EQ(pair->backend(), "mpi");

  torch::Tensor t = torch::full({3}, static_cast<double>(world.rank() + 1), torch::kDouble);
  pair->all_reduce(t);
  double expected = 0;
  for (int64_t r : group) expected += static_cast<double>(r + 1);
  EXPECT_TRUE(torch::equal(t, torch::full({3}, expected, torch::kDouble)));

  torch::Tensor mine = torch::full({2}, world.rank(), torch::kLong);
  torch::Tensor both = torch::empty({2 * pair->size()}, torch::kLong);
  pair->all_gather(mine, both);
  std::vector<torch::Tensor> parts;
  for (int64_t r : group) parts.push_back(torch::full({2}, r, torch::kLong));
  EXPECT_TRUE(torch::equal(both, torch::cat(parts)));

  torch::Tensor b = torch::full({2}, world.rank(), torch::kInt);
  pair->broadcast(b, pair->size() - 1);
  EXPECT_TRUE(torch::equal(b, torch::full({2}, group.back(), torch::kInt)));
}

TEST(MpiCollectives, SplitStridedGroupsAndNestedSplit) {
  Communicator& world = test_world();
  const int64_t n = world.size();
  // Even and odd world ranks: the data-parallel groups when tp = 2.
  std::vector<int64_t> group;
  for (int64_t r = world.rank() % 2; r < n; r += 2) group.push_back(r);
  auto strided = world.split(group);
  ASSERT_EQ(strided->size(), static_cast<int64_t>(group.size()));
  torch::Tensor t = torch::full({1}, world.rank(), torch::kLong);
  strided->all_reduce(t);
  EXPECT_EQ(t.item<int64_t>(), std::accumulate(group.begin(), group.end(), int64_t{0}));

  // Every rank on its own, split from the sub-communicator.
  auto alone = strided->split({strided->rank()});
  EXPECT_EQ(alone->size(), 1);
  EXPECT_EQ(alone->rank(), 0);
  torch::Tensor u = torch::full({2}, 7.0, torch::kFloat);
  alone->all_reduce(u);
  EXPECT_TRUE(torch::equal(u, torch::full({2}, 7.0, torch::kFloat)));

  // The whole world again, as one group.
  std::vector<int64_t> everyone(n);
  std::iota(everyone.begin(), everyone.end(), 0);
  auto all = world.split(everyone);
  EXPECT_EQ(all->size(), n);
  EXPECT_EQ(all->rank(), world.rank());
}

TEST(MpiCollectives, SplitWithDisagreeingGroupsThrowsWhereTheGroupDiffers) {
  Communicator& world = test_world();
  // Rank 0 claims the last rank as its partner; the last rank says it is alone.
  // Every rank still calls split (it is collective), and rank 0 learns that
  // the group formed is not the one it asked for.
  const int64_t last = world.size() - 1;
  std::vector<int64_t> group;
  if (world.rank() == 0) {
    group = {0, last};
  } else {
    group = {world.rank()};
  }
  if (world.rank() == 0) {
    try {
      world.split(group);
      ADD_FAILURE() << "split accepted a group the other ranks do not share";
    } catch (const CommunicatorError& e) {
      EXPECT_NE(
          std::string(e.what()).find("asked for group [0, " + std::to_string(last) + "] but the ranks formed [0]"),
          std::string::npos)
          << e.what();
    }
  } else {
    EXPECT_NO_THROW(world.split(group));
  }
}

TEST(MpiCollectives, StatsCountBytesAsDocumented) {
  Communicator& world = test_world();
  const int64_t n = world.size(), me = world.rank();
  std::vector<int64_t> everyone(n);
  std::iota(everyone.begin(), everyone.end(), 0);
  auto comm = world.split(everyone);  // fresh stats
  EXPECT_TRUE(comm->stats().empty());

  torch::Tensor ar = torch::ones({10}, torch::kFloat);  // 40 bytes
  comm->all_reduce(ar);
  comm->all_reduce(ar);
  torch::Tensor half = torch::ones({10}, torch::kBFloat16);  // 20 bytes, though fp32 travels
  comm->all_reduce(half);
  torch::Tensor rs_in = torch::ones({n * 4}, torch::kDouble), rs_out = torch::empty({4}, torch::kDouble);
  comm->reduce_scatter(rs_in, rs_out);  // input: n*32 bytes
  torch::Tensor ag_in = torch::ones({3}, torch::kInt), ag_out = torch::empty({n * 3}, torch::kInt);
  comm->all_gather(ag_in, ag_out);  // output: n*12 bytes
  torch::Tensor bc = torch::ones({5}, torch::kLong);
  comm->broadcast(bc, 0);  // 40 bytes on every rank
  // all_to_all: 2 rows of 3 fp32 to every rank = n*24 bytes sent (own rows included).
  torch::Tensor a2a_in = torch::ones({2 * n, 3}, torch::kFloat), a2a_out = torch::empty({2 * n, 3}, torch::kFloat);
  comm->all_to_all(a2a_in, a2a_out, std::vector<int64_t>(n, 2), std::vector<int64_t>(n, 2));
  torch::Tensor p2p = torch::ones({6}, torch::kByte);  // 6 bytes
  if (me == 0) comm->send(p2p, 1);
  if (me == 1) comm->recv(p2p, 0);
  comm->barrier();

  const CommStats& s = comm->stats();
  EXPECT_EQ(s.at("all_reduce").calls, 3);
  EXPECT_EQ(s.at("all_reduce").bytes, 2 * 40 + 2 * 40 + 2 * 20);
  EXPECT_EQ(s.at("reduce_scatter").calls, 1);
  EXPECT_EQ(s.at("reduce_scatter").bytes, n * 32);
  EXPECT_EQ(s.at("all_gather").bytes, n * 12);
  EXPECT_EQ(s.at("broadcast").bytes, 40);
  EXPECT_EQ(s.at("all_to_all").bytes, n * 24);
  EXPECT_EQ(s.at("barrier").calls, 1);
  EXPECT_EQ(s.at("barrier").bytes, 0);
  if (me == 0) {
    EXPECT_EQ(s.at("send").bytes, 6);
    EXPECT_EQ(s.count("recv"), 0u);
  } else if (me == 1) {
    EXPECT_EQ(s.at("recv").bytes, 6);
    EXPECT_EQ(s.count("send"), 0u);
  }
  for (const auto& [op, stat] : s) EXPECT_GE(stat.seconds, 0.0) << op;
  EXPECT_GT(s.at("all_reduce").seconds, 0.0);

  comm->reset_stats();
  EXPECT_TRUE(comm->stats().empty());
}

TEST(MpiCollectives, SizeMismatchThrowsOnEveryRankBeforeCommunicating) {
  Communicator& world = test_world();
  const int64_t n = world.size();
  torch::Tensor in = torch::ones({3}, torch::kFloat);
  torch::Tensor wrong = torch::empty({n * 3 + 1}, torch::kFloat);
  EXPECT_THROW(world.all_gather(in, wrong), CommunicatorError);
  EXPECT_THROW(world.reduce_scatter(wrong, in), CommunicatorError);
  // The communicator is still in step: a collective after the errors works.
  torch::Tensor t = torch::ones({1}, torch::kFloat);
  world.all_reduce(t);
  EXPECT_EQ(t.item<float>(), static_cast<float>(n));
}

}  // namespace
}  // namespace moetrain::parallel::comm_test
