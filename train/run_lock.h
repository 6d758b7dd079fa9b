// RunLock: one run per output directory.
//
// A run holds an exclusive flock on OUTPUT_DIR/.moetrain.lock for its whole
// life; the file says who holds it ("host H pid P since T"). The kernel
// releases the lock when the process ends, however it ends (a kill -9
// included), so a stale file never blocks the next run. A second run into the
// same directory is refused with one line naming the holder. Under mpirun
// rank 0 takes the lock and every rank learns the outcome (take_run_lock).
#pragma once

#include <memory>
#include <stdexcept>
#include <string>

namespace moetrain::parallel {
class Communicator;
}

namespace moetrain::train {

// The directory is in use by another run; what() names it and the holder.
class RunLockError : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

class RunLock {
 public:
  // Creates `output_dir` if needed and takes its lock, or throws
  // RunLockError (held by another process) or std::runtime_error (the lock
  // file cannot be created: permission, a full disk), naming the file.
  explicit RunLock(const std::string& output_dir);
  ~RunLock();  // releases the lock (the file stays)
  RunLock(const RunLock&) = delete;
  RunLock& operator=(const RunLock&) = delete;

  static std::string path_in(const std::string& output_dir);

 private:
  int fd_ = -1;
};

// Rank 0 takes the lock of `output_dir`; the others get nullptr. Every rank
// throws RunLockError when rank 0 could not take it (rank 0's message names
// the holder), so the job stops as one.
std::unique_ptr<RunLock> take_run_lock(const std::string& output_dir, parallel::Communicator& world);

}  // namespace moetrain::train
