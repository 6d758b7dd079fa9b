// The data-cleaning sub-commands of the `moetrain` binary:
//   moetrain clean --input PATH... --output DIR [--config clean.yaml] [--stages ...]
//   moetrain clean train-classifier --input labelled.jsonl --output model.bin
//   moetrain augment --input PATH... --output out.jsonl [--ops ...] [--seed N]
// `clean` runs on every rank of an mpirun job; this file supplies the MPI
// implementation of data::clean::Exchange, so data/clean stays free of MPI.
// Each returns the process exit code: 0 success, 2 bad usage, a bad config or
// (with --strict) a bad record, 1 any other failure; the message is one line
// on stderr (under mpirun a failure on one rank aborts the job).
#pragma once

namespace moetrain::trainer {

// argv[0] is the sub-command name ("clean" or "augment").
int run_clean_command(int argc, char** argv);
int run_augment_command(int argc, char** argv);

}  // namespace moetrain::trainer
