// ShutdownSignal: SIGTERM and SIGINT ask the training loop to stop after the
// current step, write a checkpoint and exit cleanly. A second signal of the
// same kind ends the process at once (the default action).
#pragma once

namespace moetrain::trainer {

class ShutdownSignal {
 public:
  static void install();
  static bool requested();
  static const char* name();  // "SIGTERM" / "SIGINT" once requested
};

}  // namespace moetrain::trainer
