#!/usr/bin/env bash
# Cut link, plain MPI: 2 namespace hosts x 2 ranks all-reduce in a loop (no
# timeout of their own) under launch/moetrain-mpirun; then host 2's link goes
# down. With the wrapper's Open MPI settings (TCP keepalive on the daemons'
# connections) the job must end non-zero within 60 s, saying the remote daemon
# was lost, instead of hanging. Prints how long it took.
source "$(dirname "$0")/lib.sh"
: "${MOETRAIN_MULTINODE_PROBE:?}"
mn_hosts_up 2 2
log="$MOETRAIN_MULTINODE_WORK/cut_link_mpi-$NETNS_ID.log"
loop_started() { grep -q "^iteration" "$1" 2>/dev/null; }
mn_launch_background "$log" 90 loop_started 30 --np 4 -- "$MOETRAIN_MULTINODE_PROBE" loop 600
pid=$MN_PID
grep -q "^iteration" "$log" || { cat "$log"; fail "the all-reduce loop did not start within 30 s"; }
sleep 2
cut=$(now)
netns_link_down 2
echo "cut ${NETNS_ADDRS[1]}'s link at $(date -d "@$cut" +%T.%N)"
rc=0; wait $pid || rc=$?
took=$(elapsed "$cut" "$(now)")
echo "the job ended with exit code $rc, $took s after the cut; its last lines:"
grep -v '^iteration' "$log" | tail -n 15
[[ $rc -ne 124 && $rc -ne 137 ]] || fail "the job was still running 90 s after the cut (killed by timeout)"
[[ $rc -ne 0 ]] || fail "the job exited 0 after losing a host"
python3 -c "import sys; sys.exit(0 if float(sys.argv[1]) <= 60 else 1)" "$took" || fail "the job took $took s (> 60 s) to end"
grep -q "lost communication with a remote daemon" "$log" || fail "no message about the lost host"
rm -f "$log"
echo "PASS"
