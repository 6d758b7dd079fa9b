# The perf command's own stages: build-bench, bench and report (its deps
# stage, configure and build_targets are in stages-check.sh). Sourced by
# scripts/gpu-check.sh, which sets the variables and defines the helpers
# (run, say, need_file, die) used here; not meant to be run on its own.
# shellcheck shell=bash disable=SC2154  # dry is set by scripts/gpu-check.sh

stage_build_bench() {
  configure
  build_targets "${PERF_TARGETS[@]}"
}

read -r -a PRESETS <<< "${GPU_CHECK_PRESETS:-base-dense base nllb-moe tiny large}"

stage_bench() {
  local dir="$OUT_DIR/bench" p f done_presets=() cut=() failed=()
  need_file "$ROOT/scripts/bench-gpu.sh"
  bash -n "$ROOT/scripts/bench-gpu.sh" || die "scripts/bench-gpu.sh has a syntax error"
  for f in bench/peers/run_peer.py bench/peers/moetrain_model.py bench/peers/report.py configs/tiny.yaml \
           configs/base-moe.yaml configs/nllb-moe-compatible.yaml; do
    need_file "$ROOT/$f"
  done
  need_bin bench_train_step
  for p in "${PRESETS[@]}"; do
    [[ $p =~ ^(tiny|base|base-dense|large|nllb-moe)$ ]] || die "unknown preset '$p' in GPU_CHECK_PRESETS"
  done
  [[ $dry == 1 ]] || mkdir -p "$dir"
  for p in "${PRESETS[@]}"; do
    local left=STAGE_TIME_LEFT rc=0
    if [[ $dry == 0 ]]; then
      left=$(( $(time_left) - 3 ))
      if (( left < 30 )); then cut+=("$p"); continue; fi
    fi
    run "$dir/$p.log" env "BENCH_BIN=$BIN_DIR/bench_train_step" "PYTHON=$PYTHON" timeout -k 5 "$left" \
      bash "$ROOT/scripts/bench-gpu.sh" --presets "$p" --out "$dir/$p" || rc=$?
    [[ $dry == 1 ]] && continue
    case $rc in
      0) done_presets+=("$p"); cat "$dir/$p/report.md" 2> /dev/null || true ;;
      124|137) cut+=("$p (partial)") ;;
      *) failed+=("$p"); tail -5 "$dir/$p.log" ;;
    esac
  done
  [[ $dry == 0 ]] || return 0
  note "presets done: ${done_presets[*]:-none}; cut for time: ${cut[*]:-none}; failed: ${failed[*]:-none}"
  [[ ${#failed[@]} -eq 0 ]] || die "bench-gpu.sh failed for ${failed[*]}"
  if [[ ${#cut[@]} -gt 0 ]]; then echo "no time left for: ${cut[*]}"; exit 124; fi
}

stage_report() {
  local dir="$OUT_DIR/bench"
  need_file "$ROOT/bench/peers/report.py"
  local commit
  commit=$(git -C "$ROOT" rev-parse --short HEAD 2> /dev/null || echo unknown)
  if [[ $dry == 1 ]]; then
    echo "  \$ cat $(rel "$dir")/*/results.jsonl > $(rel "$dir/results.jsonl")"
    echo "  \$ $(show "$PYTHON" "$ROOT/bench/peers/report.py" "$dir/results.jsonl" --out "$dir/report.md" --date DATE --commit "$commit")"
    return 0
  fi
  compgen -G "$dir/*/results.jsonl" > /dev/null || die "no bench/*/results.jsonl (run the bench stage)"
  cat "$dir"/*/results.jsonl > "$dir/results.jsonl"
  run "$dir/report.log" "$PYTHON" "$ROOT/bench/peers/report.py" "$dir/results.jsonl" --out "$dir/report.md" \
    --date "$(date -u '+%Y-%m-%d %H:%M UTC')" --commit "$commit" \
    --note "one scripts/bench-gpu.sh run per preset; each preset's notes are in bench/PRESET/report.md" \
    || { cat "$dir/report.log"; die "report.py failed"; }
  cat "$dir/report.md"
  local files=("$dir"/*/results.jsonl)
  note "bench/report.md: ${#files[@]} preset(s)"
}
