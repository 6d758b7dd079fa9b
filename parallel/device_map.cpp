#include "parallel/device_map.h"

#include <cstdlib>

#include <unistd.h>

#include <map>
#include <sstream>
#include <utility>

#include "parallel/byte_exchange.h"
#include "parallel/mpi_runtime.h"

namespace moetrain::parallel {
namespace {

std::vector<std::string> split_commas(const std::string& text) {
  std::vector<std::string> out;
  std::stringstream ss(text);
  for (std::string item; std::getline(ss, item, ',');) out.push_back(item);
  return out;
}

std::string trim(const std::string& s) {
  const auto first = s.find_first_not_of(" \t");
  if (first == std::string::npos) return "";
  return s.substr(first, s.find_last_not_of(" \t") - first + 1);
}

}  // namespace

DeviceChoice choose_device(int64_t local_rank, int64_t device_count, const std::string& visible_env) {
  DeviceChoice choice;
  if (device_count <= 0 || local_rank < 0) return choice;
  choice.index = local_rank % device_count;
  // CUDA reads the list up to its first invalid entry; the visible devices
  // are its first device_count entries.
  const auto entries = split_commas(visible_env);
  const auto i = static_cast<size_t>(choice.index);
  choice.physical = i < entries.size() && !trim(entries[i]).empty() ? trim(entries[i]) : std::to_string(choice.index);
  return choice;
}

void check_device_map(const std::vector<RankDevice>& ranks, bool exclusive) {
  std::map<std::pair<std::string, std::string>, int64_t> owner;  // (host, GPU) -> first rank on it
  for (const auto& r : ranks) {
    if (r.device.index < 0) {
      throw DeviceMapError("rank " + std::to_string(r.rank) + " on " + r.host + " sees no CUDA device");
    }
    const auto [it, fresh] = owner.emplace(std::make_pair(r.host, r.device.physical), r.rank);
    if (!fresh && exclusive) {
      throw DeviceMapError("ranks " + std::to_string(it->second) + " and " + std::to_string(r.rank) + " on " + r.host +
                           " would share GPU " + r.device.physical + ", which NCCL refuses");
    }
  }
}

std::string describe_device_map(const std::vector<RankDevice>& ranks) {
  std::vector<std::string> hosts;
  std::map<std::string, std::string> lines;
  for (const auto& r : ranks) {
    auto& line = lines[r.host];
    if (line.empty()) {
      hosts.push_back(r.host);
      line = r.host + ":";
    } else {
      line += ",";
    }
    line += " rank " + std::to_string(r.rank) + " -> cuda:" + std::to_string(r.device.index) + " (GPU " +
            r.device.physical + ")";
  }
  std::string out;
  for (const auto& h : hosts) out += lines[h] + "\n";
  return out;
}

NodeRank node_local_rank() {
  mpi_init();
  MPI_Comm node = MPI_COMM_NULL;
  MOETRAIN_MPI_CHECK(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, world_rank(), MPI_INFO_NULL, &node));
  int rank = 0, size = 1;
  MOETRAIN_MPI_CHECK(MPI_Comm_rank(node, &rank));
  MOETRAIN_MPI_CHECK(MPI_Comm_size(node, &size));
  MOETRAIN_MPI_CHECK(MPI_Comm_free(&node));
  return {rank, size};
}

std::string host_name() {
  char buf[256] = {};
  if (gethostname(buf, sizeof(buf) - 1) != 0) return "unknown-host";
  return buf;
}

RankDevice this_rank_device(const Communicator& world, int64_t device_count) {
  const char* visible = std::getenv("CUDA_VISIBLE_DEVICES");
  const int64_t local_rank = node_local_rank().local_rank;
  return {world.rank(), host_name(), local_rank,
          choose_device(local_rank, device_count, visible != nullptr ? visible : "")};
}

std::vector<RankDevice> gather_device_map(Communicator& world, const RankDevice& mine) {
  // One line of text per rank: rank, host, local rank, index, physical.
  std::ostringstream line;
  line << mine.rank << '\t' << mine.host << '\t' << mine.local_rank << '\t' << mine.device.index << '\t'
       << mine.device.physical;
  const std::string text = line.str();
  const auto gathered = all_gather_bytes(world, ByteMessage(text.begin(), text.end()));
  std::vector<RankDevice> out;
  for (const auto& message : gathered) {
    std::istringstream in(std::string(message.begin(), message.end()));
    RankDevice r;
    if (!(in >> r.rank) || !in.ignore(1) || !std::getline(in, r.host, '\t') || !(in >> r.local_rank) ||
        !(in >> r.device.index) || !in.ignore(1) || !std::getline(in, r.device.physical)) {
      throw DeviceMapError("a rank's device report is malformed: '" + std::string(message.begin(), message.end()) +
                           "'");
    }
    out.push_back(r);
  }
  return out;
}

}  // namespace moetrain::parallel
