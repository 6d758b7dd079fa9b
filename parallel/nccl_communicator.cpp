// The NCCL backend. Compiled only when LibTorch has CUDA and NCCL was found
// (parallel/CMakeLists.txt); see nccl_communicator.h for the stream contract.
#include "parallel/nccl_communicator.h"

#include <cuda_runtime.h>
#include <nccl.h>

#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include <atomic>
#include <chrono>
#include <cstring>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

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

// ncclInProgress is a nonblocking communicator's "taken, still running".
void check_nccl(ncclResult_t rc, const char* expr) {
  if (rc == ncclSuccess || rc == ncclInProgress) return;
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

// The NCCL handle, shared with the watchdog's hooks so that a hook never sees
// a destroyed communicator. Every NCCL call on `comm` holds `mutex`; the
// watchdog's abort takes it too and leaves `comm` null, so the main thread
// never touches an aborted communicator.
struct NcclHandle {
  std::mutex mutex;
  ncclComm_t comm = nullptr;

  // On the watchdog thread, after its line is out.
  void abort() {
    std::lock_guard<std::mutex> lock(mutex);
    if (comm != nullptr) ncclCommAbort(comm);
    comm = nullptr;
  }

  // On the watchdog thread, while an operation is queued: ends the job with
  // NCCL's message on an asynchronous error (a peer's network failed).
  // Skipped while the main thread holds the lock; the next poll looks again.
  void check_async_error(const std::string& op) {
    std::unique_lock<std::mutex> lock(mutex, std::try_to_lock);
    if (!lock.owns_lock() || comm == nullptr) return;
    ncclResult_t state = ncclSuccess;
    if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) return;
    if (state == ncclSuccess || state == ncclInProgress) return;
    if (!announce_abort(op + ": NCCL reported " + ncclGetErrorString(state) + " (" + ncclGetLastError(comm) +
                        "); aborting the job")) {
      wait_for_abort();
    }
    ncclCommAbort(comm);
    comm = nullptr;
    end_job(1);
  }
};

struct NcclCommunicator::State {
  // An operation queued on `stream` whose events have not been read yet.
  struct Queued {
    std::string op;
    int64_t bytes = 0;
    cudaEvent_t start = nullptr;  // timing events around the NCCL kernels
    cudaEvent_t stop = nullptr;
    Watchdog::Scope scope;  // closed by the watchdog when `stop` completes
  };

  std::unique_ptr<MpiCommunicator> mpi;  // the twin over the same ranks
  std::shared_ptr<NcclHandle> handle = std::make_shared<NcclHandle>();
  cudaStream_t stream = nullptr;
  cudaEvent_t ready = nullptr;  // recorded on the caller's stream
  std::vector<cudaEvent_t> spare_events;
  std::deque<Queued> queued;
  torch::Tensor barrier_buffer;
  int device = 0;
  int64_t rank = 0;
  int64_t size = 1;
  double timeout_s = 0;

  ~State() {
    // At process exit the CUDA runtime may already be gone; errors here are
    // ignored because nothing can be done about them.
    cudaSetDevice(device);
    finalize();
    queued.clear();  // closes the watchdog scopes before their events go
    for (auto* e : spare_events) cudaEventDestroy(e);
    if (ready != nullptr) cudaEventDestroy(ready);
    if (stream != nullptr) cudaStreamDestroy(stream);
  }

  // Flushes and destroys the communicator, waiting at most timeout_s;
  // aborts it if that did not finish (a peer gone, an error).
  void finalize() {
    std::unique_lock<std::mutex> lock(handle->mutex);
    ncclComm_t comm = handle->comm;
    if (comm == nullptr || job_aborting()) return;
    ncclResult_t state = ncclCommFinalize(comm);
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::duration<double>(timeout_s);
    while (state == ncclInProgress || state == ncclSuccess) {
      if (ncclCommGetAsyncError(comm, &state) != ncclSuccess) break;
      if (state != ncclInProgress || std::chrono::steady_clock::now() > deadline) break;
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    state == ncclSuccess ? ncclCommDestroy(comm) : ncclCommAbort(comm);
    handle->comm = nullptr;
  }

  void check_device_tensor(const std::string& op, const char* what, const torch::Tensor& t) const {
    check_tensor(op, what, t, TensorPlace::Cuda);
    if (t.device().index() != device) {
      throw CommunicatorError(op + ": " + what + " is on " + t.device().str() +
                              " but this communicator uses cuda:" + std::to_string(device));
    }
  }

  // Makes the NCCL calls of `calls(comm)` under the lock, then waits until
  // the nonblocking communicator has taken them (ncclInProgress clears).
  template <class Calls>
  void locked(const std::string& op, Calls calls) {
    std::unique_lock<std::mutex> lock(handle->mutex);
    if (handle->comm == nullptr || job_aborting()) {
      lock.unlock();
      wait_for_abort();
    }
    calls(handle->comm);
    wait_taken(lock, *handle, op);
  }

  static void wait_taken(std::unique_lock<std::mutex>& lock, NcclHandle& h, const std::string& op) {
    for (int polls = 0;; ++polls) {
      ncclResult_t state = ncclSuccess;
      MOETRAIN_NCCL_CHECK(ncclCommGetAsyncError(h.comm, &state));
      if (state == ncclSuccess) return;
      if (state != ncclInProgress) {
        abort_job(op + ": NCCL reported " + ncclGetErrorString(state) + " (" + ncclGetLastError(h.comm) +
                  "); aborting the job");
      }
      lock.unlock();
      polls < 1000 ? std::this_thread::yield() : std::this_thread::sleep_for(std::chrono::microseconds(50));
      lock.lock();
      if (h.comm == nullptr) {  // the watchdog aborted it meanwhile
        lock.unlock();
        wait_for_abort();
      }
    }
  }

  cudaEvent_t take_event() {
    if (spare_events.empty()) {
      cudaEvent_t e = nullptr;
      MOETRAIN_CUDA_CHECK(cudaEventCreate(&e));  // with timing
      return e;
    }
    cudaEvent_t e = spare_events.back();
    spare_events.pop_back();
    return e;
  }

  // Steps 1-3 of the header around `enqueue(comm)`, with a watchdog scope
  // (`scope`: the caller's Communicator::scope_name, which names the group)
  // that ends when the operation has run on the device.
  template <class Enqueue>
  void run(CommStats& stats, const char* op, const std::string& scope, int64_t stat_bytes, int64_t payload_bytes,
           Enqueue enqueue) {
    c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
    collect(stats, /*wait=*/false);
    cudaStream_t caller = c10::cuda::getCurrentCUDAStream(static_cast<c10::DeviceIndex>(device)).stream();
    Queued q;
    q.op = op;
    q.bytes = stat_bytes;
    q.start = take_event();
    q.stop = take_event();
    MOETRAIN_CUDA_CHECK(cudaEventRecord(ready, caller));
    MOETRAIN_CUDA_CHECK(cudaStreamWaitEvent(stream, ready, 0));
    const std::string name = op_name(op);
    MOETRAIN_CUDA_CHECK(cudaEventRecord(q.start, stream));
    locked(name, enqueue);
    MOETRAIN_CUDA_CHECK(cudaEventRecord(q.stop, stream));
    MOETRAIN_CUDA_CHECK(cudaStreamWaitEvent(caller, q.stop, 0));
    q.scope = Watchdog::instance().watch_until(
        scope, payload_bytes, timeout_s,
        [stop = q.stop, h = handle, name] {
          if (cudaEventQuery(stop) != cudaErrorNotReady) return true;
          h->check_async_error(name);
          return false;
        },
        [h = handle] { h->abort(); });
    queued.push_back(std::move(q));
  }

  // Adds the operations that have run to `stats`, oldest first (one stream
  // runs them in order); with `wait`, waits for all of them.
  void collect(CommStats& stats, bool wait) {
    while (!queued.empty()) {
      Queued& q = queued.front();
      const cudaError_t rc = wait ? cudaEventSynchronize(q.stop) : cudaEventQuery(q.stop);
      if (rc == cudaErrorNotReady) return;
      if (rc != cudaSuccess && job_aborting()) wait_for_abort();
      check_cuda(rc, "cudaEventSynchronize");
      float ms = 0;
      MOETRAIN_CUDA_CHECK(cudaEventElapsedTime(&ms, q.start, q.stop));
      OpStats& s = stats[q.op];
      s.calls += 1;
      s.bytes += q.bytes;
      s.seconds += ms / 1000.0;
      q.scope.close();
      spare_events.push_back(q.start);
      spare_events.push_back(q.stop);
      queued.pop_front();
    }
  }
};

namespace {

ncclConfig_t nonblocking_config() {
  ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
  config.blocking = 0;
  return config;
}

// The state shell of a communicator over the ranks of `mpi`: stream, events
// and the barrier buffer; the NCCL communicator itself is made by the caller.
std::unique_ptr<NcclCommunicator::State> make_shell(std::unique_ptr<MpiCommunicator> mpi, int device,
                                                    double timeout_s) {
  auto state = std::make_unique<NcclCommunicator::State>();
  state->device = device;
  state->timeout_s = timeout_s;
  state->rank = mpi->rank();
  state->size = mpi->size();
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  MOETRAIN_CUDA_CHECK(cudaStreamCreateWithFlags(&state->stream, cudaStreamNonBlocking));
  MOETRAIN_CUDA_CHECK(cudaEventCreateWithFlags(&state->ready, cudaEventDisableTiming));
  state->barrier_buffer = torch::ones({1}, torch::TensorOptions().dtype(torch::kFloat).device(torch::kCUDA, device));
  state->mpi = std::move(mpi);
  return state;
}

// Waits, under the watchdog, until a communicator being created is ready.
void wait_created(NcclCommunicator::State& s, const std::string& op) {
  auto scope = Watchdog::instance().watch(op, 0, s.timeout_s, [h = s.handle] { h->abort(); });
  std::unique_lock<std::mutex> lock(s.handle->mutex);
  NcclCommunicator::State::wait_taken(lock, *s.handle, op);
}

// A new NCCL communicator over the ranks of `mpi` from a unique id broadcast
// over it (collective over it).
std::unique_ptr<NcclCommunicator::State> make_world_state(std::unique_ptr<MpiCommunicator> mpi, int device,
                                                          double timeout_s) {
  ncclUniqueId id;
  std::memset(&id, 0, sizeof id);
  if (mpi->rank() == 0) MOETRAIN_NCCL_CHECK(ncclGetUniqueId(&id));
  {
    auto scope = Watchdog::instance().watch("nccl_unique_id_broadcast", sizeof id, timeout_s);
    MOETRAIN_MPI_CHECK(MPI_Bcast(&id, sizeof id, MPI_BYTE, 0, mpi->mpi_comm()));
  }
  auto state = make_shell(std::move(mpi), device, timeout_s);
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(device));
  ncclConfig_t config = nonblocking_config();
  {
    std::lock_guard<std::mutex> lock(state->handle->mutex);
    MOETRAIN_NCCL_CHECK(ncclCommInitRankConfig(&state->handle->comm, static_cast<int>(state->size), id,
                                               static_cast<int>(state->rank), &config));
  }
  // Ready once every rank has joined: a rank that never comes is a hang the
  // watchdog must end.
  wait_created(*state, "ncclCommInitRankConfig");
  return state;
}

}  // namespace

NcclCommunicator::NcclCommunicator(std::unique_ptr<State> state) : state_(std::move(state)) {}
NcclCommunicator::~NcclCommunicator() = default;

int64_t NcclCommunicator::rank() const { return state_->rank; }
int64_t NcclCommunicator::size() const { return state_->size; }
int NcclCommunicator::device_index() const { return state_->device; }

void NcclCommunicator::set_label(const std::string& label) {
  Communicator::set_label(label);
  state_->mpi->set_label(label);  // host tensors go through the twin
}

void NcclCommunicator::settle_stats() const {
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(state_->device));
  state_->collect(stats_, /*wait=*/true);
}

namespace {

// Host tensors go to the MPI twin; the first tensor of a call decides.
bool on_host(const torch::Tensor& t) { return t.defined() && !t.is_cuda(); }

}  // namespace

void NcclCommunicator::all_reduce(torch::Tensor& tensor, ReduceOp op) {
  State& s = *state_;
  if (on_host(tensor)) return count_delegated(*s.mpi, "all_reduce", [&] { s.mpi->all_reduce(tensor, op); });
  const std::string name = op_name("all_reduce");
  s.check_device_tensor(name, "tensor", tensor);
  const ncclDataType_t type = nccl_type(name, tensor.scalar_type());
  void* data = tensor.data_ptr();
  const size_t count = tensor.numel();
  const ncclRedOp_t red = nccl_op(op, tensor.scalar_type());
  s.run(stats_, "all_reduce", scope_name(name), 2 * tensor.nbytes(), tensor.nbytes(),
        [&](ncclComm_t comm) { MOETRAIN_NCCL_CHECK(ncclAllReduce(data, data, count, type, red, comm, s.stream)); });
}

void NcclCommunicator::reduce_scatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) {
  State& s = *state_;
  if (on_host(input)) {
    return count_delegated(*s.mpi, "reduce_scatter", [&] { s.mpi->reduce_scatter(input, output, op); });
  }
  const std::string name = op_name("reduce_scatter");
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
  s.run(stats_, "reduce_scatter", scope_name(name), input.nbytes(), input.nbytes(),
        [&](ncclComm_t comm) { MOETRAIN_NCCL_CHECK(ncclReduceScatter(in, out, count, type, red, comm, s.stream)); });
}

void NcclCommunicator::all_gather(const torch::Tensor& input, torch::Tensor& output) {
  State& s = *state_;
  if (on_host(input)) return count_delegated(*s.mpi, "all_gather", [&] { s.mpi->all_gather(input, output); });
  const std::string name = op_name("all_gather");
  s.check_device_tensor(name, "input", input);
  s.check_device_tensor(name, "output", output);
  check_same_dtype(name, input, output);
  check_scatter_gather_sizes(name, output, "output", input, "input", s.size);
  check_no_overlap(name, input, output);
  const ncclDataType_t type = nccl_type(name, input.scalar_type());
  const void* in = input.data_ptr();
  void* out = output.data_ptr();
  const size_t count = input.numel();
  s.run(stats_, "all_gather", scope_name(name), output.nbytes(), output.nbytes(),
        [&](ncclComm_t comm) { MOETRAIN_NCCL_CHECK(ncclAllGather(in, out, count, type, comm, s.stream)); });
}

void NcclCommunicator::broadcast(torch::Tensor& tensor, int64_t root) {
  State& s = *state_;
  if (on_host(tensor)) return count_delegated(*s.mpi, "broadcast", [&] { s.mpi->broadcast(tensor, root); });
  const std::string name = op_name("broadcast");
  s.check_device_tensor(name, "tensor", tensor);
  check_peer(name, "root", root, s.size);
  const ncclDataType_t type = nccl_type(name, tensor.scalar_type());
  void* data = tensor.data_ptr();
  const size_t count = tensor.numel();
  s.run(stats_, "broadcast", scope_name(name), tensor.nbytes(), tensor.nbytes(), [&](ncclComm_t comm) {
    MOETRAIN_NCCL_CHECK(ncclBroadcast(data, data, count, type, static_cast<int>(root), comm, s.stream));
  });
}

void NcclCommunicator::all_to_all(const torch::Tensor& input, torch::Tensor& output,
                                  const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts) {
  State& s = *state_;
  if (on_host(input)) {
    return count_delegated(*s.mpi, "all_to_all", [&] { s.mpi->all_to_all(input, output, send_counts, recv_counts); });
  }
  const std::string name = op_name("all_to_all");
  s.check_device_tensor(name, "input", input);
  s.check_device_tensor(name, "output", output);
  const int64_t row = check_all_to_all(name, input, output, send_counts, recv_counts, s.size);
  check_no_overlap(name, input, output);
  const ncclDataType_t type = nccl_type(name, input.scalar_type());
  const int64_t element = input.element_size();
  const char* in = static_cast<const char*>(input.data_ptr());
  char* out = static_cast<char*>(output.data_ptr());
  s.run(stats_, "all_to_all", scope_name(name), input.nbytes(), input.nbytes(), [&](ncclComm_t comm) {
    // One group: NCCL posts every send and recv together, so no ordering of
    // peers can deadlock, and the rows a rank keeps go through NCCL's
    // self-send (a device copy).
    MOETRAIN_NCCL_CHECK(ncclGroupStart());
    int64_t soff = 0, roff = 0;
    for (int64_t r = 0; r < s.size; ++r) {
      const int64_t scount = send_counts[r] * row, rcount = recv_counts[r] * row;
      if (scount > 0) {
        MOETRAIN_NCCL_CHECK(ncclSend(in + soff * element, scount, type, static_cast<int>(r), comm, s.stream));
      }
      if (rcount > 0) {
        MOETRAIN_NCCL_CHECK(ncclRecv(out + roff * element, rcount, type, static_cast<int>(r), comm, s.stream));
      }
      soff += scount;
      roff += rcount;
    }
    MOETRAIN_NCCL_CHECK(ncclGroupEnd());
  });
}

void NcclCommunicator::send(const torch::Tensor& tensor, int64_t dst) {
  State& s = *state_;
  if (on_host(tensor)) return count_delegated(*s.mpi, "send", [&] { s.mpi->send(tensor, dst); });
  const std::string name = op_name("send");
  s.check_device_tensor(name, "tensor", tensor);
  check_peer(name, "dst", dst, s.size);
  check_not_self(name, "dst", dst, s.rank);
  const ncclDataType_t type = nccl_type(name, tensor.scalar_type());
  const void* data = tensor.data_ptr();
  const size_t count = tensor.numel();
  s.run(stats_, "send", scope_name(name), tensor.nbytes(), tensor.nbytes(), [&](ncclComm_t comm) {
    MOETRAIN_NCCL_CHECK(ncclSend(data, count, type, static_cast<int>(dst), comm, s.stream));
  });
}

void NcclCommunicator::recv(torch::Tensor& tensor, int64_t src) {
  State& s = *state_;
  if (on_host(tensor)) return count_delegated(*s.mpi, "recv", [&] { s.mpi->recv(tensor, src); });
  const std::string name = op_name("recv");
  s.check_device_tensor(name, "tensor", tensor);
  check_peer(name, "src", src, s.size);
  check_not_self(name, "src", src, s.rank);
  const ncclDataType_t type = nccl_type(name, tensor.scalar_type());
  void* data = tensor.data_ptr();
  const size_t count = tensor.numel();
  s.run(stats_, "recv", scope_name(name), tensor.nbytes(), tensor.nbytes(), [&](ncclComm_t comm) {
    MOETRAIN_NCCL_CHECK(ncclRecv(data, count, type, static_cast<int>(src), comm, s.stream));
  });
}

void NcclCommunicator::send_recv(const std::vector<torch::Tensor>& sends, int64_t dst,
                                 std::vector<torch::Tensor>& recvs, int64_t src) {
  State& s = *state_;
  const torch::Tensor& first = sends.empty() ? (recvs.empty() ? torch::Tensor() : recvs.front()) : sends.front();
  if (on_host(first)) {
    return count_delegated(*s.mpi, "send_recv", [&] { s.mpi->send_recv(sends, dst, recvs, src); });
  }
  const std::string name = op_name("send_recv");
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

  s.run(stats_, "send_recv", scope_name(name), bytes, bytes, [&](ncclComm_t comm) {
    // One group: NCCL starts every send and receive together, so two ranks
    // sending to each other cannot wait on one another.
    MOETRAIN_NCCL_CHECK(ncclGroupStart());
    for (size_t i = 0; i < recvs.size(); ++i) {
      MOETRAIN_NCCL_CHECK(
          ncclRecv(recvs[i].data_ptr(), recvs[i].numel(), recv_types[i], static_cast<int>(src), comm, s.stream));
    }
    for (size_t i = 0; i < sends.size(); ++i) {
      MOETRAIN_NCCL_CHECK(
          ncclSend(sends[i].data_ptr(), sends[i].numel(), send_types[i], static_cast<int>(dst), comm, s.stream));
    }
    MOETRAIN_NCCL_CHECK(ncclGroupEnd());
  });
}

void NcclCommunicator::barrier() {
  State& s = *state_;
  void* data = s.barrier_buffer.data_ptr();
  s.run(stats_, "barrier", scope_name(op_name("barrier")), 0, 0, [&](ncclComm_t comm) {
    MOETRAIN_NCCL_CHECK(ncclAllReduce(data, data, 1, ncclFloat32, ncclMax, comm, s.stream));
  });
  // A barrier is the one call the host waits for.
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(s.device));
  s.collect(stats_, /*wait=*/true);
}

std::unique_ptr<Communicator> NcclCommunicator::split(const std::vector<int64_t>& ranks) {
  State& s = *state_;
  check_split_ranks(ranks, s.rank, s.size, "nccl");
  std::unique_ptr<Communicator> sub = s.mpi->split(ranks);
  std::unique_ptr<MpiCommunicator> sub_mpi(static_cast<MpiCommunicator*>(sub.release()));
  auto child = make_shell(std::move(sub_mpi), s.device, s.timeout_s);
  c10::cuda::CUDAGuard guard(static_cast<c10::DeviceIndex>(s.device));
  // Groups partition the ranks, so the smallest rank of each names it; the
  // key keeps this communicator's rank order.
  const int color = static_cast<int>(ranks.front());
  ncclConfig_t config = nonblocking_config();
  {
    auto scope = Watchdog::instance().watch("ncclCommSplit", 0, s.timeout_s, [h = s.handle] { h->abort(); });
    s.locked("ncclCommSplit", [&](ncclComm_t comm) {
      MOETRAIN_NCCL_CHECK(ncclCommSplit(comm, color, static_cast<int>(s.rank), &child->handle->comm, &config));
    });
  }
  wait_created(*child, "ncclCommSplit");
  return std::make_unique<NcclCommunicator>(std::move(child));
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
  return std::make_unique<NcclCommunicator>(make_world_state(std::move(twin_comm), device_index, timeout_s));
}

}  // namespace moetrain::parallel
