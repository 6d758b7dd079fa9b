// The NCCL communicator on one GPU (world size 1): every operation, the
// stream ordering without host waits, host tensors through the MPI twin,
// stats and argument errors. Skipped, saying why, where the
// build has no NCCL or the machine no GPU.
#include <gtest/gtest.h>

#include <torch/cuda.h>
#if __has_include(<ATen/cuda/Sleep.h>)
#include <ATen/cuda/Sleep.h>
#include <c10/cuda/CUDAStream.h>
#endif

#include "parallel/comm_benchmark.h"
#include "parallel/mpi_communicator.h"
#include "parallel/nccl_communicator.h"

namespace moetrain::parallel {
namespace {

class NcclSingleGpu : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!nccl_compiled()) GTEST_SKIP() << "this build has no NCCL backend (MOETRAIN_WITH_NCCL=OFF)";
    if (!torch::cuda::is_available()) GTEST_SKIP() << "no CUDA device on this machine";
    world_ = make_world_communicator(60.0);
    nccl_ = make_nccl_communicator(*world_, 0, 60.0);
  }
  torch::TensorOptions on_gpu(torch::ScalarType dtype) const {
    return torch::TensorOptions().dtype(dtype).device(torch::kCUDA, 0);
  }
  std::unique_ptr<Communicator> world_;
  std::unique_ptr<Communicator> nccl_;
};

TEST(NcclFactory, FailsClearlyWithoutNcclOrGpu) {
  if (nccl_compiled() && torch::cuda::is_available()) GTEST_SKIP() << "NCCL and a GPU are present";
  auto world = make_world_communicator(30.0);
  try {
    make_nccl_communicator(*world, 0, 30.0);
    ADD_FAILURE() << "make_nccl_communicator succeeded without NCCL or a GPU";
  } catch (const CommunicatorError& e) {
    const std::string message = e.what();
    if (nccl_compiled()) {
      EXPECT_NE(message.find("CUDA device 0 does not exist"), std::string::npos) << message;
    } else {
      EXPECT_NE(message.find("no NCCL backend"), std::string::npos) << message;
    }
  }
}

TEST_F(NcclSingleGpu, IsAWorldOfOne) {
  EXPECT_EQ(nccl_->backend(), "nccl");
  EXPECT_EQ(nccl_->size(), 1);
  EXPECT_EQ(nccl_->rank(), 0);
}

TEST_F(NcclSingleGpu, EveryOpEveryDtype) {
  for (auto dtype : {torch::kFloat, torch::kDouble, torch::kBFloat16, torch::kHalf, torch::kInt, torch::kLong,
                     torch::kChar, torch::kByte, torch::kBool}) {
    SCOPED_TRACE(c10::toString(dtype));
    const torch::Tensor x = ((torch::arange(33, on_gpu(torch::kLong)) * 7) % 5).to(dtype);
    for (auto op : {ReduceOp::Sum, ReduceOp::Max, ReduceOp::Min}) {
      torch::Tensor t = x.clone();
      nccl_->all_reduce(t, op);
      EXPECT_TRUE(torch::equal(t, x));
      torch::Tensor out = torch::empty({33}, on_gpu(dtype));
      nccl_->reduce_scatter(x, out, op);
      EXPECT_TRUE(torch::equal(out, x));
    }
    torch::Tensor gathered = torch::empty({33}, on_gpu(dtype));
    nccl_->all_gather(x, gathered);
    EXPECT_TRUE(torch::equal(gathered, x));
    torch::Tensor b = x.clone();
    nccl_->broadcast(b, 0);
    EXPECT_TRUE(torch::equal(b, x));
    torch::Tensor rows = x.reshape({11, 3});
    torch::Tensor moved = torch::empty({11, 3}, on_gpu(dtype));
    nccl_->all_to_all(rows, moved, {11}, {11});
    EXPECT_TRUE(torch::equal(moved, rows));
  }
  nccl_->barrier();
}

TEST_F(NcclSingleGpu, ResultIsOrderedAfterWorkOnTheCurrentStream) {
  // A long chain of kernels on the current stream produces the input; the
  // all_reduce must see its final value, and work queued after must see the
  // result.
  torch::Tensor t = torch::zeros({1 << 20}, on_gpu(torch::kFloat));
  for (int i = 0; i < 50; ++i) t.add_(1.0);
  nccl_->all_reduce(t);
  torch::Tensor after = t * 2;
  EXPECT_EQ(after.min().item<float>(), 100.0f);
}

TEST_F(NcclSingleGpu, StatsMatchTheMpiAccounting) {
  torch::Tensor t = torch::ones({16}, on_gpu(torch::kBFloat16));  // 32 bytes
  nccl_->all_reduce(t);
  nccl_->broadcast(t, 0);
  nccl_->barrier();
  const CommStats& s = nccl_->stats();
  EXPECT_EQ(s.at("all_reduce").bytes, 64);
  EXPECT_EQ(s.at("broadcast").bytes, 32);
  EXPECT_EQ(s.at("barrier").calls, 1);
  EXPECT_GT(s.at("all_reduce").seconds, 0.0);
}

TEST_F(NcclSingleGpu, SplitToItself) {
  auto sub = nccl_->split({0});
  EXPECT_EQ(sub->backend(), "nccl");
  torch::Tensor t = torch::full({4}, 2.5, on_gpu(torch::kFloat));
  sub->all_reduce(t);
  EXPECT_EQ(t.sum().item<float>(), 10.0f);
}

TEST_F(NcclSingleGpu, HostTensorsGoThroughTheMpiTwin) {
  torch::Tensor counts = torch::tensor({3, 4}, torch::kLong);
  nccl_->all_reduce(counts);
  EXPECT_EQ(counts[1].item<int64_t>(), 4);
  torch::Tensor rows = torch::arange(6, torch::kLong).reshape({3, 2}), moved = torch::empty({3, 2}, torch::kLong);
  nccl_->all_to_all(rows, moved, {3}, {3});
  EXPECT_TRUE(torch::equal(moved, rows));
  EXPECT_EQ(nccl_->stats().at("all_reduce").calls, 1);
  EXPECT_EQ(nccl_->stats().at("all_reduce").bytes, 32);
  EXPECT_EQ(nccl_->stats().at("all_to_all").calls, 1);
}

#if __has_include(<ATen/cuda/Sleep.h>)
TEST_F(NcclSingleGpu, ReturnsBeforeTheDeviceHasRunAndTimesOnItsStream) {
  // About half a second of device time queued before the collective: the
  // call returns at once, the caller's stream is still busy, and the
  // collective's seconds leave that compute out.
  torch::Tensor t = torch::ones({1024}, on_gpu(torch::kFloat));
  at::cuda::sleep(int64_t{1} << 30);
  nccl_->all_reduce(t);
  EXPECT_FALSE(c10::cuda::getCurrentCUDAStream(0).query());
  const double seconds = nccl_->stats().at("all_reduce").seconds;  // waits for it
  EXPECT_TRUE(c10::cuda::getCurrentCUDAStream(0).query());
  EXPECT_GT(seconds, 0.0);
  EXPECT_LT(seconds, 0.1);
  EXPECT_EQ(t.sum().item<float>(), 1024.0f);
}
#endif

TEST_F(NcclSingleGpu, RejectsNonContiguousTensors) {
  torch::Tensor strided = torch::ones({4, 4}, on_gpu(torch::kFloat)).t();
  EXPECT_THROW(nccl_->all_reduce(strided), CommunicatorError);
  torch::Tensor t = torch::ones({4}, on_gpu(torch::kFloat));
  EXPECT_THROW(nccl_->send(t, 0), CommunicatorError);
  EXPECT_THROW(make_nccl_communicator(*nccl_, 0, 10.0), CommunicatorError);  // bootstrap must be MPI
}

TEST_F(NcclSingleGpu, BenchmarkRunsOnTheGpu) {
  CommBenchOptions options;
  options.sizes_bytes = {4096, 1 << 20};
  options.warmup = 2;
  options.iters = 5;
  options.device = torch::Device(torch::kCUDA, 0);
  options.dtype = torch::kBFloat16;
  std::ostringstream out;
  const auto rows = run_comm_benchmark(*nccl_, options, out);
  EXPECT_EQ(rows.size(), 10u);  // send_recv skipped on one rank
  std::cout << out.str();
  for (const auto& row : rows) EXPECT_GT(row.time_us, 0.0) << row.op;
}

}  // namespace
}  // namespace moetrain::parallel
