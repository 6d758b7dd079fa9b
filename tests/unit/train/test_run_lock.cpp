// RunLock: a second holder of an output directory is refused with a line
// naming the first (host, pid); the lock is free again once its holder lets
// go, or dies (kill -9: the kernel releases a flock with its process).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>

#include "data/atomic_file.h"
#include "train/run_lock.h"

namespace moetrain::train {
namespace {

std::string fresh_dir(const std::string& name) {
  const auto dir = std::filesystem::temp_directory_path() / ("moetrain_run_lock_" + name + std::to_string(::getpid()));
  data::remove_tree(dir);
  return dir.string();
}

std::string refusal(const std::string& dir) {
  try {
    RunLock second(dir);
  } catch (const RunLockError& e) {
    return e.what();
  }
  return "";
}

TEST(RunLock, ASecondHolderIsRefusedNamingTheFirst) {
  const std::string dir = fresh_dir("second") + "/nested/run";  // created as needed
  {
    RunLock first(dir);
    const std::string line = refusal(dir);
    EXPECT_NE(line.find("output directory " + dir + " is in use by another run (host "), std::string::npos) << line;
    EXPECT_NE(line.find(" pid " + std::to_string(::getpid()) + " since "), std::string::npos) << line;
    EXPECT_EQ(line.find('\n'), std::string::npos);
  }
  EXPECT_EQ(refusal(dir), "");  // released with the first
  data::remove_tree(std::filesystem::path(dir).parent_path().parent_path().string());
}

TEST(RunLock, ADeadHoldersLockIsFree) {
  const std::string dir = fresh_dir("dead");
  std::filesystem::create_directories(dir);
  const std::string path = RunLock::path_in(dir);
  int ready[2];
  ASSERT_EQ(::pipe(ready), 0);
  const pid_t child = ::fork();
  ASSERT_GE(child, 0);
  if (child == 0) {  // only system calls between fork and _exit
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT, 0644);
    const char ok = (fd >= 0 && ::flock(fd, LOCK_EX | LOCK_NB) == 0) ? 'y' : 'n';
    (void)!::write(ready[1], &ok, 1);
    ::pause();
    ::_exit(0);
  }
  char ok = 0;
  ASSERT_EQ(::read(ready[0], &ok, 1), 1);
  ASSERT_EQ(ok, 'y');
  EXPECT_NE(refusal(dir).find("in use by another run"), std::string::npos);
  ::kill(child, SIGKILL);
  ::waitpid(child, nullptr, 0);
  EXPECT_EQ(refusal(dir), "");
  ::close(ready[0]);
  ::close(ready[1]);
  data::remove_tree(dir);
}

}  // namespace
}  // namespace moetrain::train
