// Byte messages between ranks (parallel/byte_exchange.h), the node-local rank
// and the gathered device map (parallel/device_map.h), on 2 and 4 ranks of
// one machine.
#include <gtest/gtest.h>

#include <algorithm>
#include <string>
#include <vector>

#include "parallel/byte_exchange.h"
#include "parallel/device_map.h"
#include "tests/multirank/comm/comm_test_world.h"

namespace moetrain::parallel::comm_test {
namespace {

// What rank `from` sends to rank `to`: (from * 7 + to * 3) % 5 bytes (some
// empty), each naming both ends.
ByteMessage message(int64_t from, int64_t to) {
  ByteMessage m(static_cast<size_t>((from * 7 + to * 3) % 5));
  for (size_t i = 0; i < m.size(); ++i) m[i] = static_cast<uint8_t>(from * 16 + to + i);
  return m;
}

TEST(ByteExchange, AllToAllDeliversEveryMessageByRank) {
  Communicator& world = test_world();
  const int64_t n = world.size(), me = world.rank();
  std::vector<ByteMessage> send;
  for (int64_t to = 0; to < n; ++to) send.push_back(message(me, to));
  const auto received = all_to_all_bytes(world, send);
  ASSERT_EQ(static_cast<int64_t>(received.size()), n);
  for (int64_t from = 0; from < n; ++from) EXPECT_EQ(received[from], message(from, me)) << "from rank " << from;
}

TEST(ByteExchange, AllGatherOfMessagesOfDifferentLengths) {
  Communicator& world = test_world();
  const int64_t n = world.size(), me = world.rank();
  // Rank r sends 3 * r bytes: rank 0 sends none.
  ByteMessage mine(static_cast<size_t>(3 * me), static_cast<uint8_t>(me + 1));
  const auto gathered = all_gather_bytes(world, mine);
  ASSERT_EQ(static_cast<int64_t>(gathered.size()), n);
  for (int64_t r = 0; r < n; ++r) {
    EXPECT_EQ(gathered[r], ByteMessage(static_cast<size_t>(3 * r), static_cast<uint8_t>(r + 1))) << "rank " << r;
  }
}

TEST(ByteExchange, WrongNumberOfMessagesIsRefusedBeforeAnyTraffic) {
  Communicator& world = test_world();
  EXPECT_THROW(all_to_all_bytes(world, std::vector<ByteMessage>(static_cast<size_t>(world.size() + 1))),
               std::invalid_argument);
}

TEST(DeviceMapGather, EveryRankOfOneMachineIsOneNode) {
  Communicator& world = test_world();
  const NodeRank node = node_local_rank();
  EXPECT_EQ(node.local_size, world.size());
  auto local = torch::tensor({node.local_rank}, torch::kLong);
  auto all = torch::empty({world.size()}, torch::kLong);
  world.all_gather(local, all);
  std::vector<int64_t> ranks(all.data_ptr<int64_t>(), all.data_ptr<int64_t>() + all.numel());
  std::sort(ranks.begin(), ranks.end());
  for (int64_t r = 0; r < world.size(); ++r) EXPECT_EQ(ranks[r], r);
}

TEST(DeviceMapGather, ReportsArriveInRankOrderAndAreChecked) {
  Communicator& world = test_world();
  const int64_t me = world.rank();
  // Injected: two ranks per "host", one GPU per rank named by a UUID-like id.
  RankDevice mine{me, "host-" + std::to_string(me / 2), me % 2,
                  choose_device(me % 2, 2, "GPU-a" + std::to_string(me / 2) + ",GPU-b" + std::to_string(me / 2))};
  const auto map = gather_device_map(world, mine);
  ASSERT_EQ(static_cast<int64_t>(map.size()), world.size());
  for (int64_t r = 0; r < world.size(); ++r) {
    EXPECT_EQ(map[r].rank, r);
    EXPECT_EQ(map[r].host, "host-" + std::to_string(r / 2));
    EXPECT_EQ(map[r].local_rank, r % 2);
    EXPECT_EQ(map[r].device.index, r % 2);
    EXPECT_EQ(map[r].device.physical, std::string(r % 2 ? "GPU-b" : "GPU-a") + std::to_string(r / 2));
  }
  EXPECT_NO_THROW(check_device_map(map, /*exclusive=*/true));
}

}  // namespace
}  // namespace moetrain::parallel::comm_test
