// The sub-commands of the `moetrain` binary, one file each (app/*_command.cpp).
// Each takes argv with argv[0] = its own name, parses its flags and returns
// the process exit code (0 success). They throw on failure; run_command
// (app/run_command.h) is the one place that turns an exception into a
// message, an exit code or an MPI_Abort.
#pragma once

namespace moetrain::app {

int train_command(int argc, char** argv);
int tokenize_command(int argc, char** argv);
int clean_command(int argc, char** argv);  // also `clean train-classifier`
int augment_command(int argc, char** argv);
int export_command(int argc, char** argv);
int import_command(int argc, char** argv);
int generate_command(int argc, char** argv);
int eval_command(int argc, char** argv);
int bench_command(int argc, char** argv);
int checkpoint_command(int argc, char** argv);  // `checkpoint verify`

}  // namespace moetrain::app
