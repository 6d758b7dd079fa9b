#!/usr/bin/env bash
# Connectivity: two network-namespace "hosts" x 2 ranks. mpirun (in the root
# namespace) starts a real MPI program on both, first with the plain recipe
# of /work/shared/multinode-test.md, then through launch/moetrain-mpirun. The
# program all-reduces the ranks (0+1+2+3 = 6) and gathers each rank's network
# namespace and address: the ranks must sit in exactly 2 namespaces, and rank
# 0-1 / 2-3 must have the first / second host's address.
source "$(dirname "$0")/lib.sh"
: "${MOETRAIN_MULTINODE_PROBE:?}"
mn_hosts_up 2 2
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1

check_output() {  # LOG: the probe passed and ranks map to the right hosts
  local log=$1
  grep -q "^PASS" "$log" || fail "the MPI program did not pass"
  grep -q "^rank 0: .*addresses ${NETNS_ADDRS[0]}\$" "$log" || fail "rank 0 is not on ${NETNS_ADDRS[0]}"
  grep -q "^rank 1: .*addresses ${NETNS_ADDRS[0]}\$" "$log" || fail "rank 1 is not on ${NETNS_ADDRS[0]}"
  grep -q "^rank 2: .*addresses ${NETNS_ADDRS[1]}\$" "$log" || fail "rank 2 is not on ${NETNS_ADDRS[1]}"
  grep -q "^rank 3: .*addresses ${NETNS_ADDRS[1]}\$" "$log" || fail "rank 3 is not on ${NETNS_ADDRS[1]}"
}

log="$MOETRAIN_MULTINODE_WORK/connectivity-$NETNS_ID"
echo "== plain mpirun"
# The first job on a freshly made network is the one that meets a link not
# yet forwarding: a launch that hangs there (exit 124) is tried once more.
for attempt in 1 2; do
  rc=0
  timeout -k 5 45 mpirun "${NETNS_MPIRUN_ARGS[@]}" -np 4 "$MOETRAIN_MULTINODE_PROBE" check 2 >"$log.mpirun" 2>&1 || rc=$?
  [[ $rc -eq 124 && $attempt -eq 1 ]] || break
  echo "mpirun launch timed out (attempt 1); trying once more"
done
cat "$log.mpirun"
[[ $rc -eq 0 ]] || fail "mpirun exited $rc"
check_output "$log.mpirun"

echo "== launch/moetrain-mpirun"
rc=0
timeout -k 5 60 "${MN_LAUNCH[@]}" --np 4 -- "$MOETRAIN_MULTINODE_PROBE" check 2 >"$log.wrapper" 2>&1 || rc=$?
cat "$log.wrapper"
[[ $rc -eq 0 ]] || fail "moetrain-mpirun exited $rc"
check_output "$log.wrapper"
rm -f "$log.mpirun" "$log.wrapper"
echo "PASS"
