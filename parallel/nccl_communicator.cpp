// The NCCL backend. Compiled only when LibTorch has CUDA and NCCL was found
// (parallel/CMakeLists.txt); see nccl_communicator.h for the stream contract.
#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <chrono>
#include <cstring>
#include <thread>

#include "parallel/collective_checks.h"
#include "parallel/mpi_communicator.h"
#include "parallel/mpi_runtime.h"
#include "parallel/watchdog.h"

namespace moetrain::parallel {
namespace {

// A failed CUDA or NCCL call leaves peers inside a collective and the device
// in an unknown state: end the job with one line naming the call.
std::string call_name(const char* expr) {
  std::string name(expr);
  return name.substr(0, name.find('('));
}

void check_cuda(cudaError_t rc, const char* expr) {
  if (rc == cudaSuccess) return;
  abort_job(call_name(expr) + " failed: " + cudaGetErrorString(rc) + "; aborting the job");
}

void check_nccl(ncclResult_t rc, const char* expr) {
  if (rc == ncclSuccess) return;
  abort_job(call_name(expr) + " failed: " + ncclGetErrorString(rc) + " (" + ncclGetLastError(nullptr) +
            "); aborting the job");
}

#define MOETRAIN_CUDA_CHECK(expr) check_cuda((expr), #expr)
#define MOETRAIN_NCCL_CHECK(expr) check_nccl((expr), #expr)

std::string op_name(const char* op) { return std::string(op) + " (nccl)"; }

ncclDataType_t nccl_type(const std::string& op, torch::ScalarType t) {
  switch (t) {
    case torch::kFloat: return ncclFloat32;
    case torch::kDouble: return ncclFloat64;
    case torch::kHalf: return ncclFloat16;
    case torch::kBFloat16: return ncclBfloat16;
    case torch::kInt: return ncclInt32;
    case torch::kLong: return ncclInt64;
    case torch::kChar: return ncclInt8;
    case torch::kByte: return ncclUint8;
    case torch::kBool: return ncclUint8;  // one byte, 0 or 1; reduced with Max/Min
    default:
      throw CommunicatorError(op + ": dtype " + std::string(c10::toString(t)) +
                              " is not supported (float32, float64, bfloat16, float16, int32, int64, int8, "
                              "uint8, bool)");
  }
}

ncclRedOp_t nccl_op(ReduceOp op, torch::ScalarType t) {
  // A byte sum of bools could reach 2 and break torch's bool invariant; OR/AND
  // match the MPI backend's logical reduction.
  if (t == torch::kBool) return op == ReduceOp::Min ? ncclMin : ncclMax;
  switch (op) {
    case ReduceOp::Sum: return ncclSum;
    case ReduceOp::Max: return ncclMax;
    case ReduceOp::Min: return ncclMin;
  }
  return ncclSum;
}

}  // namespace

struct NcclCommunicator::State {
  std::unique_ptr<MpiCommunicator> mpi;  // the twin over the same ranks
  ncclComm_t comm = nullptr;
  cudaStream_t stream = nullptr;
  cudaEvent_t ready = nullptr;  // recorded on the caller's stream
  cudaEvent_t done = nullptr;   // recorded on ours after the NCCL kernels
  torch::Tensor barrier_buffer;
  int device = 0;
  int64_t rank = 0;
  int64_t size = 1;
  double timeout_s = 0;

  ~State() {
    // At process exit the CUDA runtime may already be gone; errors here are
    // ignored because nothing can be done about them.
    if (comm != nullptr) {
      cudaSetDevice(device);
      if (stream != nullptr) cudaStreamSynchronize(stream);
      ncclCommDestroy(comm);
    }
    if (ready != nullptr) cudaEventDestroy(ready);
    if (done != nullptr) cudaEventDestroy(done);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  void check_device_tensor(const std::string& op, const char* what, const torch::Tensor& t) const {
    check_tensor(op, what, t, TensorPlace::Cuda);
    if (t.device().index() != device) {
      throw CommunicatorError(op + ": " + what + " is on " + t.device().str() +
                              " but this communicator uses cuda:" + std::to_string(device));
    }
  }

  // Steps 1-4 of the header around `enqueue`, inside a watchdog scope, adding
  // the call to `stats` when it completes.
  template <class Enqueue>
  void run(CommStats& stats, const char* op, int64_t stat_bytes, int64_t payload_bytes, Enqueue enqueue) {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
    const auto start = std::chrono::steady_clock::now();
    ncclComm_t to_abort = comm;
    auto scope = Watchdog::instance().watch(op, payload_bytes, timeout_s, [to_abort] { ncclCommAbort(to_abort); });
    cudaStream_t caller = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
    MOETRAIN_CUDA_CHECK(cudaEventRecord(ready, caller));
    MOETRAIN_CUDA_CHECK(cudaStreamWaitEvent(stream, ready, 0));
    enqueue();
    MOETRAIN_CUDA_CHECK(cudaEventRecord(done, stream));
    MOETRAIN_CUDA_CHECK(cudaStreamWaitEvent(caller, done, 0));
    wait_done(op);
    scope.close();
    OpStats& s = stats[op];
    s.calls += 1;
    s.bytes += stat_bytes;
    s.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  }

  // Polls rather than cudaEventSynchronize so that an asynchronous NCCL error
  // is noticed, and so the watchdog (not a blocked driver call) decides when
  // waiting has gone on too long.
  void wait_done(const char* op) const {
    for (int polls = 0;; ++polls) {
      cudaError_t rc = cudaEventQuery(done);
      if (rc == cudaSuccess) return;
      if (rc != cudaErrorNotReady) check_cuda(rc, "cudaEventQuery");
      if (polls % 64 == 63) {
        ncclResult_t async_error = ncclSuccess;
        MOETRAIN_NCCL_CHECK(ncclCommGetAsyncError(comm, &async_error));
        if (async_error != ncclSuccess && async_error != ncclInProgress) {
          ncclCommAbort(comm);
          abort_job(std::string(op) + ": NCCL reported " + ncclGetErrorString(async_error) + " (" +
                    ncclGetLastError(comm) + "); aborting the job");
        }
      }
      // Spin briefly for small collectives, then stop burning a core.
      if (polls < 1000) {
        std::this_thread::yield();
      } else {
        std::this_thread::sleep_for(std::chrono::microseconds(50));
      }
    }
  }
};

namespace {

// Creates the NCCL communicator over the ranks of `mpi` (collective over it).
std::unique_ptr<NcclCommunicator::State> make_state(std::unique_ptr<MpiCommunicator> mpi, int device,
                                                    double timeout_s) {
  auto state = std::make_unique<NcclCommunicator::State>();
  state->device = device;
  state->timeout_s = timeout_s;
  state->rank = mpi->rank();
  state->size = mpi->size();

  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (mpi->rank() == 0) MOETRAIN_NCCL_CHECK(ncclGetUniqueId(&id));
  {
    auto scope = Watchdog::instance().watch("nccl_unique_id_broadcast", sizeof id, timeout_s);
    MOETRAIN_MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, mpi->mpi_comm()));
  }

  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  MOETRAIN_CUDA_CHECK(cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking));
  MOETRAIN_CUDA_CHECK(cudaEventCreateWithFlags(&state->ready, cudaEventDisableTiming));
  MOETRAIN_CUDA_CHECK(cudaEventCreateWithFlags(&state->done, cudaEventDisableTiming));
  {
    // Blocks until every rank has joined: a rank that never comes is a hang
    // the watchdog must end.
    auto scope = Watchdog::instance().watch("ncclCommInitRank", 0, timeout_s);
    MOETRAIN_NCCL_CHECK(
        ncclCommInitRank(&state->comm, static_cast<int>(state->size), id, static_cast<int>(state->rank)));
  }
  state->barrier_buffer = torch::ones({1}, torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA, device));
  state->mpi = std::move(mpi);
  return state;
}

}  // namespace

NcclCommunicator::NcclCommunicator(std::unique_ptr<State> state) : state_(std::move(state)) {}
NcclCommunicator::~NcclCommunicator() = default;

int64_t NcclCommunicator::rank() const { return state_->rank; }
int64_t NcclCommunicator::size() const { return state_->size; }
int NcclCommunicator::device_index() const { return state_->device; }

void NcclCommunicator::all_reduce(torch::Tensor& tensor, ReduceOp op) {
  const std::string name = op_name("all_reduce");
  State& s = *state_;
  s.check_device_tensor(name, "tensor", tensor);
  const ncclDataType_t type = nccl_type(name, tensor.scalar_type());
  void* data = tensor.data_ptr();
  const size_t count = tensor.numel();
  const ncclRedOp_t red = nccl_op(op, tensor.scalar_type());
  s.run(stats_, "all_reduce", 2 * tensor.nbytes(), tensor.nbytes(),
        [&] { MOETRAIN_NCCL_CHECK(ncclAllReduce(data, data, count, type, red, s.comm, s.stream)); });
}

void NcclCommunicator::reduce_scatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) {
  const std::string name = op_name("reduce_scatter");
  State& s = *state_;
  s.check_device_tensor(name, "input", input);
  s.check_device_tensor(name, "output", output);
  check_same_dtype(name, input, output);
  check_scatter_gather_sizes(name, input, "input", output, "output", s.size);
  check_no_overlap(name, input, output);
  const ncclDataType_t type = nccl_type(name, input.scalar_type());
  const ncclRedOp_t red = nccl_op(op, input.scalar_type());
  const void* in = input.data_ptr();
  void* out = output.data_ptr();
  const size_t count = output.numel();
  s.run(stats_, "reduce_scatter", input.nbytes(), input.nbytes(),
        [&] { MOETRAIN_NCCL_CHECK(ncclReduceScatter(in, out, count, type, red, s.comm, s.stream)); });
}

void NcclCommunicator::all_gather(const torch::Tensor& input, torch::Tensor& output) {
  const std::string name = op_name("all_gather");
  State& s = *state_;
  s.check_device_tensor(name, "input", input);
  s.check_device_tensor(name, "output", output);
  check_same_dtype(name, input, output);
  check_scatter_gather_sizes(name, output, "output", input, "input", s.size);
  check_no_overlap(name, input, output);
  const ncclDataType_t type = nccl_type(name, input.scalar_type());
  const void* in = input.data_ptr();
  void* out = output.data_ptr();
  const size_t count = input.numel();
  s.run(stats_, "all_gather", output.nbytes(), output.nbytes(),
        [&] { MOETRAIN_NCCL_CHECK(ncclAllGather(in, out, count, type, s.comm, s.stream)); });
}

void NcclCommunicator::broadcast(torch::Tensor& tensor, int64_t root) {
  const std::string name = op_name("broadcast");
  State& s = *state_;
  s.check_device_tensor(name, "tensor", tensor);
  check_peer(name, "root", root, s.size);
  const ncclDataType_t type = nccl_type(name, tensor.scalar_type());
  void* data = tensor.data_ptr();
  const size_t count = tensor.numel();
  s.run(stats_, "broadcast", tensor.nbytes(), tensor.nbytes(),
        [&] { MOETRAIN_NCCL_CHECK(ncclBroadcast(data, data, count, type, static_cast<int>(root), s.comm, s.stream)); });
}

void NcclCommunicator::all_to_all(const torch::Tensor& input, torch::Tensor& output,
                                  const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts) {
  const std::string name = op_name("all_to_all");
  State& s = *state_;
  s.check_device_tensor(name, "input", input);
  s.check_device_tensor(name, "output", output);
  const int64_t row = check_all_to_all(name, input, output, send_counts, recv_counts, s.size);
  check_no_overlap(name, input, output);
  const ncclDataType_t type = nccl_type(name, input.scalar_type());
  const int64_t element = input.element_size();
  const char* in = static_cast<const char*>(input.data_ptr());
  char* out = static_cast<char*>(output.data_ptr());
  s.run(stats_, "all_to_all", input.nbytes(), input.nbytes(), [&] {
    // One group: NCCL posts every send and recv together, so no ordering of
    // peers can deadlock, and the rows a rank keeps go through NCCL's
    // self-send (a device copy).
    MOETRAIN_NCCL_CHECK(ncclGroupStart());
    int64_t soff = 0, roff = 0;
    for (int64_t r = 0; r < s.size; ++r) {
      const int64_t scount = send_counts[r] * row, rcount = recv_counts[r] * row;
      if (scount > 0) {
        MOETRAIN_NCCL_CHECK(ncclSend(in + soff * element, scount, type, static_cast<int>(r), s.comm, s.stream));
      }
      if (rcount > 0) {
        MOETRAIN_NCCL_CHECK(ncclRecv(out + roff * element, rcount, type, static_cast<int>(r), s.comm, s.stream));
      }
      soff += scount;
      roff += rcount;
    }
    MOETRAIN_NCCL_CHECK(ncclGroupEnd());
  });
}

void NcclCommunicator::send(const torch::Tensor& tensor, int64_t dst) {
  const std::string name = op_name("send");
  State& s = *state_;
  s.check_device_tensor(name, "tensor", tensor);
  check_peer(name, "dst", dst, s.size);
  check_not_self(name, "dst", dst, s.rank);
  const ncclDataType_t type = nccl_type(name, tensor.scalar_type());
  const void* data = tensor.data_ptr();
  const size_t count = tensor.numel();
  s.run(stats_, "send", tensor.nbytes(), tensor.nbytes(),
        [&] { MOETRAIN_NCCL_CHECK(ncclSend(data, count, type, static_cast<int>(dst), s.comm, s.stream)); });
}

void NcclCommunicator::recv(torch::Tensor& tensor, int64_t src) {
  const std::string name = op_name("recv");
  State& s = *state_;
  s.check_device_tensor(name, "tensor", tensor);
  check_peer(name, "src", src, s.size);
  check_not_self(name, "src", src, s.rank);
  const ncclDataType_t type = nccl_type(name, tensor.scalar_type());
  void* data = tensor.data_ptr();
  const size_t count = tensor.numel();
  s.run(stats_, "recv", tensor.nbytes(), tensor.nbytes(),
        [&] { MOETRAIN_NCCL_CHECK(ncclRecv(data, count, type, static_cast<int>(src), s.comm, s.stream)); });
}

void NcclCommunicator::send_recv(const std::vector<torch::Tensor>& sends, int64_t dst,
                                 std::vector<torch::Tensor>& recvs, int64_t src) {
  const std::string name = op_name("send_recv");
  State& s = *state_;
  check_send_recv_peers(name, sends.size(), dst, recvs.size(), src, s.rank, s.size);
  std::vector<ncclDataType_t> send_types, recv_types;
  int64_t bytes = 0;
  for (size_t i = 0; i < sends.size(); ++i) {
    const std::string what = "sends[" + std::to_string(i) + "]";
    s.check_device_tensor(name, what.c_str(), sends[i]);
    send_types.push_back(nccl_type(name, sends[i].scalar_type()));
    bytes += sends[i].nbytes();
  }
  for (size_t i = 0; i < recvs.size(); ++i) {
    const std::string what = "recvs[" + std::to_string(i) + "]";
    s.check_device_tensor(name, what.c_str(), recvs[i]);
    recv_types.push_back(nccl_type(name, recvs[i].scalar_type()));
    bytes += recvs[i].nbytes();
  }
  check_send_recv_buffers(name, sends, recvs);
  if (sends.empty() && recvs.empty()) return;

  s.run(stats_, "send_recv", bytes, bytes, [&] {
    // One group: NCCL starts every send and receive together, so two ranks
    // sending to each other cannot wait on one another.
    MOETRAIN_NCCL_CHECK(ncclGroupStart());
    for (size_t i = 0; i < recvs.size(); ++i) {
      MOETRAIN_NCCL_CHECK(
          ncclRecv(recvs[i].data_ptr(), recvs[i].numel(), recv_types[i], static_cast<int>(src), s.comm, s.stream));
    }
    for (size_t i = 0; i < sends.size(); ++i) {
      MOETRAIN_NCCL_CHECK(
          ncclSend(sends[i].data_ptr(), sends[i].numel(), send_types[i], static_cast<int>(dst), s.comm, s.stream));
    }
    MOETRAIN_NCCL_CHECK(ncclGroupEnd());
  });
}

void NcclCommunicator::barrier() {
  State& s = *state_;
  void* data = s.barrier_buffer.data_ptr();
  s.run(stats_, "barrier", 0, 0,
        [&] { MOETRAIN_NCCL_CHECK(ncclAllReduce(data, data, 1, ncclFloat32, ncclMax, s.comm, s.stream)); });
}

std::unique_ptr<Communicator> NcclCommunicator::split(const std::vector<int64_t>& ranks) {
  State& s = *state_;
  check_split_ranks(ranks, s.rank, s.size, "nccl");
  std::unique_ptr<Communicator> sub = s.mpi->split(ranks);
  std::unique_ptr<MpiCommunicator> sub_mpi(static_cast<MpiCommunicator*>(sub.release()));
  return std::make_unique<NcclCommunicator>(make_state(std::move(sub_mpi), s.device, s.timeout_s));
}

bool nccl_compiled() { return true; }

std::unique_ptr<Communicator> make_nccl_communicator(const Communicator& mpi_bootstrap, int device_index,
                                                     double timeout_s) {
  const auto* mpi = dynamic_cast<const MpiCommunicator*>(&mpi_bootstrap);
  if (mpi == nullptr) {
    throw CommunicatorError("make_nccl_communicator: the bootstrap communicator must be the MPI backend (got " +
                            mpi_bootstrap.backend() + ")");
  }
  const int devices = c10::cuda::device_count();
  if (device_index < 0 || device_index >= devices) {
    throw CommunicatorError("make_nccl_communicator: CUDA device " + std::to_string(device_index) +
                            " does not exist on rank " + std::to_string(world_rank()) + " (" + std::to_string(devices) +
                            " visible)");
  }
  MPI_Comm twin = MPI_COMM_NULL;
  {
    auto scope = Watchdog::instance().watch("make_nccl_communicator", 0, timeout_s);
    MOETRAIN_MPI_CHECK(MPI_Comm_dup(mpi->mpi_comm(), &twin));
  }
  auto twin_comm = std::make_unique<MpiCommunicator>(twin, timeout_s);
  return std::make_unique<NcclCommunicator>(make_state(std::move(twin_comm), device_index, timeout_s));
}

}  // namespace moetrain::parallel
