#include "train/shutdown_signal.h"

#include <atomic>
#include <csignal>

namespace moetrain::train {
namespace {

std::atomic<int> g_signal{0};

extern "C" void on_signal(int sig) {
  g_signal.store(sig);
  std::signal(sig, SIG_DFL);  // a second one is not ignored
}

}  // namespace

void ShutdownSignal::install() {
  struct sigaction action {};
  action.sa_handler = on_signal;
  sigemptyset(&action.sa_mask);
  sigaction(SIGTERM, &action, nullptr);
  sigaction(SIGINT, &action, nullptr);
  // mpirun forwards SIGUSR1/SIGUSR2 to every rank at once (not SIGTERM).
  sigaction(SIGUSR1, &action, nullptr);
  sigaction(SIGUSR2, &action, nullptr);
}

bool ShutdownSignal::requested() { return g_signal.load() != 0; }

const char* ShutdownSignal::name() {
  switch (g_signal.load()) {
    case SIGTERM: return "SIGTERM";
    case SIGINT: return "SIGINT";
    case SIGUSR1: return "SIGUSR1";
    case SIGUSR2: return "SIGUSR2";
    default: return "none";
  }
}

}  // namespace moetrain::train
