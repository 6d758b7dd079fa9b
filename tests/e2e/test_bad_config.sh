#!/usr/bin/env bash
# Acceptance: a bad config exits with code 2 and one line naming the key or
# file: unknown key (with a suggestion), wrong type, heads not dividing
# d_model, missing data file, malformed YAML, impossible layout, pipeline cut
# points that do not fit the model.
source "$(dirname "$0")/lib.sh"
work="$MOETRAIN_E2E_WORK/bad_config"
rm -rf "$work"; mkdir -p "$work/data"
cfg="$MOETRAIN_SOURCE_DIR/configs/tiny.yaml"

printf 'model:\n  d_modle: 64\n' > "$work/unknown.yaml"
expect_error "unknown key 'model.d_modle' (did you mean 'model.d_model'?) ($work/unknown.yaml:2)" \
  train --config "$work/unknown.yaml"
expect_error "unknown key 'optim.learning_rate'" train --config "$cfg" --set optim.learning_rate=1
expect_error "model.d_model: expected an integer, got 'big'" train --config "$cfg" --set model.d_model=big
expect_error "model.n_heads: 3 heads do not divide d_model = 128" train --config "$cfg" --set model.n_heads=3
expect_error "data.train: no such file or directory: $work/nowhere" train --config "$cfg" --set data.train="$work/nowhere"
printf 'model: [1, 2\n' > "$work/broken.yaml"
expect_error "$work/broken.yaml:.*invalid YAML" train --config "$work/broken.yaml"
expect_error "config file not found: $work/none.yaml" train --config "$work/none.yaml"
expect_error "train.global_batch: 10 is not divisible by micro_batch \* dp = 8 \* 1" \
  train --config "$cfg" --set train.global_batch=10 --set data.train="$work/data"
expect_error "model.norm: 'batchnorm' is not one of: layernorm, rmsnorm" train --config "$cfg" --set model.norm=batchnorm
expect_error "parallel.pp_cuts: needs pp - 1 = 0 cut point(s), got 1" \
  train --config "$cfg" --set 'parallel.pp_cuts=[decoder.layers.0]' --set data.train="$work/data"
expect_error "unknown command" frobnicate
echo "PASS"
