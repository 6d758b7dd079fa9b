#!/usr/bin/env bash
# Damaged checkpoints are noticed, never loaded. A run of 4 steps saves
# step-2 and step-4; step-4's rank file is then damaged three ways: one bit of
# a weight's data flipped, the file truncated, one bit of a dataset's name in
# the HDF5 metadata flipped. Each time `checkpoint verify`, `export`,
# `generate` and `train --resume` of that checkpoint exit 1 with one line
# naming the file (and the tensor where the file still opens); a run resumed
# from the run directory skips step-4, says so, and goes on from step-2.
# Then the same fallback with 2 ranks (TP2), the damage in rank 1's file.
source "$(dirname "$0")/../e2e/lib.sh"
need_brown
: "${MOETRAIN_MPIRUN:?}" "${MOETRAIN_CORRUPT_HDF5:?}"
work="$MOETRAIN_E2E_WORK/checkpoint_integrity"
rm -rf "$work"; mkdir -p "$work"
train=("$MOETRAIN_BIN" "${TINY_ARGS[@]}" --set checkpoint.every=2 --set train.eval_every=0 --set log.every=1)
printf 'the quick brown fox\n' > "$work/src.txt"

# expect_failure PATTERN ARGS...: `moetrain ARGS` exits 1 with one line on
# stderr matching PATTERN.
expect_failure() {
  local pattern=$1 rc=0; shift
  "$MOETRAIN_BIN" "$@" > "$work/out" 2> "$work/err" || rc=$?
  echo "[$rc] $(cat "$work/err")"
  [[ $rc -eq 1 ]] || fail "exit code $rc, wanted 1, for: $*"
  [[ $(wc -l < "$work/err") -eq 1 ]] || fail "wanted one line on stderr for: $*"
  grep -q -- "$pattern" "$work/err" || fail "stderr lacks '$pattern' for: $*"
}

# check_damaged RUN PATTERN: the step-4 checkpoint of RUN is refused with
# PATTERN by every reader, and resuming RUN falls back to step-2.
check_damaged() {
  local run=$1 pattern=$2 ckpt="$1/checkpoints/step-000004"
  expect_failure "$pattern" checkpoint verify "$ckpt"
  "$MOETRAIN_BIN" checkpoint verify "$run" > "$work/verify.out" 2>&1 || true
  if ! grep -q "verified 2 checkpoint(s): 1 ok, 1 failed" "$work/verify.out"; then
    cat "$work/verify.out"
    fail "verify of the run does not report step-2 ok and step-4 failed"
  fi
  expect_failure "$pattern" export --checkpoint "$ckpt" --out "$work/export"
  [[ ! -e "$work/export/model.safetensors" ]] || fail "export wrote a model from a damaged checkpoint"
  expect_failure "$pattern" generate --checkpoint "$ckpt" --input "$work/src.txt" --max-length 4
  expect_failure "$pattern" "${TINY_ARGS[@]}" --output-dir "$run" --resume "$ckpt" --max-steps 5
  "${train[@]}" --output-dir "$run" --max-steps 5 > "$work/resume.out" 2> "$work/resume.err" ||
    { cat "$work/resume.err"; fail "the run did not resume from the older checkpoint"; }
  cat "$work/resume.err"
  grep -q "^moetrain: warning: skipping checkpoint $ckpt, which fails verification: .*$pattern" "$work/resume.err" ||
    fail "the resume does not say why it skipped step-4"
  grep -q "resumed from $run/checkpoints/step-000002 at step 2" "$work/resume.out" || fail "did not resume at step 2"
  grep -q "^step 5/5" "$work/resume.out" || fail "the resumed run did not reach step 5"
}

"${train[@]}" --output-dir "$work/run" --max-steps 4 > "$work/train.log" 2>&1 || { cat "$work/train.log"; fail "train"; }
"$MOETRAIN_BIN" checkpoint verify "$work/run" || fail "the undamaged checkpoints do not verify"

weight=model/decoder.layers.0.cross_attn.k_proj.weight
file=rank-00000.h5

echo "== one bit of $weight's data"
cp -r "$work/run" "$work/flip"
"$MOETRAIN_CORRUPT_HDF5" flip-data "$work/flip/checkpoints/step-000004/$file" "$weight"
check_damaged "$work/flip" "step-000004/$file: $weight fails its checksum"

echo "== the rank file truncated"
cp -r "$work/run" "$work/truncated"
path="$work/truncated/checkpoints/step-000004/$file"
truncate -s $(($(stat -c %s "$path") / 2)) "$path"
check_damaged "$work/truncated" "step-000004/$file: cannot open (truncated file"

echo "== one bit of a name in the HDF5 metadata"
cp -r "$work/run" "$work/name"
"$MOETRAIN_CORRUPT_HDF5" flip-name "$work/name/checkpoints/step-000004/$file" embed_tokens.weight
check_damaged "$work/name" "step-000004/$file: damaged: model/embed_tokens.weight is listed in the file's manifest"

echo "== 2 ranks (TP2), rank 1's file damaged"
# shellcheck disable=SC2206
mpirun=($MOETRAIN_MPIRUN -np 2)
"${mpirun[@]}" "${train[@]}" --set parallel.tp=2 --output-dir "$work/tp2" --max-steps 4 > "$work/tp2.log" 2>&1 ||
  { cat "$work/tp2.log"; fail "train with TP2"; }
"$MOETRAIN_CORRUPT_HDF5" flip-data "$work/tp2/checkpoints/step-000004/rank-00001.h5" "$weight"
"${mpirun[@]}" "${train[@]}" --set parallel.tp=2 --output-dir "$work/tp2" --max-steps 5 > "$work/tp2.out" 2> "$work/tp2.err" ||
  { cat "$work/tp2.err"; fail "TP2: the run did not resume from the older checkpoint"; }
cat "$work/tp2.err"
[[ $(grep -c "warning: skipping checkpoint" "$work/tp2.err") -eq 1 ]] || fail "TP2: wanted one skip warning (rank 0's)"
grep -q "rank-00001.h5: $weight fails its checksum" "$work/tp2.err" || fail "TP2: the warning does not name rank 1's file"
grep -q "resumed from $work/tp2/checkpoints/step-000002 at step 2" "$work/tp2.out" || fail "TP2: did not resume at step 2"
echo "PASS"
