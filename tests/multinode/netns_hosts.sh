# netns_hosts.sh: network namespaces on a bridge that stand in for hosts, so
# that `mpirun` can start ranks on several "nodes" of one machine (sourced by
# the multi-node tests, not run).
#
#   source netns_hosts.sh
#   netns_hosts_require            # exit 77 (skip) unless root with `ip netns`
#   netns_hosts_up 2 2 "$work"     # 2 hosts with 2 slots each
#   mpirun "${NETNS_MPIRUN_ARGS[@]}" -np 4 ./program
#   netns_link_down 1              # cut host 1's link; netns_link_up 1 restores it
#
# What netns_hosts_up creates, with names unique to this run (the creating
# shell's pid in hex plus a random byte, so concurrent runs do not collide):
#   - a bridge mtbr<id> in the root namespace holding 10.77.<x>.254/24, where
#     <x> is a /24 no other interface of the machine uses (picked under a lock);
#   - per host i (1..N) a namespace mtnet-<id>-h<i> with loopback up and an
#     interface eth0 holding 10.77.<x>.<i>/24, whose veth peer mtv<id><i> sits
#     on the bridge;
#   - in the work folder: an rsh agent (Open MPI runs it instead of ssh; it
#     enters the host's namespace) and a hostfile.
# It sets:
#   NETNS_ID, NETNS_SUBNET (10.77.x.0/24), NETNS_BRIDGE, NETNS_BRIDGE_ADDR,
#   NETNS_NAMES[i-1], NETNS_ADDRS[i-1], NETNS_IFACE (eth0, inside each namespace),
#   NETNS_AGENT, NETNS_HOSTFILE,
#   NETNS_MPIRUN_ARGS: the mpirun options that make Open MPI use them.
#
# Teardown is ALWAYS done: an EXIT trap (INT, TERM, HUP and ERR exit through
# it) runs the commands given to netns_hosts_on_exit, kills every process left
# in the namespaces, deletes the namespaces (their veths go with them), the
# bridge and any veth of this run left in the root namespace. Only the shell
# that called netns_hosts_up tears down (never a subshell). Namespaces left by
# a run that was killed with SIGKILL (whose pid is gone) are removed by the
# next netns_hosts_up.
#
# Every command here is bounded by `timeout`.

NETNS_SKIP=77
NETNS_IFACE=eth0
NETNS_LOCK=/run/lock/moetrain-multinode.lock
[[ -d /run/lock ]] || NETNS_LOCK=/tmp/moetrain-multinode.lock
NETNS_ID=""
NETNS_NAMES=()
NETNS_ADDRS=()
NETNS_MPIRUN_ARGS=()
_NETNS_OWNER_PID=""
_NETNS_ON_EXIT=()
_NETNS_DOWN_DONE=0

_netns_log() { echo "netns_hosts: $*" >&2; }

# `ip` with a time bound: a wedged netlink call must not hang a test.
_netns_ip() { timeout 20 ip "$@"; }

# Exits 77 with a reason unless this process may create network namespaces
# and has what the tests need (mpirun, timeout, flock).
netns_hosts_require() {
  local tool
  for tool in ip timeout flock mpirun; do
    if ! command -v "$tool" >/dev/null 2>&1; then
      echo "SKIP: '$tool' is not installed"
      exit $NETNS_SKIP
    fi
  done
  if [[ $(id -u) -ne 0 ]]; then
    echo "SKIP: multi-node tests need root (network namespaces); running as $(id -un)"
    exit $NETNS_SKIP
  fi
  local probe="mtprobe-$$-$RANDOM" err
  if ! err=$(_netns_ip netns add "$probe" 2>&1); then
    echo "SKIP: 'ip netns add' is not permitted here: ${err:-unknown error}"
    exit $NETNS_SKIP
  fi
  if ! err=$(_netns_ip netns exec "$probe" ip link set lo up 2>&1); then
    _netns_ip netns del "$probe" 2>/dev/null || true
    echo "SKIP: 'ip netns exec' is not permitted here: ${err:-unknown error}"
    exit $NETNS_SKIP
  fi
  _netns_ip netns del "$probe"
  if ! err=$(_netns_ip link add "mtprobe$$" type bridge 2>&1); then
    echo "SKIP: cannot create a bridge here: ${err:-unknown error}"
    exit $NETNS_SKIP
  fi
  _netns_ip link del "mtprobe$$"
}

# Registers a command (a string, run by eval) to run at exit, before the
# namespaces go: e.g. killing a background mpirun.
netns_hosts_on_exit() { _NETNS_ON_EXIT+=("$1"); }

# Removes namespaces, bridges and veths of earlier runs whose creating process
# no longer exists (a run killed by SIGKILL cannot clean up after itself).
_netns_collect_orphans() {
  local ns id pid
  for ns in $(_netns_ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^mtnet-[0-9a-f]{8}-h[0-9]+$' || true); do
    id=${ns#mtnet-}; id=${id%%-*}
    pid=$((16#${id:0:6}))
    if ! kill -0 "$pid" 2>/dev/null; then
      _netns_log "removing $ns left by a run that is gone (pid $pid)"
      _netns_kill_in "$ns"
      _netns_ip netns del "$ns" 2>/dev/null || true
    fi
  done
  local link
  for link in $(_netns_ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' |
                grep -E '^mt(br|v|i)[0-9a-f]{8}[0-9]*$' || true); do
    id=${link#mtbr}; id=${id#mtv}; id=${id#mti}
    pid=$((16#${id:0:6}))
    if ! kill -0 "$pid" 2>/dev/null; then
      _netns_log "removing $link left by a run that is gone (pid $pid)"
      _netns_ip link del "$link" 2>/dev/null || true
    fi
  done
}

# Kills every process whose network namespace is $1.
_netns_kill_in() {
  local pids
  pids=$(_netns_ip netns pids "$1" 2>/dev/null || true)
  if [[ -n "$pids" ]]; then
    # shellcheck disable=SC2086
    kill -9 $pids 2>/dev/null || true
  fi
}

# netns_hosts_up N SLOTS WORKDIR: creates N hosts (1 <= N <= 9) with SLOTS
# slots each in the hostfile, and installs the teardown traps.
netns_hosts_up() {
  local n=$1 slots=$2 work=$3
  [[ $n =~ ^[1-9]$ ]] || { _netns_log "host count must be 1..9, got '$n'"; return 1; }
  mkdir -p "$work"
  set -E  # ERR traps reach into functions and subshells, which just exit through EXIT
  _NETNS_OWNER_PID=$BASHPID
  trap '_netns_on_exit' EXIT
  trap 'exit $?' ERR
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP

  NETNS_ID=$(printf '%06x%02x' "$$" $((RANDOM % 256)))
  NETNS_BRIDGE="mtbr$NETNS_ID"

  # The subnet is picked and claimed (bridge address set) under a lock, so two
  # runs never take the same one.
  local lockfd x=""
  exec {lockfd}>"$NETNS_LOCK"
  timeout 60 flock "$lockfd" || { _netns_log "could not take $NETNS_LOCK within 60 s"; return 1; }
  _netns_collect_orphans
  local used cand
  used=$( (_netns_ip -4 -o addr show | awk '{print $4}'; _netns_ip -4 route show | awk '{print $1}') )
  for cand in $(seq $(( (16#${NETNS_ID:6:2}) % 250 + 1 )) 250) $(seq 1 250); do
    if ! grep -q "^10\.77\.$cand\." <<<"$used"; then x=$cand; break; fi
  done
  if [[ -z "$x" ]]; then
    exec {lockfd}>&-
    _netns_log "no free 10.77.x.0/24 subnet"
    return 1
  fi
  NETNS_SUBNET="10.77.$x.0/24"
  NETNS_BRIDGE_ADDR="10.77.$x.254"
  _netns_ip link add "$NETNS_BRIDGE" type bridge
  _netns_ip addr add "$NETNS_BRIDGE_ADDR/24" dev "$NETNS_BRIDGE"
  _netns_ip link set "$NETNS_BRIDGE" up
  exec {lockfd}>&-

  local i ns addr peer inner
  for i in $(seq 1 "$n"); do
    ns="mtnet-$NETNS_ID-h$i"
    addr="10.77.$x.$i"
    peer="mtv$NETNS_ID$i"
    inner="mti$NETNS_ID$i"
    _netns_ip netns add "$ns"
    NETNS_NAMES+=("$ns")
    NETNS_ADDRS+=("$addr")
    _netns_ip link add "$inner" type veth peer name "$peer"
    _netns_ip link set "$peer" master "$NETNS_BRIDGE"
    _netns_ip link set "$peer" up
    _netns_ip link set "$inner" netns "$ns"
    _netns_ip netns exec "$ns" ip link set "$inner" name "$NETNS_IFACE"
    _netns_ip netns exec "$ns" ip addr add "$addr/24" dev "$NETNS_IFACE"
    _netns_ip netns exec "$ns" ip link set "$NETNS_IFACE" up
    _netns_ip netns exec "$ns" ip link set lo up
  done

  NETNS_AGENT="$work/nsrsh-$NETNS_ID"
  {
    echo '#!/bin/bash'
    echo "# rsh agent for Open MPI (run $NETNS_ID): instead of ssh to host \$1, runs the"
    echo "# rest of the command line in that host's network namespace."
    cat <<'AGENT'
while [[ $1 == -* ]]; do shift; done  # ssh-style options, if any
host=$1; shift
case $host in
AGENT
    for i in $(seq 1 "$n"); do
      echo "  ${NETNS_ADDRS[i-1]}) ns=${NETNS_NAMES[i-1]};;"
    done
    cat <<'AGENT'
  *) echo "nsrsh: unknown host $host" >&2; exit 1;;
esac
exec ip netns exec "$ns" /bin/bash -c "$*"
AGENT
  } >"$NETNS_AGENT"
  chmod +x "$NETNS_AGENT"

  NETNS_HOSTFILE="$work/hostfile-$NETNS_ID"
  for addr in "${NETNS_ADDRS[@]}"; do echo "$addr slots=$slots"; done >"$NETNS_HOSTFILE"

  # shellcheck disable=SC2034,SC2054  # used by the scripts that source this
  NETNS_MPIRUN_ARGS=(--hostfile "$NETNS_HOSTFILE" --oversubscribe
                     --mca plm_rsh_agent "$NETNS_AGENT" --mca plm_rsh_no_tree_spawn 1
                     --mca oob_tcp_if_include "$NETNS_SUBNET" --mca btl_tcp_if_include "$NETNS_SUBNET"
                     --mca btl tcp,self)

  # Each host must reach the bridge, where mpirun listens (skipped without ping).
  if command -v ping >/dev/null 2>&1; then
    for i in $(seq 1 "$n"); do
      netns_exec "$i" ping -c 1 -W 5 "$NETNS_BRIDGE_ADDR" >/dev/null ||
        { _netns_log "host ${NETNS_ADDRS[i-1]} cannot reach $NETNS_BRIDGE_ADDR"; return 1; }
    done
  fi
  _netns_log "run $NETNS_ID: ${n} hosts ${NETNS_ADDRS[*]} on $NETNS_BRIDGE ($NETNS_SUBNET, mpirun side $NETNS_BRIDGE_ADDR)"
}

# netns_link_down I / netns_link_up I: cut or restore host I's (1-based) link,
# from inside its namespace, as a failed cable or switch port would.
netns_link_down() { _netns_ip netns exec "${NETNS_NAMES[$1-1]}" ip link set "$NETNS_IFACE" down; }
netns_link_up() { _netns_ip netns exec "${NETNS_NAMES[$1-1]}" ip link set "$NETNS_IFACE" up; }

# Runs a command inside host I's namespace: netns_exec 2 ip addr.
netns_exec() { local i=$1; shift; _netns_ip netns exec "${NETNS_NAMES[i-1]}" "$@"; }

# Tears everything down; safe to call more than once.
netns_hosts_down() {
  [[ $_NETNS_DOWN_DONE -eq 0 ]] || return 0
  _NETNS_DOWN_DONE=1
  local cmd ns link
  for cmd in "${_NETNS_ON_EXIT[@]}"; do eval "$cmd" || true; done
  for ns in "${NETNS_NAMES[@]}"; do _netns_kill_in "$ns"; done
  for ns in "${NETNS_NAMES[@]}"; do
    _netns_ip netns del "$ns" 2>/dev/null || _netns_log "could not delete namespace $ns"
  done
  if [[ -n "$NETNS_ID" ]]; then
    for link in $(_netns_ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | sed 's/@.*//' |
                  grep -E "^mt(br|v|i)${NETNS_ID}[0-9]*\$" || true); do
      # A veth whose peer went with its namespace may vanish while we look.
      _netns_ip link del "$link" 2>/dev/null ||
        ! _netns_ip link show "$link" >/dev/null 2>&1 || _netns_log "could not delete link $link"
    done
  fi
  [[ -z "${NETNS_AGENT:-}" ]] || rm -f "$NETNS_AGENT"
  [[ -z "${NETNS_HOSTFILE:-}" ]] || rm -f "$NETNS_HOSTFILE"
  [[ ${#NETNS_NAMES[@]} -eq 0 ]] || _netns_log "run $NETNS_ID torn down"
}

_netns_on_exit() {
  local rc=$?
  # Only the shell that created the hosts tears them down; a subshell exiting
  # through the inherited traps must not.
  if [[ "$BASHPID" == "$_NETNS_OWNER_PID" ]]; then
    trap - ERR
    set +e
    netns_hosts_down
  fi
  exit $rc
}
