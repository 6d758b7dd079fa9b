#include "parallel/comm_benchmark.h"

#include <algorithm>
#include <chrono>
#include <functional>
#include <iomanip>
#include <stdexcept>

namespace moetrain::parallel {
namespace {

bool known_op(const std::string& op) {
  const auto ops = CommBenchOptions::all_ops();
  return std::find(ops.begin(), ops.end(), op) != ops.end();
}

// The algbw -> busbw factor of nccl-tests, which makes busbw comparable with
// the link bandwidth whatever the operation.
double bus_factor(const std::string& op, int64_t n) {
  const double nd = static_cast<double>(n);
  if (op == "all_reduce") return 2.0 * (nd - 1) / nd;
  if (op == "reduce_scatter" || op == "all_gather" || op == "all_to_all") return (nd - 1) / nd;
  return 1.0;  // broadcast, send_recv
}

bool splits_across_ranks(const std::string& op) {
  return op == "reduce_scatter" || op == "all_gather" || op == "all_to_all";
}

// Random and never zero.
torch::Tensor random_tensor(int64_t count, const torch::TensorOptions& options) {
  const auto dtype = options.dtype().toScalarType();
  if (dtype == torch::kBool) return torch::ones({count}, options);
  if (c10::isFloatingType(dtype)) {
    return (torch::rand({count}, options.dtype(torch::kFloat)) + 0.5).to(options.dtype());
  }
  return torch::randint(1, 100, {count}, options);
}

void sync_device(const torch::Device& device) {
  if (device.is_cuda()) torch::cuda::synchronize(device.index());
}

// The names users type (`--dtype bfloat16`), not c10's "BFloat16".
std::string dtype_name(torch::ScalarType t) {
  switch (t) {
    case torch::kFloat: return "float32";
    case torch::kDouble: return "float64";
    case torch::kBFloat16: return "bfloat16";
    case torch::kHalf: return "float16";
    case torch::kInt: return "int32";
    case torch::kLong: return "int64";
    case torch::kChar: return "int8";
    case torch::kByte: return "uint8";
    case torch::kBool: return "bool";
    default: return c10::toString(t);
  }
}

double median(std::vector<double> values) {
  std::sort(values.begin(), values.end());
  const size_t mid = values.size() / 2;
  return values.size() % 2 ? values[mid] : 0.5 * (values[mid - 1] + values[mid]);
}

// Throws std::invalid_argument for an unknown op, a size below one byte or bad iteration counts.
void check_options(const CommBenchOptions& options) {
  for (const auto& op : options.ops) {
    if (!known_op(op)) {
      throw std::invalid_argument("bench comm: unknown op '" + op +
                                  "' (all_reduce, reduce_scatter, all_gather, broadcast, all_to_all, send_recv)");
    }
  }
  for (int64_t size : options.sizes_bytes) {
    if (size < 1) throw std::invalid_argument("bench comm: size " + std::to_string(size) + " bytes is below 1");
  }
  if (options.iters < 1) throw std::invalid_argument("bench comm: iters must be at least 1");
  if (options.warmup < 0) throw std::invalid_argument("bench comm: warmup must not be negative");
}

// The table's header: the run's settings and the column names.
void print_header(std::ostream& out, const Communicator& comm, const CommBenchOptions& options) {
  const int64_t n = comm.size();
  out << "# moetrain bench comm: backend " << comm.backend() << ", " << n << " rank" << (n == 1 ? "" : "s")
      << ", dtype " << dtype_name(options.dtype) << ", device " << options.device.str() << ", warmup " << options.warmup
      << ", iters " << options.iters << "\n"
      << "# time: median over iters, max over ranks; busbw = algbw x nccl-tests' factor\n"
      << "#" << std::setw(15) << "op" << std::setw(14) << "size(B)" << std::setw(12) << "count" << std::setw(12)
      << "time(us)" << std::setw(13) << "algbw(GB/s)" << std::setw(13) << "busbw(GB/s)"
      << "\n";
}

// One result row, flushed so that a long run shows progress.
void print_row(std::ostream& out, const CommBenchResult& row) {
  out << std::setw(16) << row.op << std::setw(14) << row.size_bytes << std::setw(12) << row.count << std::fixed
      << std::setprecision(2) << std::setw(12) << row.time_us << std::setw(13) << row.algbw_gbps << std::setw(13)
      << row.busbw_gbps << std::defaultfloat << "\n";
  out.flush();
}

// Sets up the buffers of `op` (`work` holds a copy of the `count` elements of
// random input) and returns the call to time, which uses `work` and `other`.
std::function<void()> make_call(Communicator& comm, const std::string& op, int64_t count,
                                const torch::TensorOptions& tensor_options, torch::Tensor& work, torch::Tensor& other) {
  const int64_t n = comm.size();
  const int64_t rank = comm.rank();
  const int64_t chunk = count / n;
  if (op == "all_reduce") return [&comm, &work] { comm.all_reduce(work); };
  if (op == "reduce_scatter") {
    other = torch::empty({chunk}, tensor_options);
    return [&comm, &work, &other] { comm.reduce_scatter(work, other); };
  }
  if (op == "all_gather") {
    work = random_tensor(chunk, tensor_options);
    other = torch::empty({count}, tensor_options);
    return [&comm, &work, &other] { comm.all_gather(work, other); };
  }
  if (op == "broadcast") return [&comm, &work] { comm.broadcast(work, 0); };
  if (op == "all_to_all") {
    other = torch::empty({count}, tensor_options);
    const std::vector<int64_t> counts(n, chunk);
    return [&comm, &work, &other, counts] { comm.all_to_all(work, other, counts, counts); };
  }
  // send_recv: a ring
  other = torch::empty({count}, tensor_options);
  const int64_t next = (rank + 1) % n, prev = (rank + n - 1) % n;
  return [&comm, &work, &other, rank, next, prev] {
    if (rank % 2 == 0) {
      comm.send(work, next);
      comm.recv(other, prev);
    } else {
      comm.recv(other, prev);
      comm.send(work, next);
    }
  };
}

// Measures one op at one size. The time is the slowest rank's median over the
// timed iterations; in-place buffers are refilled before each call, outside the timing.
CommBenchResult bench_op(Communicator& comm, const CommBenchOptions& options, const std::string& op,
                         int64_t size_bytes) {
  const int64_t n = comm.size();
  const auto tensor_options = torch::TensorOptions().dtype(options.dtype).device(options.device);
  const int64_t element = c10::elementSize(options.dtype);
  int64_t count = std::max<int64_t>(1, size_bytes / element);
  if (splits_across_ranks(op)) count = std::max<int64_t>(1, count / n) * n;

  torch::Tensor pristine = random_tensor(count, tensor_options);
  torch::Tensor work = pristine.clone();
  torch::Tensor other;
  const std::function<void()> call = make_call(comm, op, count, tensor_options, work, other);
  const bool in_place = op == "all_reduce" || op == "broadcast";
  auto refresh = [&] {
    if (in_place) work.copy_(pristine);
    sync_device(options.device);
  };

  for (int i = 0; i < options.warmup; ++i) {
    refresh();
    call();
  }
  comm.barrier();
  std::vector<double> times_us;
  times_us.reserve(options.iters);
  for (int i = 0; i < options.iters; ++i) {
    refresh();
    const auto start = std::chrono::steady_clock::now();
    call();
    sync_device(options.device);
    times_us.push_back(std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count());
  }
  // The slowest rank's median is the collective's time.
  torch::Tensor slowest = torch::full({1}, median(times_us), tensor_options.dtype(torch::kDouble));
  comm.all_reduce(slowest, ReduceOp::Max);

  CommBenchResult row;
  row.op = op;
  row.count = count;
  row.size_bytes = count * element;
  row.time_us = slowest.cpu().item<double>();
  row.algbw_gbps = row.time_us > 0 ? static_cast<double>(row.size_bytes) / row.time_us / 1e3 : 0.0;
  row.busbw_gbps = row.algbw_gbps * bus_factor(op, n);
  return row;
}

}  // namespace

std::vector<int64_t> CommBenchOptions::default_sizes() {
  std::vector<int64_t> sizes;
  for (int64_t s = 1024; s <= 64LL * 1024 * 1024; s *= 4) sizes.push_back(s);
  return sizes;
}

std::vector<std::string> CommBenchOptions::all_ops() {
  return {"all_reduce", "reduce_scatter", "all_gather", "broadcast", "all_to_all", "send_recv"};
}

std::vector<CommBenchResult> run_comm_benchmark(Communicator& comm, const CommBenchOptions& options,
                                                std::ostream& out) {
  check_options(options);
  const int64_t n = comm.size();
  const bool printer = comm.rank() == 0;
  torch::NoGradGuard no_grad;
  if (printer) print_header(out, comm, options);

  std::vector<CommBenchResult> results;
  for (const auto& op : options.ops) {
    if (op == "send_recv" && n < 2) {
      if (printer) out << "# send_recv: skipped, it needs at least 2 ranks\n";
      continue;
    }
    for (int64_t size_bytes : options.sizes_bytes) {
      results.push_back(bench_op(comm, options, op, size_bytes));
      if (printer) print_row(out, results.back());
    }
  }
  return results;
}

}  // namespace moetrain::parallel
