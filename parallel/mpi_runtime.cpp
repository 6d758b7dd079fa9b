#include "parallel/mpi_runtime.h"

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <string>
#include <thread>

#include "parallel/communicator.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

namespace moetrain::parallel {
namespace {

std::mutex g_mutex;
bool g_we_initialised = false;
int g_thread_level = MPI_THREAD_SINGLE;

bool mpi_is_initialised() {
  int flag = 0;
  MPI_Initialized(&flag);
  return flag != 0;
}

void finalize_at_exit() { mpi_finalize(); }

// Open MPI keeps part of what MPI_Init_thread and MPI_Finalize allocate until
// the process ends and unloads its plugins before LeakSanitizer looks, which
// would then report those blocks with stacks naming no library. In a build
// with AddressSanitizer (scripts/sanitize.sh) what is allocated on this thread
// while one of these lives is not leak-checked, nor what only it points to;
// every allocation of moetrain's own is. It does nothing in other builds.
class IgnoreMpiLeaks {
 public:
  IgnoreMpiLeaks() {
#if defined(__SANITIZE_ADDRESS__)
    __lsan_disable();
#endif
  }
  ~IgnoreMpiLeaks() {
#if defined(__SANITIZE_ADDRESS__)
    __lsan_enable();
#endif
  }
  IgnoreMpiLeaks(const IgnoreMpiLeaks&) = delete;
  IgnoreMpiLeaks& operator=(const IgnoreMpiLeaks&) = delete;
};

// The rank to name in messages; -1 while MPI is not usable.
int rank_for_messages() {
  int init = 0, fin = 0;
  MPI_Initialized(&init);
  MPI_Finalized(&fin);
  if (!init || fin) return -1;
  int rank = -1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  return rank;
}

}  // namespace

void mpi_init() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (mpi_finalized()) {
    throw CommunicatorError("moetrain: MPI was already finalised; it cannot be initialised again");
  }
  if (mpi_is_initialised()) {
    if (!g_we_initialised) MPI_Query_thread(&g_thread_level);
    return;
  }
  // No argc/argv: mpirun passes what MPI needs through the environment, and
  // this lets initialisation happen lazily, far from main().
  int provided = MPI_THREAD_SINGLE;
  int rc = MPI_SUCCESS;
  {
    IgnoreMpiLeaks ignore;
    rc = MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided);
  }
  if (rc != MPI_SUCCESS) {
    std::fprintf(stderr, "moetrain: MPI_Init_thread failed (error %d); aborting\n", rc);
    std::exit(1);
  }
  g_we_initialised = true;
  g_thread_level = provided;
  std::atexit(finalize_at_exit);
}

int mpi_thread_level() {
  mpi_init();
  return g_thread_level;
}

int world_rank() {
  mpi_init();
  int rank = 0;
  MOETRAIN_MPI_CHECK(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
  return rank;
}

int world_size() {
  mpi_init();
  int size = 0;
  MOETRAIN_MPI_CHECK(MPI_Comm_size(MPI_COMM_WORLD, &size));
  return size;
}

void mpi_finalize() {
  std::lock_guard<std::mutex> lock(g_mutex);
  if (!g_we_initialised || mpi_finalized()) return;
  IgnoreMpiLeaks ignore;
  MPI_Finalize();
}

bool mpi_finalized() {
  int flag = 0;
  MPI_Finalized(&flag);
  return flag != 0;
}

bool mpi_running() { return rank_for_messages() >= 0; }

namespace {
std::atomic<bool> g_aborting{false};
}  // namespace

bool announce_abort(const std::string& message) {
  if (g_aborting.exchange(true)) return false;
  const int rank = rank_for_messages();
  // One write so that lines of different ranks do not interleave mid-line.
  const std::string line =
      "moetrain: rank " + (rank >= 0 ? std::to_string(rank) : std::string("?")) + ": " + message + "\n";
  std::fwrite(line.data(), 1, line.size(), stderr);
  std::fflush(stderr);
  return true;
}

void end_job(int code) {
  if (rank_for_messages() >= 0) MPI_Abort(MPI_COMM_WORLD, code);
  std::_Exit(code);  // MPI_Abort returned (it should not) or MPI is down
}

bool job_aborting() { return g_aborting.load(); }

void wait_for_abort() {
  for (;;) std::this_thread::sleep_for(std::chrono::seconds(1));
}

void abort_job(const std::string& message, int code) {
  if (!announce_abort(message)) wait_for_abort();
  end_job(code);
}

void check_mpi(int rc, const char* call) {
  if (rc == MPI_SUCCESS) return;
  std::string name(call);
  name = name.substr(0, name.find('('));
  char text[MPI_MAX_ERROR_STRING] = {0};
  int len = 0;
  if (MPI_Error_string(rc, text, &len) != MPI_SUCCESS) std::snprintf(text, sizeof text, "error %d", rc);
  abort_job(name + " failed: " + text + "; aborting the job");
}

}  // namespace moetrain::parallel
