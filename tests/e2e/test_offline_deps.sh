#!/usr/bin/env bash
# scripts/offline-deps.sh: a bundle of Debian packages and SentencePiece's
# source, unpacked under a prefix, holds everything moetrain's CMake
# configuration looks for (no download at configure time), and
# CMake finds each dependency in the prefix (not in the system) when given
# only the prefix and LibTorch. Also: a corrupt .deb and a missing bundle are
# refused with one line and exit 2. Skips when no Debian package repository
# can be reached.
source "$(dirname "$0")/lib.sh"
work="$MOETRAIN_E2E_WORK/offline_deps"
script="$MOETRAIN_SOURCE_DIR/scripts/offline-deps.sh"
mkdir -p "$work"

if ! command -v apt-get > /dev/null; then
  echo "SKIP: apt-get is absent (not a Debian machine)"
  exit $SKIP
fi
# The bundle is kept between runs of this build (about 52 MB, beside `work`,
# which a passing run removes) and made again when the script is newer than it.
bundle="$MOETRAIN_E2E_WORK/offline_deps_bundle"
if [[ ! -f "$bundle/packages.txt" || "$script" -nt "$bundle/packages.txt" ]]; then
  rm -rf "$bundle"
  if ! bash "$script" bundle "$bundle" > "$work/bundle.log" 2>&1; then
    tail -3 "$work/bundle.log"
    echo "SKIP: the Debian packages could not be downloaded (no repository reachable)"
    rm -rf "$bundle"
    exit $SKIP
  fi
fi
grep '^\[offline-deps\]' "$work/bundle.log" 2>/dev/null || true
for p in libopenmpi-dev openmpi-bin libhdf5-dev libyaml-cpp-dev libgtest-dev; do
  grep -qx "$p" "$bundle/packages.txt" || fail "$p is not in the bundle's manifest"
done
grep -qx "gcc-12" "$bundle/packages.txt" && fail "the toolchain (gcc-12) was bundled"
ls "$bundle"/sources/sentencepiece-*.tar.gz > /dev/null || fail "SentencePiece's source is not in the bundle"

prefix="$work/prefix"
rm -rf "$prefix"
bash "$script" install "$bundle" "$prefix" | tee "$work/install.log"
grep -q "check: every header" "$work/install.log" || fail "install did not pass its own check"
[[ -L "$prefix/usr/bin/mpirun" ]] || fail "the mpirun alternative link was not made"

# Configure moetrain against the prefix and LibTorch only.
torch_cmake="$MOETRAIN_SOURCE_DIR/.venv/lib/python3.11/site-packages/torch/share/cmake"
[[ -d "$torch_cmake" ]] || fail "LibTorch's CMake folder $torch_cmake is absent (run scripts/setup.sh)"
build="$work/build"
rm -rf "$build"
(
  source "$prefix/env.sh"
  "$prefix/usr/bin/mpirun" --version | head -1
  cmake -S "$MOETRAIN_SOURCE_DIR" -B "$build" -G Ninja -DMOETRAIN_BUILD_TESTS=ON \
    -DCMAKE_PREFIX_PATH="$MOETRAIN_DEPS_PREFIX;$torch_cmake" > "$work/configure.log" 2>&1
) || { tail -20 "$work/configure.log"; fail "configuring against the prefix failed"; }
for key in yaml-cpp_DIR HDF5_C_LIBRARY_hdf5 MPI_C_HEADER_DIR MPI_mpi_LIBRARY Boost_DIR nlohmann_json_DIR \
           simdjson_DIR GTest_DIR PKG_CONFIG_EXECUTABLE MOETRAIN_SENTENCEPIECE_ARCHIVE; do
  value=$(sed -n "s/^$key:[A-Z]*=//p" "$build/CMakeCache.txt")
  echo "$key = $value"
  [[ "$value" == "$prefix"/* ]] || fail "$key was not found in the prefix: '$value'"
done

# Refusals: one line, exit 2, nothing unpacked.
broken="$work/broken" unsourced="$work/unsourced"
rm -rf "$broken" "$unsourced"; mkdir -p "$broken/debs" "$unsourced"
echo "not a deb" > "$broken/debs/bad_1.0_amd64.deb"
cp -r "$bundle/sources" "$broken/"
cp -r "$bundle/debs" "$unsourced/"
for args in "install $broken $work/prefix-broken" "install $unsourced $work/prefix-unsourced" \
            "install $work/absent $work/prefix-absent" "check $work/absent"; do
  rc=0
  # shellcheck disable=SC2086
  bash "$script" $args > "$work/out" 2> "$work/err" || rc=$?
  echo "[$rc] $(cat "$work/err")"
  [[ $rc -eq 2 ]] || fail "exit code $rc, wanted 2, for: $args"
  [[ $(wc -l < "$work/err") -eq 1 ]] || fail "wanted one line on stderr for: $args"
done
grep -q "not a readable .deb" <(bash "$script" install "$broken" "$work/prefix-broken" 2>&1) || fail "corrupt .deb not named"
grep -q "no SentencePiece source" <(bash "$script" install "$unsourced" "$work/prefix-unsourced" 2>&1) ||
  fail "a bundle without SentencePiece's source was not named"
[[ ! -e "$work/prefix-unsourced" ]] || fail "a refused install unpacked something"
rm -rf "$build" "$work/prefix-broken" "$unsourced"
echo "PASS"
