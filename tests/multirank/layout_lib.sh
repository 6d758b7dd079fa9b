# Shared by the tests that train the tiny preset under a parallel layout and
# compare it with the single process (fp32, CPU, dropout 0, dropless MoE, same
# global batch of 8, 8 steps, evaluated at steps 4 and 8, gradients dumped at
# step 1). Source it after
# setting `work` (the directory the runs go to).
source "$(dirname "${BASH_SOURCE[0]}")/../e2e/lib.sh"
need_brown
: "${MOETRAIN_PYTHON:?}" "${MOETRAIN_MPIRUN:?}" "${work:?}"
rm -rf "$work"
common=(--max-steps 8 --set log.every=1 --set train.eval_every=4 --set model.moe.capacity_factor=0
        --set train.global_batch=8 --set train.micro_batch=2 --set train.threads=1 --set train.dump_grads_step=1)

# The single-process reference run, into $work/NAME (default: single).
run_single() {  # [NAME [EXTRA_ARGS...]]
  local name=${1:-single}; shift || true
  train_tiny --output-dir "$work/$name" "${common[@]}" "$@" > "$work.$name.log"
}

run_layout() {  # NAME NP EXTRA_ARGS...
  local name=$1 np=$2; shift 2
  $MOETRAIN_MPIRUN -np "$np" "$MOETRAIN_BIN" "${TINY_ARGS[@]}" --output-dir "$work/$name" "${common[@]}" "$@" \
    > "$work.$name.log" 2>&1 || { cat "$work.$name.log"; fail "$name run failed"; }
}

# Losses, final parameters and step-1 gradients of run NAME against REFERENCE.
# PARAM_ATOL: the final parameters' absolute tolerance (compare_runs.py's
# --atol, default 1e-5).
compare_with_single() {  # NAME DESCRIPTION [REFERENCE]
  echo "$2:"
  "$MOETRAIN_PYTHON" "$(dirname "${BASH_SOURCE[0]}")/compare_runs.py" "$work/${3:-single}" "$work/$1" \
    --steps 8 --grad-step 1 --atol "${PARAM_ATOL:-1e-5}" || fail "$2 does not match the single-process run"
}
