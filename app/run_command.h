// The `moetrain` command line: `moetrain <command> [options]`. run_command
// dispatches to the sub-command (app/commands.h) and turns what it throws
// into one line on stderr and an exit code:
//   2  bad usage or a bad config (UsageError, ConfigError, LayoutError, a
//      cleaning config error, a bad input record under --strict);
//   1  any other failure.
// Under mpirun every rank runs the command. Usage and config errors are the
// same on every rank: rank 0 alone prints and all exit. Any other failure may
// hit one rank only: that rank prints `moetrain: rank R: ...` and aborts the
// job (parallel::abort_job), so no peer waits for it in a collective.
#pragma once

namespace moetrain::app {

int run_command(int argc, char** argv);

}  // namespace moetrain::app
