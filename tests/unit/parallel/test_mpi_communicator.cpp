// The MPI communicator in a single process (an MPI singleton, world size 1):
// every operation's result, and the messages of rejected arguments.
#include <gtest/gtest.h>

#include <climits>
#include <string>

#include "parallel/mpi_communicator.h"
#include "parallel/mpi_runtime.h"

namespace moetrain::parallel {
namespace {

std::vector<torch::ScalarType> all_dtypes() {
  return {torch::kFloat, torch::kDouble, torch::kInt,      torch::kLong, torch::kChar,
          torch::kByte,  torch::kBool,   torch::kBFloat16, torch::kHalf};
}

torch::Tensor sample(int64_t numel, torch::ScalarType dtype) {
  return ((torch::arange(numel, torch::kLong) * 7) % 5).to(dtype);
}

// Runs `call` and checks it throws CommunicatorError whose message contains
// every one of `parts`.
template <class Call>
void expect_error(Call call, std::initializer_list<std::string> parts) {
  try {
    call();
    ADD_FAILURE() << "no CommunicatorError thrown";
  } catch (const CommunicatorError& e) {
    for (const auto& part : parts) {
      EXPECT_NE(std::string(e.what()).find(part), std::string::npos) << "message: " << e.what() << "\nwanted: " << part;
    }
  }
}

class SingleRank : public ::testing::Test {
 protected:
  void SetUp() override { world_ = make_world_communicator(30.0); }
  std::unique_ptr<Communicator> world_;
};

TEST_F(SingleRank, IsAWorldOfOne) {
  EXPECT_EQ(world_->size(), 1);
  EXPECT_EQ(world_->rank(), 0);
  EXPECT_EQ(world_->backend(), "mpi");
  EXPECT_EQ(world_size(), 1);
  EXPECT_EQ(world_rank(), 0);
  EXPECT_GE(mpi_thread_level(), MPI_THREAD_SINGLE);
}

TEST_F(SingleRank, EveryOpIsTheIdentityForEveryDtype) {
  for (auto dtype : all_dtypes()) {
    SCOPED_TRACE(c10::toString(dtype));
    const torch::Tensor x = sample(11, dtype);
    for (auto op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min}) {
      torch::Tensor t = x.clone();
      world_->all_reduce(t, op);
      EXPECT_TRUE(torch::equal(t, x));
      torch::Tensor out = torch::empty({11}, dtype);
      world_->reduce_scatter(x, out, op);
      EXPECT_TRUE(torch::equal(out, x));
    }
    torch::Tensor gathered = torch::empty({11}, dtype);
    world_->all_gather(x, gathered);
    EXPECT_TRUE(torch::equal(gathered, x));
    torch::Tensor b = x.clone();
    world_->broadcast(b, 0);
    EXPECT_TRUE(torch::equal(b, x));
    torch::Tensor rows = x.reshape({11, 1});
    torch::Tensor moved = torch::empty({11, 1}, dtype);
    world_->all_to_all(rows, moved, {11}, {11});
    EXPECT_TRUE(torch::equal(moved, rows));
  }
  world_->barrier();
}

TEST_F(SingleRank, EmptyTensorsAreFine) {
  torch::Tensor t = torch::empty({0}, torch::kFloat);
  world_->all_reduce(t);
  torch::Tensor out = torch::empty({0, 4}, torch::kFloat);
  world_->all_to_all(torch::empty({0, 4}, torch::kFloat), out, {0}, {0});
  EXPECT_EQ(out.numel(), 0);
}

TEST_F(SingleRank, WorksOnTensorsThatRequireGrad) {
  torch::Tensor w = torch::ones({3}, torch::kBFloat16).requires_grad_(true);
  world_->all_reduce(w);  // the bf16 path copies back in place, under NoGradGuard
  EXPECT_TRUE(torch::equal(w.detach(), torch::ones({3}, torch::kBFloat16)));
}

TEST_F(SingleRank, StatsCountEveryCall) {
  torch::Tensor t = torch::ones({8}, torch::kFloat);  // 32 bytes
  world_->all_reduce(t);
  world_->broadcast(t, 0);
  world_->barrier();
  const CommStats& s = world_->stats();
  EXPECT_EQ(s.at("all_reduce").calls, 1);
  EXPECT_EQ(s.at("all_reduce").bytes, 64);
  EXPECT_EQ(s.at("broadcast").bytes, 32);
  EXPECT_EQ(s.at("barrier").bytes, 0);
  // A rejected call counts nothing.
  EXPECT_THROW(world_->broadcast(t, 3), CommunicatorError);
  EXPECT_EQ(world_->stats().at("broadcast").calls, 1);
}

TEST_F(SingleRank, SplitToItself) {
  auto sub = world_->split({0});
  EXPECT_EQ(sub->size(), 1);
  EXPECT_EQ(sub->rank(), 0);
  torch::Tensor t = torch::full({2}, 3.0, torch::kDouble);
  sub->all_reduce(t);
  EXPECT_TRUE(torch::equal(t, torch::full({2}, 3.0, torch::kDouble)));
}

TEST_F(SingleRank, RejectsNonContiguousTensors) {
  torch::Tensor t = torch::ones({4, 4}, torch::kFloat).t();
  expect_error([&] { world_->all_reduce(t); }, {"all_reduce (mpi)", "not contiguous", "[4, 4]", "[1, 4]"});
  torch::Tensor out = torch::empty({4, 4}, torch::kFloat);
  expect_error([&] { world_->all_gather(t, out); }, {"all_gather (mpi)", "input is not contiguous"});
}

TEST_F(SingleRank, RejectsTensorsNotOnTheCpu) {
  // A meta tensor stands in for a CUDA one: the check is "not CPU".
  torch::Tensor t = torch::empty({4}, torch::TensorOptions().dtype(torch::kFloat).device(torch::kMeta));
  expect_error([&] { world_->all_reduce(t); }, {"all_reduce (mpi)", "tensor is on meta", "CPU tensors", "NCCL"});
  expect_error([&] { world_->send(t, 0); }, {"send (mpi)", "is on meta"});
}

TEST_F(SingleRank, RejectsUndefinedAndUnsupported) {
  torch::Tensor undefined;
  expect_error([&] { world_->all_reduce(undefined); }, {"all_reduce (mpi)", "undefined"});
  torch::Tensor complex = torch::ones({2}, torch::kComplexFloat);
  expect_error([&] { world_->all_reduce(complex); }, {"all_reduce (mpi)", "ComplexFloat", "not supported"});
}

TEST_F(SingleRank, RejectsSizeAndDtypeMismatches) {
  torch::Tensor in = torch::ones({6}, torch::kFloat);
  torch::Tensor small = torch::empty({5}, torch::kFloat);
  expect_error([&] { world_->all_gather(in, small); },
               {"all_gather (mpi)", "output has 5 elements", "input elements 6"});
  expect_error([&] { world_->reduce_scatter(in, small); }, {"reduce_scatter (mpi)", "input has 6 elements"});
  torch::Tensor doubles = torch::empty({6}, torch::kDouble);
  expect_error([&] { world_->all_gather(in, doubles); }, {"all_gather (mpi)", "Float", "Double"});
  expect_error([&] { world_->reduce_scatter(in, in); }, {"reduce_scatter (mpi)", "share memory"});
}

TEST_F(SingleRank, RejectsBadAllToAllCounts) {
  torch::Tensor in = torch::ones({4, 2}, torch::kFloat);
  torch::Tensor out = torch::empty({4, 2}, torch::kFloat);
  expect_error(
      [&] {
        world_->all_to_all(in, out, {4, 0}, {4});
      },
      {"all_to_all (mpi)", "send_counts", "one per rank (1)"});
  expect_error([&] { world_->all_to_all(in, out, {3}, {4}); }, {"send_counts [3] sum to 3 rows but input has 4"});
  expect_error([&] { world_->all_to_all(in, out, {4}, {-4}); }, {"recv_counts [-4] has a negative count"});
  torch::Tensor wide = torch::empty({4, 3}, torch::kFloat);
  expect_error([&] { world_->all_to_all(in, wide, {4}, {4}); }, {"differ past dim 0", "[4, 2]", "[4, 3]"});
  torch::Tensor scalar = torch::ones({}, torch::kFloat);
  expect_error([&] { world_->all_to_all(scalar, out, {1}, {4}); }, {"at least one dimension"});
}

TEST_F(SingleRank, RejectsBadPeers) {
  torch::Tensor t = torch::ones({2}, torch::kFloat);
  expect_error([&] { world_->broadcast(t, 1); }, {"broadcast (mpi)", "root 1 is outside the group of 1 ranks"});
  expect_error([&] { world_->broadcast(t, -1); }, {"root -1"});
  expect_error([&] { world_->send(t, 0); }, {"send (mpi)", "dst 0 is this rank", "deadlock"});
  expect_error([&] { world_->recv(t, 0); }, {"recv (mpi)", "src 0 is this rank"});
  expect_error([&] { world_->send(t, 2); }, {"send (mpi)", "dst 2 is outside"});
}

TEST_F(SingleRank, RejectsBadSplitGroups) {
  expect_error([&] { world_->split({}); }, {"split (mpi)", "empty"});
  expect_error([&] { world_->split({0, 1}); }, {"split (mpi)", "rank 1 in [0, 1] is outside"});
  expect_error([&] { world_->split({0, 0}); }, {"ascending and distinct"});
}

TEST_F(SingleRank, RejectsTensorsOverMpisIntCount) {
  // torch::empty does not touch its pages, so 2 GiB of address space is cheap;
  // the check throws before anything reads them.
  const int64_t too_many = int64_t{INT_MAX} + 1;
  torch::Tensor huge = torch::empty({too_many}, torch::kByte);
  expect_error([&] { world_->all_reduce(huge); },
               {"all_reduce (mpi)", "tensor has 2147483648 elements", "int count limit (2147483647)"});
  torch::Tensor out = torch::empty({too_many}, torch::kByte);
  expect_error([&] { world_->all_to_all(huge, out, {too_many}, {too_many}); },
               {"all_to_all (mpi)", "input has 2147483648 elements"});
  EXPECT_EQ(world_->stats().count("all_reduce"), 0u);
}

TEST_F(SingleRank, CommunicatorsAreIndependent) {
  auto other = make_world_communicator(30.0);
  torch::Tensor t = torch::ones({1}, torch::kFloat);
  other->all_reduce(t);
  EXPECT_EQ(other->stats().at("all_reduce").calls, 1);
  EXPECT_EQ(world_->stats().count("all_reduce"), 0u);
}

TEST(MpiRuntimeDeathTest, CheckMpiAbortsNamingTheCallAndRank) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(
      {
        mpi_init();
        check_mpi(MPI_ERR_COUNT, "MPI_Allreduce(MPI_IN_PLACE, data, count)");
      },
      ::testing::ExitedWithCode(1), "moetrain: rank 0: MPI_Allreduce failed: MPI_ERR_COUNT.*; aborting the job");
}

TEST(MpiRuntime, InitIsIdempotent) {
  mpi_init();
  mpi_init();
  EXPECT_EQ(world_size(), 1);
  EXPECT_FALSE(mpi_finalized());
}

}  // namespace
}  // namespace moetrain::parallel
