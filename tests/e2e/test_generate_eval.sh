#!/usr/bin/env bash
# `moetrain generate` and `moetrain eval` on a briefly trained tiny model
# (span corruption, so its outputs are sentinel-and-word soup):
# greedy outputs are the same in batches of 1 and of 4 (MoE runs dropless in
# generation), beam search with one beam equals greedy, sampling with a seed
# repeats itself; bf16 generation writes every line and GPU generation (where
# there is a GPU) equals the CPU's; `eval` prints BLEU/chrF (equal to sacrebleu's when it is
# installed) and WER/PER/SER on hand-counted pairs; bad arguments exit 2 with
# one line.
source "$(dirname "$0")/lib.sh"
need_brown
work="$MOETRAIN_E2E_WORK/generate_eval"
rm -rf "$work"; mkdir -p "$work"
PY="$MOETRAIN_SOURCE_DIR/.venv/bin/python"

# 30 steps: enough for greedy decoding to emit tokens rather than EOS at once.
train_tiny --output-dir "$work/run" --max-steps 30 --set train.global_batch=8 --set train.micro_batch=8 \
  --set train.eval_every=0 --set optim.warmup_steps=2 > "$work/train.log"
cat > "$work/src.txt" <<'TXT'
The jury said the election was conducted fairly.
It recommended that the city take steps to remedy the problem.
Only a relative handful of such reports was received.
The grand jury commented on a number of other topics.
Mayor Hartsfield said he would look into it.
TXT
gen() { "$MOETRAIN_BIN" generate --checkpoint "$work/run" --input "$work/src.txt" --max-length 12 "$@"; }
gen --batch-size 1 --output "$work/greedy1.txt" || fail "generate failed"
gen --batch-size 4 --output "$work/greedy4.txt"
[[ $(wc -l < "$work/greedy1.txt") -eq 5 ]] || fail "wanted 5 output lines"
[[ $(grep -c . "$work/greedy1.txt") -eq 5 ]] || fail "greedy outputs are empty: $(cat "$work/greedy1.txt")"
cmp -s "$work/greedy1.txt" "$work/greedy4.txt" || fail "greedy outputs depend on the batch size"
gen --method beam --beam-size 1 --output "$work/beam1.txt"
cmp -s "$work/greedy1.txt" "$work/beam1.txt" || fail "beam search with one beam differs from greedy"
gen --method beam --beam-size 4 --output "$work/beam4.txt"
gen --method sample --top-p 0.9 --temperature 0.8 --seed 5 --output "$work/sample-a.txt"
gen --method sample --top-p 0.9 --temperature 0.8 --seed 5 --output "$work/sample-b.txt"
cmp -s "$work/sample-a.txt" "$work/sample-b.txt" || fail "sampling with one seed is not repeatable"
echo "greedy:"; cat "$work/greedy1.txt"
# The model computing in bf16 still writes one output per source.
gen --dtype bf16 --output "$work/greedy-bf16.txt"
[[ $(wc -l < "$work/greedy-bf16.txt") -eq 5 ]] || fail "bf16: wanted 5 output lines"
echo "greedy in bf16:"; cat "$work/greedy-bf16.txt"
if "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  gen --device cuda --output "$work/greedy-cuda.txt"
  cmp -s "$work/greedy1.txt" "$work/greedy-cuda.txt" || fail "greedy outputs on the GPU differ from the CPU's"
  echo "greedy on the GPU equals the CPU's"
else
  expect_error "no CUDA device is available" generate --checkpoint "$work/run" --input "$work/src.txt" --device cuda
fi

# WER/PER/SER on hand-counted lines: 1 edit in 6 symbols, 1 of 2 lines wrong.
printf 'K AE T\nD AO G Z\n' > "$work/hyp.txt"
printf 'K AE T\nD AO G\n' > "$work/ref.txt"
"$MOETRAIN_BIN" eval --hypotheses "$work/hyp.txt" --references "$work/ref.txt" --metrics per,ser > "$work/per.txt"
grep -q "^PER 16.6667% (1 edits / 6 reference tokens)" "$work/per.txt" || fail "PER: $(cat "$work/per.txt")"
grep -q "^SER 50.0000% (1 of 2 lines wrong)" "$work/per.txt" || fail "SER: $(cat "$work/per.txt")"

# BLEU and chrF of the beam outputs against the sources (any text pair will do).
"$MOETRAIN_BIN" eval --hypotheses "$work/beam4.txt" --references "$work/src.txt" --metrics bleu,chrf > "$work/scores.txt"
cat "$work/scores.txt"
if "$PY" -c 'import sacrebleu' 2>/dev/null; then
  expected=$("$PY" - "$work" <<'PY'
import sys
from sacrebleu.metrics import BLEU, CHRF
d = sys.argv[1]
hyp = open(f"{d}/beam4.txt").read().split("\n")[:-1]
ref = open(f"{d}/src.txt").read().split("\n")[:-1]
print(f"{BLEU().corpus_score(hyp, [ref]).score:.4f} {CHRF().corpus_score(hyp, [ref]).score:.4f}")
PY
)
  got="$(awk '/^BLEU/{b=$2} /^chrF /{c=$2} END{print b, c}' "$work/scores.txt")"
  [[ "$got" == "$expected" ]] || fail "moetrain eval says '$got', sacrebleu '$expected'"
  echo "sacrebleu agrees: $expected"
fi

expect_error "unknown decoding method 'topk'" generate --checkpoint "$work/run" --input "$work/src.txt" --method topk
expect_error "dtype must be fp32, bf16 or fp16, got 'fp8'" generate --checkpoint "$work/run" --input "$work/src.txt" --dtype fp8
expect_error "device must be cpu or cuda" generate --checkpoint "$work/run" --input "$work/src.txt" --device tpu
expect_error "cannot read $work/none.txt" generate --checkpoint "$work/run" --input "$work/none.txt"
expect_error "has 2 lines but" eval --hypotheses "$work/src.txt" --references "$work/ref.txt"
expect_error "unknown metric 'meteor'" eval --hypotheses "$work/hyp.txt" --references "$work/ref.txt" --metrics meteor
echo "PASS"
