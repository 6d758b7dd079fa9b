// MPI runtime: the one process-wide MPI initialisation, the world rank and
// size, the checked-call macro, and the job-wide abort.
//
// Nothing needs to be called first: every function here initialises MPI on
// first use (MPI_Init_thread asking for MPI_THREAD_MULTIPLE, because the
// watchdog thread calls MPI_Abort while the caller may sit inside a
// collective). Under `mpirun` the process joins the job; started on its own it
// is an MPI singleton, a world of size 1, so every tool and unit test runs
// without a launcher. MPI is finalised at process exit (atexit) if this module
// initialised it; if someone else called MPI_Init first, they finalise.
//
// Every rank must call mpi_finalize() (or just return from main) for a clean
// exit: MPI_Finalize is collective in spirit (Open MPI may wait for its peers).
// A rank that dies instead makes mpirun end the whole job.
#pragma once

// The C API only: Open MPI's deprecated C++ bindings would need libmpi_cxx.
#ifndef OMPI_SKIP_MPICXX
#define OMPI_SKIP_MPICXX 1
#endif
#ifndef MPICH_SKIP_MPICXX
#define MPICH_SKIP_MPICXX 1
#endif
#include <mpi.h>

#include <string>

namespace moetrain::parallel {

// Initialises MPI if it is not yet; safe to call from any thread, any number of
// times. Throws CommunicatorError if MPI was already finalised.
void mpi_init();

// The thread level MPI granted (MPI_THREAD_SINGLE .. MPI_THREAD_MULTIPLE).
int mpi_thread_level();

// Rank and size in MPI_COMM_WORLD (initialises MPI on first call).
int world_rank();
int world_size();

// Finalises MPI if this module initialised it and it is not finalised yet.
// Idempotent; also runs at exit. Communicators still alive afterwards skip
// freeing their MPI handles.
void mpi_finalize();

// True once MPI_Finalize has run (communicators check it before freeing).
bool mpi_finalized();

// True while MPI is initialised and not yet finalised (world_rank and
// world_size may then be asked without starting MPI).
bool mpi_running();

// Prints `moetrain: rank R: <message>` as one line to stderr, then ends the
// whole job with MPI_Abort(MPI_COMM_WORLD, code). Never returns; if MPI cannot
// abort (not initialised, or finalised) the process exits with `code`.
// Only the first abort of a process prints: a thread that calls it while
// another is already aborting waits for the end silently, so a failure that
// wakes several threads (the watchdog aborting a collective the main thread
// waits on) still gives one line.
[[noreturn]] void abort_job(const std::string& message, int code = 1);

// The two halves of abort_job, for an abort that must do something between
// its line and the end (the watchdog aborting a communicator):
// announce_abort() claims the abort and prints the line, or returns false if
// another thread claimed it first; end_job() then ends the job.
bool announce_abort(const std::string& message);
[[noreturn]] void end_job(int code = 1);

// True once some thread of this process has announced an abort.
bool job_aborting();

// Blocks the calling thread until the process is ended by the abort under
// way (for threads that must not touch anything an abort tears down).
[[noreturn]] void wait_for_abort();

// Checks the return code of an MPI call. Our communicators set
// MPI_ERRORS_RETURN so errors come back here instead of killing the process
// with MPI's own message: a failed call aborts the job with one line naming
// the rank, the call and MPI's error string. MPI failures are not recoverable
// (peers are left inside the collective), hence abort rather than throw.
void check_mpi(int rc, const char* call);

}  // namespace moetrain::parallel

// MOETRAIN_MPI_CHECK(MPI_Allreduce(...)): the failure message names the call
// (the text up to the first parenthesis).
#define MOETRAIN_MPI_CHECK(expr) ::moetrain::parallel::check_mpi((expr), #expr)
