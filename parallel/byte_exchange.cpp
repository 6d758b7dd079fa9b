#include "parallel/byte_exchange.h"

#include <algorithm>
#include <stdexcept>
#include <string>

namespace moetrain::parallel {
namespace {

// Rows of `flat` split by `counts`, in rank order.
std::vector<ByteMessage> split_rows(const torch::Tensor& flat, const std::vector<int64_t>& counts) {
  std::vector<ByteMessage> out(counts.size());
  const uint8_t* data = flat.data_ptr<uint8_t>();
  int64_t offset = 0;
  for (size_t r = 0; r < counts.size(); ++r) {
    out[r].assign(data + offset, data + offset + counts[r]);
    offset += counts[r];
  }
  return out;
}

std::vector<int64_t> to_counts(const torch::Tensor& t) {
  const auto c = t.contiguous();
  return {c.data_ptr<int64_t>(), c.data_ptr<int64_t>() + c.numel()};
}

}  // namespace

std::vector<ByteMessage> all_to_all_bytes(Communicator& comm, const std::vector<ByteMessage>& send) {
  const int64_t n = comm.size();
  if (static_cast<int64_t>(send.size()) != n) {
    throw std::invalid_argument("all_to_all_bytes: " + std::to_string(send.size()) + " messages for " +
                                std::to_string(n) + " ranks");
  }
  std::vector<int64_t> send_counts(static_cast<size_t>(n));
  int64_t total_send = 0;
  for (int64_t r = 0; r < n; ++r) {
    send_counts[static_cast<size_t>(r)] = static_cast<int64_t>(send[static_cast<size_t>(r)].size());
    total_send += send_counts[static_cast<size_t>(r)];
  }
  // Each rank tells every other how many bytes to expect from it.
  auto sizes_out = torch::tensor(send_counts, torch::kInt64);
  auto sizes_in = torch::empty({n}, torch::kInt64);
  const std::vector<int64_t> ones(static_cast<size_t>(n), 1);
  comm.all_to_all(sizes_out, sizes_in, ones, ones);
  const std::vector<int64_t> recv_counts = to_counts(sizes_in);
  int64_t total_recv = 0;
  for (int64_t c : recv_counts) total_recv += c;

  auto flat = torch::empty({total_send}, torch::kUInt8);
  int64_t offset = 0;
  for (const auto& message : send) {
    std::copy(message.begin(), message.end(), flat.data_ptr<uint8_t>() + offset);
    offset += static_cast<int64_t>(message.size());
  }
  auto received = torch::empty({total_recv}, torch::kUInt8);
  comm.all_to_all(flat, received, send_counts, recv_counts);
  return split_rows(received, recv_counts);
}

std::vector<ByteMessage> all_gather_bytes(Communicator& comm, const ByteMessage& mine) {
  const int64_t n = comm.size();
  auto size = torch::tensor({static_cast<int64_t>(mine.size())}, torch::kInt64);
  auto sizes = torch::empty({n}, torch::kInt64);
  comm.all_gather(size, sizes);
  const std::vector<int64_t> counts = to_counts(sizes);
  int64_t longest = 0;
  for (int64_t c : counts) longest = std::max(longest, c);
  // Every rank's message padded to the longest: one fixed-size all-gather.
  auto padded = torch::zeros({longest}, torch::kUInt8);
  std::copy(mine.begin(), mine.end(), padded.data_ptr<uint8_t>());
  auto gathered = torch::empty({n * longest}, torch::kUInt8);
  comm.all_gather(padded, gathered);
  std::vector<ByteMessage> out(static_cast<size_t>(n));
  const uint8_t* data = gathered.data_ptr<uint8_t>();
  for (int64_t r = 0; r < n; ++r)
    out[static_cast<size_t>(r)].assign(data + r * longest, data + r * longest + counts[static_cast<size_t>(r)]);
  return out;
}

std::pair<int64_t, std::string> first_failure(Communicator& comm, const std::string& mine) {
  if (comm.size() == 1) return {mine.empty() ? -1 : 0, mine};
  const auto all = all_gather_bytes(comm, ByteMessage(mine.begin(), mine.end()));
  for (size_t r = 0; r < all.size(); ++r) {
    if (!all[r].empty()) return {static_cast<int64_t>(r), std::string(all[r].begin(), all[r].end())};
  }
  return {-1, ""};
}

}  // namespace moetrain::parallel
