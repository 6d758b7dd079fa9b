#include "train/run_lock.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <torch/torch.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <ctime>
#include <filesystem>

#include "parallel/communicator.h"
#include "parallel/device_map.h"

namespace moetrain::train {
namespace {

std::string now_utc() {
  const std::time_t t = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&t, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

// What the lock file says of its holder, on one line.
std::string holder_of(int fd) {
  char buf[512] = {0};
  const ssize_t n = ::pread(fd, buf, sizeof(buf) - 1, 0);
  std::string text = n > 0 ? std::string(buf, static_cast<size_t>(n)) : "";
  while (!text.empty() && (text.back() == '\n' || text.back() == ' ')) text.pop_back();
  for (char& c : text)
    if (c == '\n') c = ' ';
  return text.empty() ? "a process that has not written its name yet" : text;
}

}  // namespace

std::string RunLock::path_in(const std::string& output_dir) {
  return (std::filesystem::path(output_dir) / ".moetrain.lock").string();
}

RunLock::RunLock(const std::string& output_dir) {
  const std::string path = path_in(output_dir);
  std::error_code ec;
  std::filesystem::create_directories(output_dir, ec);
  if (ec) throw std::runtime_error("cannot create the output directory " + output_dir + ": " + ec.message());
  fd_ = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd_ < 0) throw std::runtime_error("cannot open the run lock " + path + ": " + std::strerror(errno));
  if (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    const std::string holder = holder_of(fd_);
    ::close(fd_);
    fd_ = -1;
    if (err == EWOULDBLOCK)
      throw RunLockError("output directory " + output_dir + " is in use by another run (" + holder +
                         "); wait for it to end or choose another --output-dir");
    throw std::runtime_error("cannot lock " + path + ": " + std::strerror(err));
  }
  const std::string line =
      "host " + parallel::host_name() + " pid " + std::to_string(::getpid()) + " since " + now_utc() + "\n";
  if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, line.data(), line.size(), 0) != static_cast<ssize_t>(line.size())) {
    const int err = errno;
    ::close(fd_);
    fd_ = -1;
    throw std::runtime_error("cannot write the run lock " + path + ": " + std::strerror(err));
  }
}

RunLock::~RunLock() {
  if (fd_ >= 0) ::close(fd_);  // closing the descriptor releases the flock
}

std::unique_ptr<RunLock> take_run_lock(const std::string& output_dir, parallel::Communicator& world) {
  std::unique_ptr<RunLock> lock;
  std::string failure;
  bool refused = false;  // by another run, as opposed to an I/O failure
  if (world.rank() == 0) {
    try {
      lock = std::make_unique<RunLock>(output_dir);
    } catch (const RunLockError& e) {
      failure = e.what();
      refused = true;
    } catch (const std::exception& e) {
      failure = e.what();
    }
  }
  // 0: taken; 1: held by another run; 2: the lock file failed.
  auto outcome = torch::tensor({failure.empty() ? 0 : (refused ? 1 : 2)}, torch::kInt64);
  if (world.size() > 1) world.broadcast(outcome, 0);
  const int64_t code = outcome.item<int64_t>();
  if (code == 0) return lock;
  if (failure.empty()) failure = "rank 0 could not take the lock of output directory " + output_dir;
  if (code == 1) throw RunLockError(failure);
  throw std::runtime_error(failure);
}

}  // namespace moetrain::train
