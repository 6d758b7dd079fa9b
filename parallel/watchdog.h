// Watchdog: one background thread per process that watches in-flight
// collectives and ends the job when one is stuck, so a missing peer or a
// mismatched call order never turns into a silent hang.
//
// Each collective opens a Scope (operation name, bytes, timeout) before it
// starts and closes it (destructor) when its result is in place. If a scope is
// still open `timeout_s` after it opened, the watchdog runs the scope's
// on_timeout hook (the NCCL backend aborts its communicator there, bounded to a
// few seconds), prints ONE line to stderr
//   moetrain: rank R: <op> (<bytes> bytes) did not finish within T s; aborting the job
// and calls MPI_Abort(MPI_COMM_WORLD, 1), which ends every rank.
//
// Work that goes on after the caller returns (an NCCL collective queued on a
// device stream) is watched with watch_until(): the watchdog thread polls the
// scope's `finished` predicate every kPollInterval and closes the scope
// itself once it holds, so nobody has to wait on the host for it.
//
// Purely local: no rank has to call anything in step with the others. Scopes
// may be opened from any thread. The thread starts with the first scope.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <string>
#include <thread>

namespace moetrain::parallel {

class Watchdog {
 public:
  class Scope {
   public:
    Scope() = default;
    Scope(Scope&& other) noexcept;
    Scope& operator=(Scope&& other) noexcept;
    Scope(const Scope&) = delete;
    Scope& operator=(const Scope&) = delete;
    ~Scope() { close(); }
    // Closes early (the destructor then does nothing).
    void close();

   private:
    friend class Watchdog;
    Scope(Watchdog* owner, uint64_t id) : owner_(owner), id_(id) {}
    Watchdog* owner_ = nullptr;
    uint64_t id_ = 0;
  };

  // The process-wide watchdog.
  static Watchdog& instance();

  // Opens a watched scope. timeout_s <= 0 means "not watched" (an empty scope).
  // on_timeout runs on the watchdog thread just before the job is aborted.
  Scope watch(std::string op, int64_t bytes, double timeout_s, std::function<void()> on_timeout = {});

  // Like watch(), but the scope also ends when `finished` returns true,
  // polled on the watchdog thread (under its lock: it must be quick, must not
  // block and must not call the watchdog). Closing the returned scope early
  // is still allowed.
  Scope watch_until(std::string op, int64_t bytes, double timeout_s, std::function<bool()> finished,
                    std::function<void()> on_timeout = {});

  // How often watch_until predicates are polled.
  static constexpr std::chrono::milliseconds kPollInterval{2};

  // Scopes open right now (for tests and diagnostics).
  size_t open_scopes() const;
  // The scope open longest, in words: "all_reduce on the dp group (4096
  // bytes), open for 12.3 s"; empty when none is open (or timeouts are off,
  // parallel.timeout_s 0, which opens no scope).
  std::string oldest_open_scope() const;

  // The one line printed on timeout, without the "moetrain: rank R: " prefix.
  static std::string timeout_message(const std::string& op, int64_t bytes, double timeout_s);

  ~Watchdog();

 private:
  using Clock = std::chrono::steady_clock;
  struct Entry {
    std::string op;
    int64_t bytes;
    double timeout_s;
    Clock::time_point deadline;
    std::function<void()> on_timeout;
    std::function<bool()> finished;  // empty: only close() ends the scope
  };

  Watchdog() = default;
  void close(uint64_t id);
  void run();
  // Drops the entries whose `finished` holds; true if any entry is polled.
  bool poll_finished_locked();
  [[noreturn]] void fire(const Entry& entry);

  mutable std::mutex mutex_;
  std::condition_variable wake_;
  std::map<uint64_t, Entry> entries_;
  uint64_t next_id_ = 1;
  bool stop_ = false;
  std::thread thread_;
};

}  // namespace moetrain::parallel
