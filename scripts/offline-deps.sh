#!/usr/bin/env bash
# Bundles the Debian packages moetrain builds and runs with, for a GPU node
# that cannot reach a package repository, and installs the bundle there under
# a prefix of its own (never into /, where it could replace the node's own
# libraries).
#
#   scripts/offline-deps.sh bundle DIR [--include PKG]... [--keep-toolchain]
#       On a connected Debian machine of the node's release: resolves the
#       packages and every dependency as apt would on an empty system,
#       leaves out the compiler toolchain and base system libraries a build
#       node already has (unless --keep-toolchain), and downloads the rest
#       into DIR/debs with a manifest (DIR/packages.txt), and SentencePiece's
#       source archive, which moetrain builds itself, into DIR/sources.
#   scripts/offline-deps.sh install DIR PREFIX
#       On the node: unpacks every .deb of DIR/debs into PREFIX (dpkg -x),
#       recreates the update-alternatives links the packages' install
#       scripts would have made (mpirun, mpicc, the HDF5 headers...) inside
#       PREFIX, copies the SentencePiece source to PREFIX/src, and writes
#       PREFIX/env.sh.
#   scripts/offline-deps.sh check PREFIX
#       Says whether every header, library and program moetrain's build
#       needs is in PREFIX, and lists shared libraries in PREFIX whose
#       dependencies the node cannot resolve (add those with --include).
#
# Then, on the node:
#   source PREFIX/env.sh
#   cmake -S . -B build -G Ninja -DCMAKE_PREFIX_PATH="$MOETRAIN_DEPS_PREFIX;$(python3 -c 'import torch; print(torch.utils.cmake_prefix_path)')"
#   cmake --build build
set -euo pipefail

log() { printf '[offline-deps] %s\n' "$*"; }
die() { printf 'offline-deps: %s\n' "$*" >&2; exit 2; }

# The libraries moetrain builds with (the list scripts/setup.sh installs),
# and pkg-config and ccache, which a build node may lack.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mapfile -t PACKAGES < <(sed 's/#.*//' "$ROOT/scripts/debian-libraries.txt" | tr -s ' \t' '\n' | sed '/^$/d')
PACKAGES+=(pkgconf ccache)

# A build node has a C/C++ toolchain (it compiles CUDA) and a Debian base
# system (dpkg, which `install` uses, among it):
# these come with the dependency closure but are left out of the bundle (the
# runtime libraries of bundled -dev packages, zlib, zstd and OpenSSL, stay in:
# their CMake and pkg-config files name them inside the prefix).
TOOLCHAIN_AND_BASE='^(dpkg|debconf|debianutils|tar|passwd|adduser|gcc-[0-9]+|gcc|g\+\+-[0-9]+|g\+\+|cpp-[0-9]+|cpp|gfortran-[0-9]+|gfortran|binutils.*|libbinutils|libctf.*|libgprofng.*|libjansson.*|libc6|libc6-dev|libc-dev-bin|linux-libc-dev|libcrypt.*|libstdc\+\+.*|libgcc-.*|gcc-[0-9]+-base|libasan.*|liblsan.*|libtsan.*|libubsan.*|libitm.*|libatomic.*|libgomp.*|libquadmath.*|libcc1-.*|libisl.*|libmpc.*|libmpfr.*|libgmp.*|libgfortran-[0-9]+-dev|perl|perl-base|perl-modules-.*|libperl.*|libgdbm.*|m4|autoconf|automake|autotools-dev|openssh-client|liblzma5|libbz2-.*|libselinux1|libpcre2-.*|libacl1|libaudit.*|libcap-ng.*|libdb5.3|libpam.*|libmd0|libbsd0|libtinfo6|libudev1|libsemanage.*|libsepol.*|libcom-err2|libkrb5.*|libk5crypto3|libkeyutils1|libgssapi-krb5-2|libedit2|libcbor.*|libfido2.*|libtirpc.*|libnsl.*|rpcsvc-proto|libuuid1|libffi8|libjs-jquery.*)$'

cmd_bundle() {
  local dir="${1:-}"
  [[ -n "$dir" ]] || die "bundle: missing DIR (usage: offline-deps.sh bundle DIR [--include PKG]... [--keep-toolchain])"
  shift
  local keep_toolchain=0 extra=()
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --include) [[ $# -ge 2 ]] || die "bundle: --include needs a package name"; extra+=("$2"); shift 2 ;;
      --keep-toolchain) keep_toolchain=1; shift ;;
      *) die "bundle: unknown argument '$1'" ;;
    esac
  done
  command -v apt-get >/dev/null || die "bundle: apt-get not found (run this on a Debian machine of the node's release)"
  command -v cmake >/dev/null || die "bundle: cmake not found (it fetches SentencePiece's source: cmake/sentencepiece.cmake)"
  mkdir -p "$dir/debs"
  dir="$(cd "$dir" && pwd)"
  # apt resolves the install set as on a machine with nothing installed, so
  # alternatives ("gfortran | fortran-compiler") get apt's own first choice.
  local empty_status
  empty_status="$(mktemp)"
  local wanted=("${PACKAGES[@]}" "${extra[@]}")
  local resolved
  if ! resolved="$(apt-get install -s --no-install-recommends -o Dir::State::status="$empty_status" \
                     "${wanted[@]}" 2>&1)"; then
    rm -f "$empty_status"
    die "bundle: apt could not resolve the packages: $(printf '%s\n' "$resolved" | grep -E '^E:' | head -1) (run apt-get update first?)"
  fi
  rm -f "$empty_status"
  local all=() kept=() left_out=()
  mapfile -t all < <(printf '%s\n' "$resolved" | awk '$1 == "Inst" {print $2}')
  [[ ${#all[@]} -gt 0 ]] || die "bundle: apt resolved no packages"
  local extra_re=""
  [[ ${#extra[@]} -gt 0 ]] && extra_re="^($(IFS='|'; echo "${extra[*]}"))$"
  for p in "${all[@]}"; do
    if [[ $keep_toolchain == 0 && "$p" =~ $TOOLCHAIN_AND_BASE && ! ( -n "$extra_re" && "$p" =~ $extra_re ) ]]; then
      left_out+=("$p")
    else
      kept+=("$p")
    fi
  done
  log "${#all[@]} packages in the closure; bundling ${#kept[@]}, leaving out ${#left_out[@]} (toolchain and base system)"
  (cd "$dir/debs" && apt-get download -q "${kept[@]}") || die "bundle: apt-get download failed (network? apt-get update?)"
  cmake -DMOETRAIN_SENTENCEPIECE_DOWNLOAD_TO="$dir/sources" -P "$ROOT/cmake/sentencepiece.cmake" > /dev/null ||
    die "bundle: SentencePiece's source could not be downloaded (see the message above)"
  {
    echo "# moetrain offline dependencies: $(. /etc/os-release && echo "$PRETTY_NAME"), $(dpkg --print-architecture)"
    echo "# bundled:"
    printf '%s\n' "${kept[@]}"
    echo "# left out (expected on the node):"
    printf '# %s\n' "${left_out[@]}"
  } > "$dir/packages.txt"
  local n size
  n="$(find "$dir/debs" -name '*.deb' | wc -l)"
  size="$(du -sh "$dir/debs" | cut -f1)"
  log "wrote $n .deb files ($size) to $dir/debs, the manifest $dir/packages.txt and $(basename "$(spm_archive "$dir/sources")") to $dir/sources"
  log "copy $dir and this repository to the node, then: scripts/offline-deps.sh install $dir PREFIX"
}

# update-alternatives links named in a package's postinst, made inside PREFIX:
# "update-alternatives --install LINK NAME PATH PRIORITY [--slave LINK NAME PATH]...".
make_alternatives() {
  local prefix="$1" control="$2"
  [[ -f "$control/postinst" ]] || return 0
  # Join continuation lines, keep the --install commands, and walk their
  # (link, path) pairs: the master pair after --install, then each --slave.
  tr -d '\\' < "$control/postinst" | tr '\n' ' ' | { grep -o 'update-alternatives[^;&|]*--install[^;&|]*' || true; } | \
  while read -r line; do
    # shellcheck disable=SC2086
    set -- $line
    while [[ $# -gt 0 ]]; do
      case "$1" in
        --install|--slave)
          local link="${2:-}" target="${4:-}"
          shift 4 || break
          [[ "$link" == /* && "$target" == /* ]] || continue
          [[ "$link" == *'$'* || "$target" == *'$'* ]] && continue  # a shell variable: skipped
          if [[ -e "$prefix$target" && ! -e "$prefix$link" ]]; then
            mkdir -p "$(dirname "$prefix$link")"
            # Relative links keep working wherever the prefix is moved.
            ln -s "$(realpath -s --relative-to="$(dirname "$prefix$link")" "$prefix$target")" "$prefix$link"
          fi
          ;;
        *) shift ;;
      esac
    done
  done
}

# The SentencePiece source archive in folder $1 (the one cmake/sentencepiece.cmake pins), or nothing.
spm_archive() {
  local version
  version="$(sed -n 's/^set(MOETRAIN_SENTENCEPIECE_VERSION \([0-9.]*\))$/\1/p' "$ROOT/cmake/sentencepiece.cmake")"
  [[ -f "$1/sentencepiece-$version.tar.gz" ]] && echo "$1/sentencepiece-$version.tar.gz"
  return 0
}

cmd_install() {
  local dir="${1:-}" prefix="${2:-}"
  [[ -n "$dir" && -n "$prefix" ]] || die "install: usage: offline-deps.sh install DIR PREFIX"
  [[ -d "$dir/debs" ]] || die "install: $dir/debs not found (make it with: offline-deps.sh bundle $dir)"
  local spm_source
  spm_source="$(spm_archive "$dir/sources")"
  [[ -n "$spm_source" ]] || die "install: $dir/sources holds no SentencePiece source archive (make the bundle again with: offline-deps.sh bundle $dir)"
  [[ "$prefix" != / ]] || die "install: PREFIX must not be / (it would overwrite the node's own files)"
  local debs=()
  mapfile -t debs < <(find "$dir/debs" -name '*.deb' | sort)
  [[ ${#debs[@]} -gt 0 ]] || die "install: no .deb files in $dir/debs"
  mkdir -p "$prefix"
  prefix="$(cd "$prefix" && pwd)"
  local control
  control="$(mktemp -d)"
  for deb in "${debs[@]}"; do
    dpkg-deb -x "$deb" "$prefix" 2>/dev/null || die "install: $deb is not a readable .deb (corrupt download?)"
  done
  # Alternatives after every package is unpacked: their targets must exist.
  for deb in "${debs[@]}"; do
    rm -rf "${control:?}"/*
    dpkg-deb -e "$deb" "$control" 2>/dev/null || die "install: cannot read the control files of $deb"
    make_alternatives "$prefix" "$control"
  done
  rm -rf "$control"
  mkdir -p "$prefix/src"
  cp "$spm_source" "$prefix/src/"
  # The HDF5 compiler wrappers (which CMake's FindHDF5 asks first) and the
  # pkg-config files name /usr: point them at the prefix.
  local f
  for f in "$prefix"/usr/bin/h5cc "$prefix"/usr/bin/h5c++ "$prefix"/usr/bin/h5fc; do
    [[ -f "$f" && ! -L "$f" ]] && sed -i "s|^prefix=\"/usr\"|prefix=\"$prefix/usr\"|" "$f"
  done
  while IFS= read -r f; do
    sed -i -e "s|^prefix=/usr\$|prefix=$prefix/usr|" -e "s|-I/usr/|-I$prefix/usr/|g" -e "s|-L/usr/|-L$prefix/usr/|g" "$f"
  done < <(find "$prefix/usr" -name '*.pc' -type f)
  local multiarch
  multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
  cat > "$prefix/env.sh" <<EOF
# moetrain's offline dependencies under $prefix: source this before building or running.
export MOETRAIN_DEPS_PREFIX="$prefix/usr"
export PATH="$prefix/usr/bin:\$PATH"
export LD_LIBRARY_PATH="$prefix/usr/lib/$multiarch:$prefix/usr/lib/$multiarch/openmpi/lib:$prefix/usr/lib/$multiarch/hdf5/serial\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export PKG_CONFIG_PATH="$prefix/usr/lib/$multiarch/pkgconfig:$prefix/usr/share/pkgconfig\${PKG_CONFIG_PATH:+:\$PKG_CONFIG_PATH}"
export CPATH="$prefix/usr/include\${CPATH:+:\$CPATH}"
# SentencePiece's source, which moetrain's CMake builds (no download).
export MOETRAIN_SENTENCEPIECE_ARCHIVE="$prefix/src/$(basename "$spm_source")"
# Open MPI finds its components, help texts and wrapper data from here.
export OPAL_PREFIX="$prefix/usr"
export OPAL_LIBDIR="$prefix/usr/lib/$multiarch/openmpi/lib"
export OPAL_DATADIR="$prefix/usr/share"
export OPAL_SYSCONFDIR="$prefix/etc/openmpi"
EOF
  log "unpacked ${#debs[@]} packages into $prefix; environment in $prefix/env.sh"
  cmd_check "$prefix"
}

cmd_check() {
  local prefix="${1:-}"
  [[ -n "$prefix" && -d "$prefix" ]] || die "check: usage: offline-deps.sh check PREFIX (an existing folder)"
  prefix="$(cd "$prefix" && pwd)"
  local multiarch
  multiarch="$(dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)"
  local lib="$prefix/usr/lib/$multiarch"
  local missing=0
  # One file per dependency CMake looks for.
  local need=(
    "usr/include/yaml-cpp/yaml.h" "usr/include/hdf5/serial/hdf5.h" "usr/include/boost/program_options.hpp"
    "usr/include/nlohmann/json.hpp" "usr/include/simdjson.h" "usr/include/zlib.h"
    "usr/include/gtest/gtest.h" "usr/include/gmock/gmock.h" "usr/include/zstd.h" "usr/include/xxhash.h"
    "usr/include/re2/re2.h" "usr/include/utf8proc.h" "usr/include/fasttext/fasttext.h" "usr/include/httplib.h"
    "usr/lib/$multiarch/openmpi/include/mpi.h" "usr/bin/mpirun" "usr/bin/mpicc" "usr/bin/pkgconf"
    "usr/lib/$multiarch/hdf5/serial/libhdf5.so" "usr/lib/$multiarch/libyaml-cpp.so"
    "usr/lib/$multiarch/libboost_program_options.so" "usr/lib/$multiarch/libcpp-httplib.so"
    "usr/lib/$multiarch/libmpi.so" "usr/lib/$multiarch/cmake/yaml-cpp"
  )
  for f in "${need[@]}"; do
    if [[ ! -e "$prefix/$f" ]]; then
      echo "missing: $prefix/$f"
      missing=$((missing + 1))
    fi
  done
  if [[ -z "$(spm_archive "$prefix/src")" ]]; then
    echo "missing: SentencePiece's source archive in $prefix/src"
    missing=$((missing + 1))
  fi
  # Shared libraries whose dependencies resolve neither in the prefix nor on the node.
  local unresolved
  unresolved="$(find "$lib" -maxdepth 3 -name '*.so*' -type f 2>/dev/null | while read -r so; do
      LD_LIBRARY_PATH="$lib:$lib/openmpi/lib:$lib/hdf5/serial" ldd "$so" 2>/dev/null | \
        awk -v so="$so" '/not found/ {print $1 " (needed by " so ")"}'
    done | sort -u)"
  if [[ -n "$unresolved" ]]; then
    echo "unresolved shared-library dependencies (bundle their packages with --include):"
    echo "$unresolved" | sed 's/^/  /'
  fi
  if [[ $missing -gt 0 || -n "$unresolved" ]]; then
    die "check: $prefix lacks $missing required file(s)$([[ -n "$unresolved" ]] && echo " and has unresolved libraries")"
  fi
  log "check: every header, library and program moetrain needs is in $prefix, and every library's dependencies resolve"
}

case "${1:-}" in
  bundle) shift; cmd_bundle "$@" ;;
  install) shift; cmd_install "$@" ;;
  check) shift; cmd_check "$@" ;;
  -h|--help|help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//' ;;
  *) die "usage: offline-deps.sh bundle DIR | install DIR PREFIX | check PREFIX (see --help)" ;;
esac
