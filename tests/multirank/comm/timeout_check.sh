#!/usr/bin/env bash
# The watchdog ends a job whose ranks disagree: rank 0 calls an all_reduce that
# rank 1 skips. The job must exit non-zero within the timeout + 10 s, and rank 0
# must print exactly one line
#   moetrain: rank 0: all_reduce (4096 bytes) did not finish within 2 s; aborting the job
#
# Usage: timeout_check.sh MULTIRANK_COMM_BINARY [MPIRUN]
# Exit 0 when all of that holds, 1 otherwise, 77 (skip) without mpirun.
set -u

binary=${1:?usage: timeout_check.sh MULTIRANK_COMM_BINARY [MPIRUN]}
mpirun_bin=${2:-$(command -v mpirun || true)}
if [[ -z "$mpirun_bin" || ! -x "$mpirun_bin" ]]; then
  echo "timeout_check: SKIP: no mpirun" >&2
  exit 77
fi

timeout_s=2
limit_s=$((timeout_s + 10))
log=$(mktemp)
trap 'rm -f "$log"' EXIT

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export MOETRAIN_COMM_TIMEOUT_CHECK=1 MOETRAIN_COMM_TIMEOUT_S=$timeout_s

start_ms=$(($(date +%s%N) / 1000000))
# The outer timeout only keeps a broken watchdog from hanging ctest; it is
# well past the limit checked below.
timeout --kill-after=5 $((limit_s + 30)) \
  "$mpirun_bin" --oversubscribe --bind-to none -np 2 "$binary" >"$log" 2>&1
rc=$?
elapsed_ms=$(($(date +%s%N) / 1000000 - start_ms))
elapsed=$((elapsed_ms / 1000)).$(printf %03d $((elapsed_ms % 1000)))

fail=0
echo "timeout_check: exit code $rc after ${elapsed} s (limit ${limit_s} s)"
if [[ $rc -eq 0 ]]; then
  echo "timeout_check: FAIL: the job exited 0" >&2
  fail=1
fi
if [[ $rc -eq 124 || $rc -eq 137 ]]; then
  echo "timeout_check: FAIL: the job hung until killed" >&2
  fail=1
fi
if ((elapsed_ms > limit_s * 1000)); then
  echo "timeout_check: FAIL: took ${elapsed} s, more than ${limit_s} s" >&2
  fail=1
fi
expected="moetrain: rank 0: all_reduce (4096 bytes) did not finish within ${timeout_s} s; aborting the job"
count=$(grep -cxF "$expected" "$log")
if [[ $count -ne 1 ]]; then
  echo "timeout_check: FAIL: expected the line '$expected' once, found it $count times" >&2
  fail=1
fi
watchdog_lines=$(grep -c "did not finish within" "$log")
if [[ $watchdog_lines -ne 1 ]]; then
  echo "timeout_check: FAIL: $watchdog_lines watchdog lines, expected 1" >&2
  fail=1
fi
if [[ $fail -ne 0 ]]; then
  echo "---- job output ----" >&2
  cat "$log" >&2
  exit 1
fi
echo "timeout_check: PASS"
