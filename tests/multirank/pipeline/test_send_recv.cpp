// Communicator::send_recv on the MPI backend: exchanges that would deadlock as
// pairs of blocking sends (every rank sending several MB to its neighbour at
// once), lists of tensors of mixed dtypes, one-sided calls, byte accounting,
// and argument errors.
#include <gtest/gtest.h>

#include <vector>

#include "parallel/mpi_communicator.h"
#include "tests/multirank/pipeline/pipeline_test_world.h"

namespace moetrain::parallel::pipeline_test {
namespace {

// Values that identify the sending rank and the position.
torch::Tensor payload(int64_t rank, int64_t numel, torch::ScalarType dtype) {
  return ((torch::arange(numel, torch::kLong) * 7 + rank * 13) % 1000).to(dtype);
}

TEST(SendRecv, RingOfLargeMessagesCompletes) {
  Communicator& world = test_world();
  const int64_t n = world.size(), me = world.rank();
  const int64_t next = (me + 1) % n, prev = (me + n - 1) % n;
  const int64_t numel = 2 * 1024 * 1024;  // 8 MiB of fp32 each way: far past any eager limit
  world.reset_stats();
  torch::Tensor out = payload(me, numel, torch::kFloat);
  torch::Tensor in = torch::empty({numel}, torch::kFloat);
  // Every rank sends before it receives: with blocking send/recv this cycle
  // would wait forever.
  world.send_recv(out, next, in, prev);
  EXPECT_TRUE(torch::equal(in, payload(prev, numel, torch::kFloat)));
  const OpStats& s = world.stats().at("send_recv");
  EXPECT_EQ(s.calls, 1);
  EXPECT_EQ(s.bytes, 2 * numel * 4);
  EXPECT_GT(s.seconds, 0.0);
}

TEST(SendRecv, ListsOfMixedDtypesAlongAChain) {
  Communicator& world = test_world();
  const int64_t n = world.size(), me = world.rank();
  const int64_t dst = me + 1 < n ? me + 1 : -1;
  const int64_t src = me > 0 ? me - 1 : -1;
  std::vector<torch::Tensor> sends, recvs;
  if (dst != -1) {
    sends = {payload(me, 15, torch::kFloat).reshape({3, 5}), payload(me, 7, torch::kLong),
             payload(me, 4, torch::kBFloat16)};
  }
  if (src != -1) {
    recvs = {torch::empty({3, 5}, torch::kFloat), torch::empty({7}, torch::kLong), torch::empty({4}, torch::kBFloat16)};
  }
  world.reset_stats();
  world.send_recv(sends, dst, recvs, src);
  if (src != -1) {
    EXPECT_TRUE(torch::equal(recvs[0], payload(src, 15, torch::kFloat).reshape({3, 5})));
    EXPECT_TRUE(torch::equal(recvs[1], payload(src, 7, torch::kLong)));
    EXPECT_TRUE(torch::equal(recvs[2], payload(src, 4, torch::kBFloat16)));
  }
  // 60 + 56 + 8 = 124 bytes each way that happens.
  const int64_t expected = (dst != -1 ? 124 : 0) + (src != -1 ? 124 : 0);
  EXPECT_EQ(world.stats().at("send_recv").bytes, expected);
  EXPECT_EQ(world.stats().count("send"), 0u);
  EXPECT_EQ(world.stats().count("recv"), 0u);
}

TEST(SendRecv, PairsWithPlainSendAndRecv) {
  Communicator& world = test_world();
  const int64_t me = world.rank();
  torch::Tensor t = payload(me, 1000, torch::kDouble);
  torch::Tensor got = torch::empty({1000}, torch::kDouble);
  if (me == 0) {
    torch::Tensor none;
    world.send_recv(t, 1, none, -1);  // one-sided: only a send
    world.recv(got, 1);
    EXPECT_TRUE(torch::equal(got, payload(1, 1000, torch::kDouble)));
  } else if (me == 1) {
    world.recv(got, 0);
    EXPECT_TRUE(torch::equal(got, payload(0, 1000, torch::kDouble)));
    torch::Tensor none;
    world.send_recv(none, -1, got, -1);  // nothing to move: returns at once
    world.send(t, 0);
  }
  world.barrier();
}

TEST(SendRecv, ShortMessageIsAnError) {
  Communicator& world = test_world();
  const int64_t me = world.rank();
  if (me == 0) {
    torch::Tensor three = torch::ones({3}, torch::kFloat), none;
    world.send_recv(three, 1, none, -1);
  } else if (me == 1) {
    torch::Tensor five = torch::zeros({5}, torch::kFloat), none;
    try {
      world.send_recv(none, -1, five, 0);
      ADD_FAILURE() << "a 3-element message into a 5-element tensor was accepted";
    } catch (const CommunicatorError& e) {
      EXPECT_NE(std::string(e.what()).find("received 3 elements from rank 0"), std::string::npos) << e.what();
    }
  }
  world.barrier();
}

TEST(SendRecv, BadArgumentsAreRejectedBeforeCommunicating) {
  Communicator& world = test_world();
  const int64_t me = world.rank(), other = (me + 1) % world.size();
  world.reset_stats();
  std::vector<torch::Tensor> one{torch::ones({2})}, none;
  EXPECT_THROW(world.send_recv(one, -1, none, -1), CommunicatorError);  // tensors but no peer
  EXPECT_THROW(world.send_recv(none, -1, one, -1), CommunicatorError);
  EXPECT_THROW(world.send_recv(one, me, none, -1), CommunicatorError);  // to itself
  EXPECT_THROW(world.send_recv(one, world.size(), none, -1), CommunicatorError);
  std::vector<torch::Tensor> strided{torch::ones({4, 4}).t()};
  EXPECT_THROW(world.send_recv(strided, other, none, -1), CommunicatorError);
  torch::Tensor shared = torch::ones({8});
  std::vector<torch::Tensor> sends{shared}, recvs{shared.narrow(0, 2, 4)};
  EXPECT_THROW(world.send_recv(sends, other, recvs, other), CommunicatorError);
  world.send_recv(none, -1, none, -1);
  EXPECT_TRUE(world.stats().empty()) << "rejected or empty calls must count nothing";
}

}  // namespace
}  // namespace moetrain::parallel::pipeline_test
