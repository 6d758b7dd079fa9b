#include "parallel/mpi_communicator.h"

#include <chrono>
#include <climits>

#include "parallel/collective_checks.h"
#include "parallel/mpi_runtime.h"
#include "parallel/watchdog.h"

namespace moetrain::parallel {
namespace {

// Any tag works: MPI keeps messages between one pair on one communicator in
// order, and send/recv have their own communicator (no user-level tags).
constexpr int kTag = 0;

bool is_half(torch::ScalarType t) { return t == torch::kBFloat16 || t == torch::kHalf; }

std::string op_name(const char* op) { return std::string(op) + " (mpi)"; }

// The MPI type that moves the tensor's bytes as they are.
MPI_Datatype mpi_type(const std::string& op, torch::ScalarType t) {
  switch (t) {
    case torch::kFloat: return MPI_FLOAT;
    case torch::kDouble: return MPI_DOUBLE;
    case torch::kInt: return MPI_INT32_T;
    case torch::kLong: return MPI_INT64_T;
    case torch::kChar: return MPI_INT8_T;
    case torch::kByte: return MPI_UINT8_T;
    case torch::kBool: return MPI_C_BOOL;
    case torch::kBFloat16:
    case torch::kHalf: return MPI_UINT16_T;  // only moved; reductions go through fp32
    default:
      throw CommunicatorError(op + ": dtype " + std::string(c10::toString(t)) +
                              " is not supported (float32, float64, int32, int64, int8, uint8, bool, "
                              "bfloat16, float16)");
  }
}

MPI_Op mpi_op(ReduceOp op, torch::ScalarType t) {
  if (t == torch::kBool) return op == ReduceOp::Min ? MPI_LAND : MPI_LOR;
  switch (op) {
    case ReduceOp::Sum: return MPI_SUM;
    case ReduceOp::Max: return MPI_MAX;
    case ReduceOp::Min: return MPI_MIN;
  }
  return MPI_SUM;
}

int mpi_count(const std::string& op, int64_t elements, const char* what) {
  if (elements > INT_MAX) {
    throw CommunicatorError(op + ": " + what + " has " + std::to_string(elements) +
                            " elements, over MPI's int count limit (" + std::to_string(INT_MAX) +
                            "); split it into smaller tensors");
  }
  return static_cast<int>(elements);
}

// Times one call and, when it completes, adds it to the stats; the watchdog
// scope is open for exactly the same span.
class OpRecord {
 public:
  // `scope`: the op as the watchdog names it (Communicator::scope_name).
  OpRecord(CommStats& stats, const char* op, const std::string& scope, int64_t stat_bytes, int64_t payload_bytes,
           double timeout_s)
      : stats_(stats),
        op_(op),
        bytes_(stat_bytes),
        start_(std::chrono::steady_clock::now()),
        scope_(Watchdog::instance().watch(scope, payload_bytes, timeout_s)) {}
  void done() {
    scope_.close();
    OpStats& s = stats_[op_];
    s.calls += 1;
    s.bytes += bytes_;
    s.seconds += std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
  }

 private:
  CommStats& stats_;
  const char* op_;
  int64_t bytes_;
  std::chrono::steady_clock::time_point start_;
  Watchdog::Scope scope_;
};

}  // namespace

MpiCommunicator::MpiCommunicator(MPI_Comm comm, double timeout_s) : comm_(comm), timeout_s_(timeout_s) {
  mpi_init();
  MOETRAIN_MPI_CHECK(MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN));
  int rank = 0, size = 1;
  MOETRAIN_MPI_CHECK(MPI_Comm_rank(comm_, &rank));
  MOETRAIN_MPI_CHECK(MPI_Comm_size(comm_, &size));
  rank_ = rank;
  size_ = size;
}

MpiCommunicator::~MpiCommunicator() {
  // After MPI_Finalize (a communicator kept in a static) there is nothing to free.
  if (comm_ != MPI_COMM_NULL && !mpi_finalized()) MPI_Comm_free(&comm_);
}

void MpiCommunicator::all_reduce(torch::Tensor& tensor, ReduceOp op) {
  const std::string name = op_name("all_reduce");
  check_tensor(name, "tensor", tensor, TensorPlace::Cpu);
  MPI_Datatype type = mpi_type(name, tensor.scalar_type());
  const int count = mpi_count(name, tensor.numel(), "tensor");
  torch::NoGradGuard no_grad;
  OpRecord record(stats_, "all_reduce", scope_name("all_reduce"), 2 * tensor.nbytes(), tensor.nbytes(), timeout_s_);
  if (is_half(tensor.scalar_type())) {
    torch::Tensor wide = tensor.to(torch::kFloat);
    MOETRAIN_MPI_CHECK(
        MPI_Allreduce(MPI_IN_PLACE, wide.data_ptr(), count, MPI_FLOAT, mpi_op(op, torch::kFloat), comm_));
    tensor.copy_(wide);
  } else {
    MOETRAIN_MPI_CHECK(
        MPI_Allreduce(MPI_IN_PLACE, tensor.data_ptr(), count, type, mpi_op(op, tensor.scalar_type()), comm_));
  }
  record.done();
}

void MpiCommunicator::reduce_scatter(const torch::Tensor& input, torch::Tensor& output, ReduceOp op) {
  const std::string name = op_name("reduce_scatter");
  check_tensor(name, "input", input, TensorPlace::Cpu);
  check_tensor(name, "output", output, TensorPlace::Cpu);
  check_same_dtype(name, input, output);
  check_scatter_gather_sizes(name, input, "input", output, "output", size_);
  check_no_overlap(name, input, output);
  MPI_Datatype type = mpi_type(name, input.scalar_type());
  mpi_count(name, input.numel(), "input");
  const int count = mpi_count(name, output.numel(), "output");
  torch::NoGradGuard no_grad;
  OpRecord record(stats_, "reduce_scatter", scope_name("reduce_scatter"), input.nbytes(), input.nbytes(), timeout_s_);
  if (is_half(input.scalar_type())) {
    torch::Tensor wide_in = input.to(torch::kFloat);
    torch::Tensor wide_out = torch::empty({output.numel()}, wide_in.options());
    MOETRAIN_MPI_CHECK(MPI_Reduce_scatter_block(wide_in.data_ptr(), wide_out.data_ptr(), count, MPI_FLOAT,
                                                mpi_op(op, torch::kFloat), comm_));
    output.view({-1}).copy_(wide_out);
  } else {
    MOETRAIN_MPI_CHECK(MPI_Reduce_scatter_block(input.data_ptr(), output.data_ptr(), count, type,
                                                mpi_op(op, input.scalar_type()), comm_));
  }
  record.done();
}

void MpiCommunicator::all_gather(const torch::Tensor& input, torch::Tensor& output) {
  const std::string name = op_name("all_gather");
  check_tensor(name, "input", input, TensorPlace::Cpu);
  check_tensor(name, "output", output, TensorPlace::Cpu);
  check_same_dtype(name, input, output);
  check_scatter_gather_sizes(name, output, "output", input, "input", size_);
  check_no_overlap(name, input, output);
  MPI_Datatype type = mpi_type(name, input.scalar_type());
  const int count = mpi_count(name, input.numel(), "input");
  mpi_count(name, output.numel(), "output");
  OpRecord record(stats_, "all_gather", scope_name("all_gather"), output.nbytes(), output.nbytes(), timeout_s_);
  MOETRAIN_MPI_CHECK(MPI_Allgather(input.data_ptr(), count, type, output.data_ptr(), count, type, comm_));
  record.done();
}

void MpiCommunicator::broadcast(torch::Tensor& tensor, int64_t root) {
  const std::string name = op_name("broadcast");
  check_tensor(name, "tensor", tensor, TensorPlace::Cpu);
  check_peer(name, "root", root, size_);
  MPI_Datatype type = mpi_type(name, tensor.scalar_type());
  const int count = mpi_count(name, tensor.numel(), "tensor");
  OpRecord record(stats_, "broadcast", scope_name("broadcast"), tensor.nbytes(), tensor.nbytes(), timeout_s_);
  MOETRAIN_MPI_CHECK(MPI_Bcast(tensor.data_ptr(), count, type, static_cast<int>(root), comm_));
  record.done();
}

void MpiCommunicator::all_to_all(const torch::Tensor& input, torch::Tensor& output,
                                 const std::vector<int64_t>& send_counts, const std::vector<int64_t>& recv_counts) {
  const std::string name = op_name("all_to_all");
  check_tensor(name, "input", input, TensorPlace::Cpu);
  check_tensor(name, "output", output, TensorPlace::Cpu);
  const int64_t row = check_all_to_all(name, input, output, send_counts, recv_counts, size_);
  check_no_overlap(name, input, output);
  MPI_Datatype type = mpi_type(name, input.scalar_type());
  // Displacements are ints too, so the whole buffers must fit.
  mpi_count(name, input.numel(), "input");
  mpi_count(name, output.numel(), "output");
  std::vector<int> scounts(size_), sdispls(size_), rcounts(size_), rdispls(size_);
  int64_t soff = 0, roff = 0;
  for (int64_t r = 0; r < size_; ++r) {
    scounts[r] = static_cast<int>(send_counts[r] * row);
    sdispls[r] = static_cast<int>(soff);
    soff += send_counts[r] * row;
    rcounts[r] = static_cast<int>(recv_counts[r] * row);
    rdispls[r] = static_cast<int>(roff);
    roff += recv_counts[r] * row;
  }
  OpRecord record(stats_, "all_to_all", scope_name("all_to_all"), input.nbytes(), input.nbytes(), timeout_s_);
  MOETRAIN_MPI_CHECK(MPI_Alltoallv(input.data_ptr(), scounts.data(), sdispls.data(), type, output.data_ptr(),
                                   rcounts.data(), rdispls.data(), type, comm_));
  record.done();
}

void MpiCommunicator::send(const torch::Tensor& tensor, int64_t dst) {
  const std::string name = op_name("send");
  check_tensor(name, "tensor", tensor, TensorPlace::Cpu);
  check_peer(name, "dst", dst, size_);
  check_not_self(name, "dst", dst, rank_);
  MPI_Datatype type = mpi_type(name, tensor.scalar_type());
  const int count = mpi_count(name, tensor.numel(), "tensor");
  OpRecord record(stats_, "send", scope_name("send"), tensor.nbytes(), tensor.nbytes(), timeout_s_);
  MOETRAIN_MPI_CHECK(MPI_Send(tensor.data_ptr(), count, type, static_cast<int>(dst), kTag, comm_));
  record.done();
}

void MpiCommunicator::recv(torch::Tensor& tensor, int64_t src) {
  const std::string name = op_name("recv");
  check_tensor(name, "tensor", tensor, TensorPlace::Cpu);
  check_peer(name, "src", src, size_);
  check_not_self(name, "src", src, rank_);
  MPI_Datatype type = mpi_type(name, tensor.scalar_type());
  const int count = mpi_count(name, tensor.numel(), "tensor");
  OpRecord record(stats_, "recv", scope_name("recv"), tensor.nbytes(), tensor.nbytes(), timeout_s_);
  MPI_Status status;
  MOETRAIN_MPI_CHECK(MPI_Recv(tensor.data_ptr(), count, type, static_cast<int>(src), kTag, comm_, &status));
  int got = 0;
  MOETRAIN_MPI_CHECK(MPI_Get_count(&status, type, &got));
  record.done();
  if (got != count) {
    // The sender's tensor was smaller: the data is in, but the caller's shapes
    // disagree, which would corrupt everything downstream.
    throw CommunicatorError(name + ": received " + std::to_string(got) + " elements from rank " + std::to_string(src) +
                            " into a tensor of " + std::to_string(count));
  }
}

void MpiCommunicator::send_recv(const std::vector<torch::Tensor>& sends, int64_t dst, std::vector<torch::Tensor>& recvs,
                                int64_t src) {
  const std::string name = op_name("send_recv");
  check_send_recv_peers(name, sends.size(), dst, recvs.size(), src, rank_, size_);
  std::vector<MPI_Datatype> send_types, recv_types;
  std::vector<int> send_counts, recv_counts;
  int64_t bytes = 0;
  for (size_t i = 0; i < sends.size(); ++i) {
    const std::string what = "sends[" + std::to_string(i) + "]";
    check_tensor(name, what.c_str(), sends[i], TensorPlace::Cpu);
    send_types.push_back(mpi_type(name, sends[i].scalar_type()));
    send_counts.push_back(mpi_count(name, sends[i].numel(), what.c_str()));
    bytes += sends[i].nbytes();
  }
  for (size_t i = 0; i < recvs.size(); ++i) {
    const std::string what = "recvs[" + std::to_string(i) + "]";
    check_tensor(name, what.c_str(), recvs[i], TensorPlace::Cpu);
    recv_types.push_back(mpi_type(name, recvs[i].scalar_type()));
    recv_counts.push_back(mpi_count(name, recvs[i].numel(), what.c_str()));
    bytes += recvs[i].nbytes();
  }
  // MPI must not write into a buffer it is still sending from or receiving into.
  check_send_recv_buffers(name, sends, recvs);
  if (sends.empty() && recvs.empty()) return;

  OpRecord record(stats_, "send_recv", scope_name("send_recv"), bytes, bytes, timeout_s_);
  std::vector<MPI_Request> requests(recvs.size() + sends.size(), MPI_REQUEST_NULL);
  // Receives first: a message that arrives eagerly lands in its buffer at once.
  for (size_t i = 0; i < recvs.size(); ++i) {
    MOETRAIN_MPI_CHECK(MPI_Irecv(recvs[i].data_ptr(), recv_counts[i], recv_types[i], static_cast<int>(src), kTag, comm_,
                                 &requests[i]));
  }
  for (size_t i = 0; i < sends.size(); ++i) {
    MOETRAIN_MPI_CHECK(MPI_Isend(sends[i].data_ptr(), send_counts[i], send_types[i], static_cast<int>(dst), kTag, comm_,
                                 &requests[recvs.size() + i]));
  }
  std::vector<MPI_Status> statuses(requests.size());
  MOETRAIN_MPI_CHECK(MPI_Waitall(static_cast<int>(requests.size()), requests.data(), statuses.data()));
  record.done();
  for (size_t i = 0; i < recvs.size(); ++i) {
    int got = 0;
    MOETRAIN_MPI_CHECK(MPI_Get_count(&statuses[i], recv_types[i], &got));
    if (got != recv_counts[i]) {
      throw CommunicatorError(name + ": received " + std::to_string(got) + " elements from rank " +
                              std::to_string(src) + " into recvs[" + std::to_string(i) + "] of " +
                              std::to_string(recv_counts[i]));
    }
  }
}

void MpiCommunicator::barrier() {
  OpRecord record(stats_, "barrier", scope_name("barrier"), 0, 0, timeout_s_);
  MOETRAIN_MPI_CHECK(MPI_Barrier(comm_));
  record.done();
}

std::unique_ptr<Communicator> MpiCommunicator::split(const std::vector<int64_t>& ranks) {
  check_split_ranks(ranks, rank_, size_, "mpi");
  MPI_Comm sub = MPI_COMM_NULL;
  {
    // Groups partition the ranks, so a group's smallest rank names it.
    auto scope = Watchdog::instance().watch("split", 0, timeout_s_);
    MOETRAIN_MPI_CHECK(MPI_Comm_split(comm_, static_cast<int>(ranks.front()), static_cast<int>(rank_), &sub));
  }
  auto result = std::make_unique<MpiCommunicator>(sub, timeout_s_);

  // Which ranks of this communicator ended up together.
  MPI_Group parent_group, sub_group;
  MOETRAIN_MPI_CHECK(MPI_Comm_group(comm_, &parent_group));
  MOETRAIN_MPI_CHECK(MPI_Comm_group(sub, &sub_group));
  std::vector<int> sub_ranks(result->size()), parent_ranks(result->size());
  for (int i = 0; i < static_cast<int>(sub_ranks.size()); ++i) sub_ranks[i] = i;
  MOETRAIN_MPI_CHECK(MPI_Group_translate_ranks(sub_group, static_cast<int>(sub_ranks.size()), sub_ranks.data(),
                                               parent_group, parent_ranks.data()));
  MPI_Group_free(&sub_group);
  MPI_Group_free(&parent_group);
  const std::vector<int64_t> formed(parent_ranks.begin(), parent_ranks.end());
  if (formed != ranks) {
    throw CommunicatorError("split (mpi): this rank asked for group " + format_list(ranks) + " but the ranks formed " +
                            format_list(formed) +
                            "; every rank must pass the group it belongs to, and groups "
                            "must partition the ranks");
  }
  return result;
}

std::unique_ptr<Communicator> make_world_communicator(double timeout_s) {
  mpi_init();
  MPI_Comm world = MPI_COMM_NULL;
  {
    auto scope = Watchdog::instance().watch("make_world_communicator", 0, timeout_s);
    MOETRAIN_MPI_CHECK(MPI_Comm_dup(MPI_COMM_WORLD, &world));
  }
  return std::make_unique<MpiCommunicator>(world, timeout_s);
}

}  // namespace moetrain::parallel
