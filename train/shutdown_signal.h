// ShutdownSignal: SIGTERM, SIGINT, SIGUSR1 and SIGUSR2 ask the training loop
// to stop after the current step, write a checkpoint and exit cleanly
// (`kill -USR1 <mpirun pid>` reaches every rank of an mpirun job at once). A second signal of the
// same kind ends the process at once (the default action).
#pragma once

namespace moetrain::train {

class ShutdownSignal {
 public:
  static void install();
  static bool requested();
  static const char* name();  // "SIGTERM", "SIGINT", ... once requested
};

}  // namespace moetrain::train
