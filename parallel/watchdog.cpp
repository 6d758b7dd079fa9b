#include "parallel/watchdog.h"

#include <algorithm>
#include <future>
#include <memory>
#include <sstream>

#include "parallel/mpi_runtime.h"

namespace moetrain::parallel {
namespace {

// How long the on_timeout hook may take before the job is aborted anyway: a
// hook that hangs (say ncclCommAbort on a wedged GPU) must not bring the hang
// back.
constexpr auto kHookGrace = std::chrono::seconds(5);

}  // namespace

Watchdog::Scope::Scope(Scope&& other) noexcept : owner_(other.owner_), id_(other.id_) { other.owner_ = nullptr; }

Watchdog::Scope& Watchdog::Scope::operator=(Scope&& other) noexcept {
  if (this != &other) {
    close();
    owner_ = other.owner_;
    id_ = other.id_;
    other.owner_ = nullptr;
  }
  return *this;
}

void Watchdog::Scope::close() {
  if (owner_ != nullptr) owner_->close(id_);
  owner_ = nullptr;
}

Watchdog& Watchdog::instance() {
  // Constructed on first use, after MPI_Init (scopes are opened by
  // communicators), so it is destroyed before the atexit MPI_Finalize runs.
  static Watchdog watchdog;
  return watchdog;
}

Watchdog::~Watchdog() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
}

Watchdog::Scope Watchdog::watch(std::string op, int64_t bytes, double timeout_s, std::function<void()> on_timeout) {
  return watch_until(std::move(op), bytes, timeout_s, {}, std::move(on_timeout));
}

Watchdog::Scope Watchdog::watch_until(std::string op, int64_t bytes, double timeout_s, std::function<bool()> finished,
                                      std::function<void()> on_timeout) {
  if (!(timeout_s > 0)) return Scope();
  uint64_t id;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    if (!thread_.joinable()) thread_ = std::thread([this] { run(); });
    id = next_id_++;
    const auto deadline =
        Clock::now() + std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(timeout_s));
    entries_.emplace(id, Entry{std::move(op), bytes, timeout_s, deadline, std::move(on_timeout), std::move(finished)});
  }
  // The thread may be sleeping until a later deadline; let it see this one.
  wake_.notify_all();
  return Scope(this, id);
}

size_t Watchdog::open_scopes() const {
  std::lock_guard<std::mutex> lock(mutex_);
  return entries_.size();
}

std::string Watchdog::oldest_open_scope() const {
  std::lock_guard<std::mutex> lock(mutex_);
  const Entry* oldest = nullptr;
  Clock::time_point oldest_opened{};
  for (const auto& [id, entry] : entries_) {
    const auto opened =
        entry.deadline - std::chrono::duration_cast<Clock::duration>(std::chrono::duration<double>(entry.timeout_s));
    if (oldest == nullptr || opened < oldest_opened) {
      oldest = &entry;
      oldest_opened = opened;
    }
  }
  if (oldest == nullptr) return "";
  std::ostringstream text;
  text.precision(3);
  text << oldest->op << " (" << oldest->bytes << " bytes), open for "
       << std::chrono::duration<double>(Clock::now() - oldest_opened).count() << " s";
  return text.str();
}

std::string Watchdog::timeout_message(const std::string& op, int64_t bytes, double timeout_s) {
  std::ostringstream line;
  line << op << " (" << bytes << " bytes) did not finish within " << timeout_s << " s; aborting the job";
  return line.str();
}

void Watchdog::close(uint64_t id) {
  std::lock_guard<std::mutex> lock(mutex_);
  entries_.erase(id);
}

bool Watchdog::poll_finished_locked() {
  bool polled = false;
  for (auto it = entries_.begin(); it != entries_.end();) {
    if (it->second.finished && it->second.finished()) {
      it = entries_.erase(it);
      continue;
    }
    polled = polled || static_cast<bool>(it->second.finished);
    ++it;
  }
  return polled;
}

void Watchdog::run() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (!stop_) {
    const bool polling = poll_finished_locked();
    if (entries_.empty()) {
      wake_.wait(lock);
      continue;
    }
    auto earliest = entries_.begin();
    for (auto it = entries_.begin(); it != entries_.end(); ++it) {
      if (it->second.deadline < earliest->second.deadline) earliest = it;
    }
    const Clock::time_point deadline = earliest->second.deadline;
    if (Clock::now() >= deadline) {
      Entry expired = earliest->second;
      lock.unlock();
      fire(expired);
    }
    wake_.wait_until(lock, polling ? std::min(deadline, Clock::now() + kPollInterval) : deadline);
  }
}

void Watchdog::fire(const Entry& entry) {
  // The line goes out before the hook runs: aborting a communicator may wake
  // the main thread with an error of its own, which must not be the message.
  if (!announce_abort(timeout_message(entry.op, entry.bytes, entry.timeout_s))) wait_for_abort();
  if (entry.on_timeout) {
    auto done = std::make_shared<std::promise<void>>();
    std::future<void> finished = done->get_future();
    std::thread([hook = entry.on_timeout, done] {
      try {
        hook();
      } catch (...) {
      }
      done->set_value();
    }).detach();
    finished.wait_for(kHookGrace);
  }
  end_job(1);
}

}  // namespace moetrain::parallel
