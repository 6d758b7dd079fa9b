// The `moetrain` command line: one binary, sub-commands. Each sub-command
// parses its own flags and returns the process exit code: 0 success, 1 a
// runtime failure, 2 bad usage or a bad config (one line on stderr).
#pragma once

namespace moetrain::trainer {

int run_cli(int argc, char** argv);

}  // namespace moetrain::trainer
