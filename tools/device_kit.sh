#!/usr/bin/env bash
# tools/device_kit.sh: builds here, on Debian 12, the programs a GPU session runs, with every shared
# library they need that the GPU machine lacks, so that the session needs no `make` there (its
# image has nvcc, the CUDA libraries and PyTorch, but not libhdf5, libsndfile, libinih, soxr,
# fftw3, jansson, libpng, OpenBLAS, and no network or apt to get them).
#
#   tools/device_kit.sh            build (sm_90 only), collect, check, pack .kit.tar.xz
#   tools/device_kit.sh --check    only the check of an existing .kit/ (see below)
#
# What it makes:
#   .kit/bin/{train,infer,prepare,mcm_tests_gpu}, .kit/bin/tools/<every tools/*.c program>
#       built with `make CUDA=1 CUDA_ARCHS=90 MPI=0 BUILD=build/kit90` into build/kit90 (the
#       Makefile names a flavour folder build/$(BUILD); overriding BUILD keeps build/cuda and the
#       top-level ./train untouched), host debug info stripped (symbols kept for backtraces).
#       MPI=0: a one-process run never calls MPI_Init (kernels/comm.c does only under mpirun's
#       OMPI_* variables), but a binary linked with -lmpi needs Open MPI's whole closure (and
#       its plugin folder) just to start; the GPU session runs one process.
#       LDFLAGS adds --as-needed (no unused libraries, e.g. fluidsynth, which only
#       make_demo_dataset uses) and --enable-new-dtags (RUNPATH, which LD_LIBRARY_PATH
#       overrides; the Makefile's RPATH to /usr/lib/.../openblas-openmp would win over it).
#       Not in the kit: make_demo_dataset and the CPU test binary (fluidsynth's closure: SDL2,
#       X11, PulseAudio, JACK; neither runs in a GPU session). KIT_CPU_TESTS=1 adds both.
#   .kit/lib   the ldd closure of those programs, less what the GPU machine has itself:
#       glibc (libc, libm, libdl, librt, libpthread, libresolv, ld-linux), libstdc++ and
#       libgcc_s (there wherever PyTorch runs), and the CUDA libraries (libcudart, libcublas,
#       libcublasLt, libcudnn*, libnccl: the CUDA 13 toolkit and the torch venv's
#       nvidia-cudnn-cu13 / nvidia-nccl-cu13 wheels). libgomp (OpenMP) and OpenBLAS's
#       libgfortran/libquadmath travel, as do libhdf5's libcurl/krb5/ssl dependencies.
#   .kit/env.sh  source it there: LD_LIBRARY_PATH = .kit/lib, the CUDA toolkit's lib64 (next
#       to nvcc), the cuDNN and NCCL lib folders of the torch venv (found through python3, the
#       nvidia.* modules, else by find under /opt /usr/local /usr/lib); then ldd of every kit
#       program, each "not found" on its own line, and a non-zero status if any.
#   .kit/MANIFEST  the commit it was built from, flags, sizes.
#   .kit.tar.xz  all of it; it must fit beside the repo in the device tool's 64 MiB (the
#       tracked and untracked-not-ignored files travel too): the script fails if it does not.
#
# The check (also run after every build): each kit program once (--help; mcm_tests_gpu in full,
# which prints SKIPPED without a GPU) with LD_LIBRARY_PATH=.kit/lib and LD_DEBUG=libs; it fails
# if any library outside the allow-list above was loaded from outside .kit/lib, or if a program
# could not start. Without a GPU, the CUDA libraries dlopen'ed at run time (the driver, cuDNN's
# sub-libraries) are not exercised here.
#
# The GPU session (one call of the device tool's `run`; tools/gpu_session.sh unpacks the kit):
#   command   OUT=/tmp/gs tools/gpu_session.sh; rc=$?; tar czf $OUT/gs.tgz -C /tmp gs; exit $rc
#   carry     [".kit.tar.xz"]
#   timeout_s 560
# (the tool returns at most 8 files from its $OUT, the session writes about 16: one tarball;
# plain `tools/gpu_session.sh` runs the same, with summary.md at the end of the output).
# By hand there: `. .kit/env.sh`, then .kit/bin/train ... from the repository root.
# Environment: CUDA_ARCHS (default 90), JOBS (make -j, default 2), KIT_CPU_TESTS (0).
# Run from the repository root.
set -euo pipefail

MODE=build
case "${1:-}" in
  "") ;;
  --check) MODE=check ;;
  -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
  *) echo "device_kit.sh: error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
esac
[ -f Makefile ] && [ -f tools/gpu_session.sh ] || { echo "device_kit.sh: error: run it from the repository root" >&2; exit 2; }

ARCHS=${CUDA_ARCHS:-90}
KB=build/kit$(echo "$ARCHS" | tr -d ' ')
JOBS=${JOBS:-2}
CPU_TESTS=${KIT_CPU_TESTS:-0}
KIT=.kit
TAR=.kit.tar.xz
LIMIT_MIB=64 # the device tool's limit on what travels with one call

# What the GPU machine has itself (by soname): glibc, the C++ runtime, CUDA, and the driver
# (libcuda, libnvidia-*: dlopen'ed by libcudart where a GPU is).
allowed() {
  case "$1" in
    linux-vdso.so.* | ld-linux*.so.* | libc.so.* | libm.so.* | libdl.so.* | librt.so.* | libpthread.so.* | libresolv.so.*) return 0 ;;
    libstdc++.so.* | libgcc_s.so.*) return 0 ;;
    libcudart.so.* | libcublas.so.* | libcublasLt.so.* | libcudnn*.so* | libnccl.so.*) return 0 ;;
    libcuda.so* | libnvidia-*) return 0 ;;
  esac
  return 1
}

# The kit's programs, as paths under .kit/bin.
kit_programs() {
  local f
  for f in "$KIT"/bin/* "$KIT"/bin/tools/*; do
    [ -f "$f" ] && [ -x "$f" ] && echo "$f"
  done
}

# ------------------------------------------------------------------ check
check_kit() {
  [ -d "$KIT/bin" ] && [ -d "$KIT/lib" ] || { echo "device_kit.sh: error: no $KIT/bin and $KIT/lib (build the kit first)" >&2; return 2; }
  local tmp bad=0 n=0 prog name args rc f path lib
  tmp=$(mktemp -d)
  local kitlib
  kitlib=$(cd "$KIT/lib" && pwd)
  echo "== check: each program with LD_LIBRARY_PATH=$KIT/lib LD_DEBUG=libs"
  for prog in $(kit_programs); do
    name=${prog##*/}
    n=$((n + 1))
    case $name in
      mcm_tests_gpu) args=() ;;        # the whole suite: SKIPPED without a GPU
      mcm_tests) args=(--list) ;;
      bench_cpu) args=(SKIP) ;;        # no option parsing: any run is the whole bench; ldd only
      *) args=(--help) ;;
    esac
    rm -f "$tmp"/dbg.* "$tmp/out"
    touch "$tmp/out"
    rc=0
    [ "${args[*]}" = SKIP ] || env LD_LIBRARY_PATH="$kitlib" LD_DEBUG=libs LD_DEBUG_OUTPUT="$tmp/dbg" \
      timeout 60 "$prog" "${args[@]}" > "$tmp/out" 2>&1 < /dev/null || rc=$?
    if grep -q "error while loading shared libraries" "$tmp/out"; then
      echo "FAIL $prog: $(grep -m1 'error while loading shared libraries' "$tmp/out")"
      bad=1
      continue
    fi
    case $name in
      train | infer | prepare)
        [ $rc = 0 ] || { echo "FAIL $prog --help: exit $rc: $(head -c 300 "$tmp/out")"; bad=1; } ;;
      mcm_tests_gpu)
        if [ $rc != 0 ] || ! grep -qE '^(SKIPPED|[0-9]+ passed)' "$tmp/out"; then
          echo "FAIL $prog: exit $rc: $(tail -n 3 "$tmp/out")"
          bad=1
        else
          echo "     $prog: $(grep -m1 -E '^SKIPPED|passed' "$tmp/out" | cut -c1-160)"
        fi ;;
    esac
    # Every object the loader opened: "calling init: PATH" (run time, dlopen included) plus
    # ldd's list under the same LD_LIBRARY_PATH (objects without constructors print no init).
    {
      cat "$tmp"/dbg.* 2> /dev/null | sed -n 's/^ *[0-9]*:[[:space:]]*calling init: //p' || true
      LD_LIBRARY_PATH="$kitlib" ldd "$prog" > "$tmp/ldd" 2>&1 || true
      awk '$2 == "=>" && $3 ~ /^\// { print $3 }' "$tmp/ldd"
    } | sort -u > "$tmp/libs"
    while read -r path; do
      [ -z "$path" ] && continue
      lib=${path##*/}
      case $path in
        "$kitlib"/*) ;;
        *) allowed "$lib" || { echo "FAIL $prog: $lib loaded from $path, outside $KIT/lib"; bad=1; } ;;
      esac
    done < "$tmp/libs"
    if grep -q "not found" "$tmp/ldd"; then
      grep "not found" "$tmp/ldd" | sed "s|^[[:space:]]*|FAIL $prog: |"
      bad=1
    fi
  done
  rm -rf "$tmp"
  if [ $bad = 0 ]; then
    echo "== check: ok: $n programs; every library outside glibc, libstdc++/libgcc_s and CUDA came from $KIT/lib"
  else
    echo "== check: FAILED (lines above)"
  fi
  return $bad
}

if [ $MODE = check ]; then
  check_kit
  exit $?
fi

# ------------------------------------------------------------------ build
TOOLS=()
for f in tools/*.c; do
  t=${f#tools/}
  t=${t%.c}
  [ "$t" = make_demo_dataset ] && [ "$CPU_TESTS" != 1 ] && continue
  TOOLS+=("$t")
done
MAIN=(train infer)
[ -f prepare.c ] && MAIN+=(prepare)
TARGETS=()
for b in "${MAIN[@]}"; do TARGETS+=("$KB/bin/$b"); done
for t in "${TOOLS[@]}"; do TARGETS+=("$KB/tools/$t"); done
TARGETS+=("$KB/mcm_tests_gpu")
[ "$CPU_TESTS" = 1 ] && TARGETS+=("$KB/mcm_tests")
MAKE_ARGS=(CUDA=1 "CUDA_ARCHS=$ARCHS" MPI=0 "BUILD=$KB"
  "LDFLAGS=-fopenmp -Wl,--as-needed -Wl,--enable-new-dtags")
echo "== build: make -j$JOBS ${MAKE_ARGS[*]} (${#TARGETS[@]} programs)"
make -j"$JOBS" "${MAKE_ARGS[@]}" "${TARGETS[@]}"

# ------------------------------------------------------------------ collect
rm -rf "$KIT" "$TAR"
mkdir -p "$KIT/bin/tools" "$KIT/lib"
for b in "${MAIN[@]}"; do cp "$KB/bin/$b" "$KIT/bin/$b"; done
for t in "${TOOLS[@]}"; do cp "$KB/tools/$t" "$KIT/bin/tools/$t"; done
cp "$KB/mcm_tests_gpu" "$KIT/bin/"
[ "$CPU_TESTS" = 1 ] && cp "$KB/mcm_tests" "$KIT/bin/"
# -g is host debug info only (3-4 MB a program); the symbol table stays for backtraces.
for p in $(kit_programs); do strip --strip-debug "$p"; done
for p in $(kit_programs); do
  if readelf -d "$p" | grep -q '(RPATH)'; then
    echo "device_kit.sh: error: $p has an RPATH, which LD_LIBRARY_PATH cannot override" >&2
    exit 1
  fi
done

: > "$KIT/cuda_sonames"
missing=0
for p in $(kit_programs); do
  # "name => /path (addr)"; "name => not found"
  while read -r name arrow path _; do
    [ "$arrow" = "=>" ] || continue
    if [ "$path" = not ]; then
      echo "device_kit.sh: error: $p needs $name, not found here" >&2
      missing=1
      continue
    fi
    if allowed "$name"; then
      case $name in libcu* | libnccl*) echo "$name" >> "$KIT/cuda_sonames" ;; esac
      continue
    fi
    [ -e "$KIT/lib/$name" ] || cp -L "$path" "$KIT/lib/$name"
  done < <(ldd "$p")
done
[ $missing = 0 ] || exit 1
sort -u -o "$KIT/cuda_sonames" "$KIT/cuda_sonames"

# ------------------------------------------------------------------ env.sh
cat > "$KIT/env.sh" << 'EOF'
# .kit/env.sh (written by tools/device_kit.sh): source it with bash on the GPU machine before
# running .kit/bin programs. Sets LD_LIBRARY_PATH to .kit/lib, the CUDA toolkit's lib64 and the
# torch venv's cuDNN and NCCL folders, then checks with ldd that every kit program resolves;
# returns non-zero (and prints each "not found") if one does not. Changes no shell options.
_kit_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
_kit_py=
for _kit_p in /opt/torch/.venv/bin/python3 python3; do
  command -v "$_kit_p" > /dev/null 2>&1 && { _kit_py=$_kit_p; break; }
done
# _kit_pylib MODULE: MODULE's lib folder (the nvidia.* wheels are namespace packages: their
# __file__ is None, __path__ holds the folder).
_kit_pylib() {
  [ -n "$_kit_py" ] || return 0
  "$_kit_py" -c 'import importlib, os, sys
try:
    m = importlib.import_module(sys.argv[1])
    d = os.path.join(list(m.__path__)[0], "lib")
    print(d if os.path.isdir(d) else "")
except Exception:
    pass' "$1" 2> /dev/null
  return 0
}
# _kit_find SONAME: the folder of the first SONAME under /opt /usr/local /usr/lib (no stubs).
_kit_find() {
  { find /opt /usr/local /usr/lib -name "$1" -not -path '*/stubs/*' 2> /dev/null || true; } | head -n 1 | xargs -r dirname
  return 0
}
_kit_cuda=
if command -v nvcc > /dev/null 2>&1; then
  _kit_cuda=$(dirname "$(dirname "$(command -v nvcc)")")
elif [ -d /usr/local/cuda ]; then
  _kit_cuda=/usr/local/cuda
fi
_kit_dirs=$_kit_dir/lib
for _kit_d in "$_kit_cuda/lib64" "$_kit_cuda/targets/x86_64-linux/lib" "$(_kit_pylib nvidia.cudnn)" "$(_kit_pylib nvidia.nccl)"; do
  [ -n "$_kit_d" ] && [ -d "$_kit_d" ] && _kit_dirs=$_kit_dirs:$_kit_d
done
# Each CUDA soname the programs need must be on that path or in ld.so's cache; else find it
# (the CUDA 13 wheels keep cudart/cublas in nvidia/cu13/lib).
while read -r _kit_so; do
  [ -z "$_kit_so" ] && continue
  _kit_hit=
  for _kit_d in ${_kit_dirs//:/ }; do [ -e "$_kit_d/$_kit_so" ] && { _kit_hit=1; break; }; done
  [ -z "$_kit_hit" ] && ldconfig -p 2> /dev/null | grep -q "^[[:space:]]*$_kit_so " && _kit_hit=1
  if [ -z "$_kit_hit" ]; then
    _kit_d=$(_kit_find "$_kit_so")
    [ -n "$_kit_d" ] && _kit_dirs=$_kit_dirs:$_kit_d
  fi
done < "$_kit_dir/cuda_sonames"
export LD_LIBRARY_PATH=$_kit_dirs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export MCM_KIT_DIR=$_kit_dir
echo "kit: $(head -n 1 "$_kit_dir/MANIFEST" 2> /dev/null)"
echo "kit: LD_LIBRARY_PATH=$LD_LIBRARY_PATH"
_kit_bad=0
for _kit_p in "$_kit_dir"/bin/* "$_kit_dir"/bin/tools/*; do
  [ -f "$_kit_p" ] && [ -x "$_kit_p" ] || continue
  while read -r _kit_l; do
    echo "kit: NOT FOUND: ${_kit_p#$_kit_dir/} needs $_kit_l"
    _kit_bad=1
  done < <(ldd "$_kit_p" 2>&1 | awk '/not found/ { print $1 }')
done
[ $_kit_bad = 0 ] && echo "kit: every program's libraries resolve (ldd)"
unset _kit_py _kit_p _kit_d _kit_so _kit_hit _kit_cuda _kit_dirs _kit_l
unset -f _kit_pylib _kit_find
[ $_kit_bad = 0 ]
EOF

{
  echo "mcm device kit: commit $(git rev-parse --short HEAD)$( [ -n "$(git status --porcelain --untracked-files=no 2> /dev/null)" ] && echo ' (with uncommitted changes)'), built $(date -u +%FT%TZ) on $(. /etc/os-release && echo "$PRETTY_NAME")"
  echo "make ${MAKE_ARGS[*]}"
  make -s -n "${MAKE_ARGS[@]}" "$KB/mcm_tests_gpu" 2>&1 | grep -m1 '^mcm build:' || true
  echo "glibc needed at most: $(objdump -T $(kit_programs) "$KIT"/lib/* 2> /dev/null | grep -o 'GLIBC_[0-9.]*' | sort -uV | tail -n 1)"
  echo "libstdc++ needed at most: $(objdump -T $(kit_programs) "$KIT"/lib/* 2> /dev/null | grep -o 'GLIBCXX_[0-9.]*' | sort -uV | tail -n 1)"
  echo "CUDA libraries expected on the machine: $(tr '\n' ' ' < "$KIT/cuda_sonames")"
  echo "files:"
  (cd "$KIT" && find bin lib -type f -printf '%s\t%p\n' | sort -k2)
} > "$KIT/MANIFEST"

# ------------------------------------------------------------------ check, pack
check_kit

echo "== pack: $TAR (xz -6: -9 saves 5% here at ten times the time)"
tar -C . -cf - "$KIT" | xz -6 -T"$JOBS" > "$TAR"
kit_b=$(stat -c %s "$TAR")
# What travels besides: tracked and untracked-not-ignored files.
repo_b=$(git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s 2> /dev/null | awk '{ s += $1 } END { print s + 0 }')
# A shared/ folder inside the checkout travels as well, ignored or not (counted twice where tracked).
[ -d shared ] && repo_b=$((repo_b + $(du -sb shared | cut -f1)))
limit_b=$((LIMIT_MIB * 1048576))
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo "== $TAR: $(mib "$kit_b") ($(mib "$(du -sb "$KIT" | cut -f1)") unpacked); repo files that travel too: $(mib "$repo_b"); together $(mib $((kit_b + repo_b))) of the ${LIMIT_MIB} MiB a call may carry"
if [ $((kit_b + repo_b + 1048576)) -gt $limit_b ]; then
  echo "device_kit.sh: error: kit and repo exceed ${LIMIT_MIB} MiB less 1 MiB of room; leave KIT_CPU_TESTS unset, or drop programs" >&2
  exit 1
fi
echo "== done. Device call: command 'OUT=/tmp/gs tools/gpu_session.sh; rc=\$?; tar czf \$OUT/gs.tgz -C /tmp gs; exit \$rc', carry [\"$TAR\"], timeout_s 560"
