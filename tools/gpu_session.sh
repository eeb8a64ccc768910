#!/usr/bin/env bash
# tools/gpu_session.sh: everything one short GPU session measures, in one call, each stage
# under its own time limit so that one hang cannot eat the session:
#   env        nvidia-smi -L and the GPU's limits, the commit
#   build      make -j16 CUDA=1 (./train, the tools, the GPU test binary); or, with a device kit:
#   kit        the programs built here by tools/device_kit.sh (.kit/, unpacked from .kit.tar.xz
#              when that is present): source .kit/env.sh, copy .kit/bin/{train,infer,prepare}
#              to the repository root; no make at all (the GPU machine's image lacks mcm's
#              libraries and has no apt; the Makefile's dependency check would try apt-get)
#   data       make_random_bundle --full-size + make_random_shards (configs/bench_step.ini sizes),
#              in the background while test-gpu runs (CPU work beside GPU work)
#   test_gpu   make test-gpu (kit: .kit/bin/mcm_tests_gpu, from the repository root as make runs it)
#   train_bf16 ./train configs/bench_step.ini: the full-size MusicCM step, batch 8, bf16
#   train_fp32 the same in fp32 (each once more at half the batch if it fails, e.g. out of
#              memory: train_bf16_half, train_fp32_half)
#   bench      make bench, only where `make -n bench` shows a real target (kit: .kit/bin/tools/bench
#              when the kit has one)
# Device memory is sampled with nvidia-smi every 0.2 s during each training run (the peak of
# memory.used, all processes); host memory is /usr/bin/time's maximum RSS.
# Everything lands in $OUT (default ./gpu_out): one log per stage and summary.md.
#
#   tools/gpu_session.sh              the GPU session (about 8.5 minutes at most: BUDGET_S=500)
#   tools/gpu_session.sh --small      the same flow at tiny sizes on the CPU (tiny random bundle,
#                                     tiny shards), to check the script itself without a GPU
#   KIT=1 tools/gpu_session.sh --small   the same with the kit's programs (checks the kit here)
# Environment: PYTHON (the one with torch for the bench, default python3), OUT, BUDGET_S (whole-run seconds, default 500), JOBS (default 16), CUDA_ARCHS
# (default 90: H100/H200 only, half the nvcc time of the Makefile's "80 90"), STEPS_BF16 (6),
# STEPS_FP32 (4), KIT (auto: the kit when .kit/ or .kit.tar.xz is there, except with --small;
# 1: the kit or an error; 0: make). Run from the repository root.
#
# The device call (the device tool's `run`), after tools/device_kit.sh has made .kit.tar.xz here:
#   command   OUT=/tmp/gs tools/gpu_session.sh; rc=$?; tar czf $OUT/gs.tgz -C /tmp gs; exit $rc
#   carry     [".kit.tar.xz"]
#   timeout_s 560
# The script unpacks the kit itself (`tar xJf .kit.tar.xz && tools/gpu_session.sh` does the same).
# The tool brings back at most 8 files from its own $OUT and this script writes about 16: hence
# OUT=/tmp/gs and one tarball, gs.tgz, in the tool's $OUT. summary.md is also printed at the end.
set -u

SMALL=0
OUT=${OUT:-./gpu_out}
while [ $# -gt 0 ]; do
  case "$1" in
    --small) SMALL=1 ;;
    --out) OUT=$2; shift ;;
    -h|--help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "gpu_session.sh: error: unknown argument '$1' (see --help)" >&2; exit 2 ;;
  esac
  shift
done
[ -f configs/bench_step.ini ] || { echo "gpu_session.sh: error: run it from the repository root" >&2; exit 2; }
mkdir -p "$OUT" || { echo "gpu_session.sh: error: cannot create $OUT" >&2; exit 2; }
OUT=$(cd "$OUT" && pwd)
# A reused OUT: nothing from an earlier session may pass for this one's results.
rm -f "$OUT"/*.log "$OUT"/*.jsonl "$OUT"/*.mem "$OUT"/*.rss "$OUT"/data.rc "$OUT"/summary.md

BUDGET_S=${BUDGET_S:-500}
KIT=${KIT:-auto}
case $KIT in auto|0|1) ;; *) echo "gpu_session.sh: error: KIT must be auto, 0 or 1, not '$KIT'" >&2; exit 2 ;; esac
JOBS=${JOBS:-16}
CUDA_ARCHS=${CUDA_ARCHS:-90}
STEPS_BF16=${STEPS_BF16:-6}
STEPS_FP32=${STEPS_FP32:-4}
T0=$(date +%s)
SUMMARY=$OUT/summary.md
STAGES=$OUT/stages.tsv
: > "$STAGES"

# The device kit: a carried .kit.tar.xz is unpacked afresh (a warm machine may still hold an
# older .kit/ from an earlier call); python3's tarfile where tar finds no xz program.
USE_KIT=0
if [ "$KIT" != 0 ] && { [ "$KIT" = 1 ] || [ $SMALL = 0 ]; }; then
  if [ -f .kit.tar.xz ]; then
    rm -rf .kit
    if ! tar xJf .kit.tar.xz 2> /dev/null; then
      rm -rf .kit
      python3 -c 'import sys, tarfile
kw = {"filter": "tar"} if hasattr(tarfile, "tar_filter") else {}
tarfile.open(sys.argv[1]).extractall(".", **kw)' .kit.tar.xz ||
        { echo "gpu_session.sh: error: cannot unpack .kit.tar.xz (tar xJf and python3 tarfile failed)" >&2; exit 2; }
    fi
  fi
  [ -d .kit/bin ] && USE_KIT=1
  [ "$KIT" = 1 ] && [ $USE_KIT = 0 ] && { echo "gpu_session.sh: error: KIT=1 but there is no .kit/ or .kit.tar.xz (make it with tools/device_kit.sh)" >&2; exit 2; }
fi

if [ $SMALL = 1 ]; then
  MAKEFLAGS_MCM=(CUDA=0)
  BIN=build/cpu
  WORK=runs/bench_step_small
  BUNDLE_ARGS=()
  BATCH=2
  # configs/tiny.ini-like sizes that fit make_random_bundle's tiny VAE (4 latent channels,
  # down 2: mel 32 x 16 -> latents 16 x 8); the teacher comes from make_random_shards --teacher
  # (the tiny bundle's UNet has another time embedding than ./train builds from [unet]).
  SIZE_SETS=(--set run.device=cpu --set mel.n_mels=16 --set prepare.segment_frames=32
    --set unet.in_channels=4 --set unet.model_channels=16 --set unet.channel_mult=1,2
    --set unet.num_res_blocks=1 --set unet.attention_levels=1 --set unet.norm_groups=8
    --set unet.num_head_channels=16 --set unet.context_dim=16 --set unet.latent_frames=16
    --set unet.latent_bins=8 --set adversarial.taps=-1,1 --set adversarial.mae_frames=32
    --set adversarial.mae_bins=8 --set adversarial.mae_patch=4 --set adversarial.mae_dim=16
    --set adversarial.mae_depth=2 --set adversarial.mae_heads=2 --set adversarial.cmap_dim=8
    --set adversarial.head_kernel=3 --set adversarial.virtual_bs=2 --set train.batch_size=2
    --set data.num_workers=0)
  TEACHER=$WORK/teacher.h5
  SHARD_ARGS=(--rows 8 --teacher "$TEACHER")
else
  MAKEFLAGS_MCM=(CUDA=1 "CUDA_ARCHS=$CUDA_ARCHS")
  BIN=build/cuda
  WORK=runs/bench_step
  BUNDLE_ARGS=(--full-size)
  BATCH=8
  SIZE_SETS=()
  TEACHER=$WORK/bundle/unet.h5
  SHARD_ARGS=(--rows 32)
fi
# The kit's programs keep the make build's layout: BIN/tools/NAME, BIN/mcm_tests_gpu.
TRAIN=./train
if [ $USE_KIT = 1 ]; then
  BIN=.kit/bin
  TRAIN=.kit/bin/train
fi
# Every path under WORK (the paths in configs/bench_step.ini, set again so that --small and
# another WORK use the same lines).
PATH_SETS=(--set "teacher.weights=$TEACHER" --set "vae.weights=$WORK/bundle/vae.h5"
  --set "data.train_shards=$WORK/data/shard_*.h5" --set "data.encoders=$WORK/data/encoders.h5"
  --set "adversarial.bridge=$WORK/data/bridge.h5")

elapsed() { echo $(( $(date +%s) - T0 )); }

# The seconds a stage may have: its own limit, cut so that `reserve` seconds stay for the
# stages after it; 0 when fewer than 20 would be left.
limit_for() {
  local want=$1 reserve=$2 left
  left=$(( BUDGET_S - $(elapsed) - reserve ))
  [ $left -lt $want ] && want=$left
  [ $want -lt 20 ] && want=0
  echo $want
}

# stage NAME LIMIT RESERVE CMD...: runs CMD under timeout with its output in OUT/NAME.log and
# records "name rc seconds limit" in stages.tsv. rc 124/137: timed out; "skip": no time left.
stage() {
  local name=$1 want=$2 reserve=$3 lim s rc
  shift 3
  lim=$(limit_for "$want" "$reserve")
  if [ "$lim" = 0 ]; then
    printf '%s\tskip\t0\t0\n' "$name" >> "$STAGES"
    echo "== $name: skipped (no time left in BUDGET_S=$BUDGET_S)"
    return 99
  fi
  echo "== $name (limit ${lim}s, at $(elapsed)s): $*"
  s=$(date +%s)
  timeout --kill-after=20 "$lim" "$@" > "$OUT/$name.log" 2>&1
  rc=$?
  printf '%s\t%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - s ))" "$lim" >> "$STAGES"
  echo "   rc $rc after $(( $(date +%s) - s ))s; last lines:"
  tail -n 3 "$OUT/$name.log" | cut -c1-300 | sed 's/^/   | /'
  return $rc
}

# ------------------------------------------------------------------ env
{
  echo "date: $(date -u +%FT%TZ)"
  echo "mode: $([ $SMALL = 1 ] && echo 'small (CPU, tiny sizes)' || echo 'full size (GPU)')"
  echo "commit: $(git log -1 --format='%h %s' 2>/dev/null)"
  [ $USE_KIT = 1 ] && echo "programs: device kit, $(head -n 1 .kit/MANIFEST 2>/dev/null)"
  echo "uncommitted: $(git status --short 2>/dev/null | wc -l) paths"
  echo "cores: $(nproc)"
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi -L
    nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,power.limit,driver_version --format=csv
  else
    echo "nvidia-smi: not found"
  fi
  command -v nvcc > /dev/null && nvcc --version | tail -n 2
} > "$OUT/env.txt" 2>&1
cat "$OUT/env.txt"

# ------------------------------------------------------------------ build
# Priorities when time runs short: build, train_bf16 (150 s), test_gpu (120 s), train_fp32 (what is
# left): each stage leaves room for the ones above it that are still to come.
# kit_install: the kit's env.sh in this shell (LD_LIBRARY_PATH for every stage after it), its
# main programs at the top as make would leave them (not with --small: the CPU ./train here
# stays). The stage fails when env.sh reports a library not found, but the session goes on as
# long as ./train starts (a tool's missing library should not cost the training runs).
kit_install() {
  local s=$(date +%s) rc=0 run_rc=0 b kc hc
  echo "== kit (at $(elapsed)s): source .kit/env.sh"
  # shellcheck disable=SC1091
  . .kit/env.sh > "$OUT/kit.log" 2>&1 || rc=$?
  # The tests and configs come from this checkout: say so when the kit was built from another.
  kc=$(sed -n 's/^mcm device kit: commit \([0-9a-f]*\).*/\1/p' .kit/MANIFEST 2>/dev/null)
  hc=$(git rev-parse --short HEAD 2>/dev/null)
  if [ -n "$kc" ] && [ -n "$hc" ] && [ "$kc" != "$hc" ]; then
    echo "kit: WARNING: built from commit $kc, this checkout is $hc" >> "$OUT/kit.log"
  fi
  if [ $SMALL = 0 ]; then
    for b in train infer prepare; do
      [ -f .kit/bin/$b ] && { cp -f .kit/bin/$b ./$b || run_rc=1; }
    done
  fi
  # The loader's word on the main program, before any stage depends on it.
  "$TRAIN" --help > /dev/null 2>> "$OUT/kit.log" || { run_rc=$?; echo "kit: $TRAIN --help: exit $run_rc" >> "$OUT/kit.log"; }
  [ $rc = 0 ] && rc=$run_rc
  printf 'kit\t%s\t%s\t0\n' "$rc" "$(( $(date +%s) - s ))" >> "$STAGES"
  echo "   rc $rc; last lines:"
  tail -n 3 "$OUT/kit.log" | cut -c1-300 | sed 's/^/   | /'
  return $run_rc
}
if [ $USE_KIT = 1 ]; then
  kit_install
else
  stage build 240 160 make -j"$JOBS" "${MAKEFLAGS_MCM[@]}" all $([ $SMALL = 0 ] && echo $BIN/mcm_tests_gpu)
fi
BUILD_RC=$?

# ------------------------------------------------------------------ data (background)
data_job() {
  rm -rf "$WORK"
  mkdir -p "$WORK"
  local s=$(date +%s)
  timeout 200 "$BIN/tools/make_random_bundle" "${BUNDLE_ARGS[@]}" --out "$WORK/bundle" || return $?
  echo "bundle: $(( $(date +%s) - s ))s; $(du -sh "$WORK/bundle" | cut -f1)"
  timeout 60 "$BIN/tools/make_random_shards" --config configs/bench_step.ini "${SIZE_SETS[@]}" \
    --out "$WORK/data" "${SHARD_ARGS[@]}" || return $?
  echo "data: $(( $(date +%s) - s ))s"
}
DATA_PID=
if [ $BUILD_RC = 0 ]; then
  DATA_T=$(date +%s)
  ( data_job > "$OUT/data.log" 2>&1; echo $? > "$OUT/data.rc" ) &
  DATA_PID=$!
  echo "== data: started in the background (log data.log)"
fi

# ------------------------------------------------------------------ test-gpu
if [ $BUILD_RC = 0 ] && [ $USE_KIT = 1 ]; then
  # What `make test-gpu` runs, without make (OMP_WAIT_POLICY as the Makefile exports it).
  stage test_gpu 120 160 env OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-passive}" "$BIN/mcm_tests_gpu"
elif [ $BUILD_RC = 0 ]; then
  stage test_gpu 120 160 make "${MAKEFLAGS_MCM[@]}" test-gpu
else
  printf 'test_gpu\tskip\t0\t0\n' >> "$STAGES"
fi

if [ -n "$DATA_PID" ]; then
  wait "$DATA_PID"
  DATA_RC=$(cat "$OUT/data.rc" 2>/dev/null || echo 1)
  printf 'data\t%s\t%s\t200\n' "$DATA_RC" "$(( $(date +%s) - DATA_T ))" >> "$STAGES"
  echo "== data: rc $DATA_RC"; tail -n 3 "$OUT/data.log" | sed 's/^/   | /'
else
  DATA_RC=skip
  printf 'data\tskip\t0\t0\n' >> "$STAGES"
fi

# ------------------------------------------------------------------ training runs
# train_run NAME LIMIT RESERVE PRECISION STEPS BATCH: one ./train run in WORK/NAME, device
# memory sampled meanwhile into OUT/NAME.mem (MiB, one line per 0.2 s).
train_run() {
  local name=$1 want=$2 reserve=$3 prec=$4 steps=$5 batch=$6 smi= rc
  rm -rf "$WORK/$name" "$OUT/$name.jsonl" "$OUT/$name.mem" "$OUT/$name.rss"
  if command -v nvidia-smi > /dev/null; then
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 > "$OUT/$name.mem" 2>/dev/null &
    smi=$!
  fi
  local timer=()
  [ -x /usr/bin/time ] && timer=(/usr/bin/time -f 'max_rss_kb %M' -o "$OUT/$name.rss")
  stage "$name" "$want" "$reserve" "${timer[@]}" "$TRAIN" configs/bench_step.ini --fresh "${SIZE_SETS[@]}" \
    "${PATH_SETS[@]}" --set "run.out_dir=$WORK/$name/run" --set "checkpoint.dir=$WORK/$name/ckpt" \
    --set "train.precision=$prec" --set "train.steps=$steps" --set "train.batch_size=$batch" \
    --set "adversarial.virtual_bs=$batch"
  rc=$?
  [ -n "$smi" ] && kill "$smi" 2>/dev/null && wait "$smi" 2>/dev/null
  cp "$WORK/$name/run/log.jsonl" "$OUT/$name.jsonl" 2>/dev/null
  rm -rf "$WORK/$name/ckpt" # gigabytes at full size
  return $rc
}

# train_pair NAME LIMIT RESERVE PRECISION STEPS: the run at the full batch, and once more at
# half the batch if it failed other than by time (batch 8 may not fit: half still gives a step
# time and a memory figure).
RUNS=()
train_pair() {
  local name=$1 want=$2 reserve=$3 prec=$4 steps=$5 rc
  train_run "$name" "$want" "$reserve" "$prec" "$steps" "$BATCH"
  rc=$?
  RUNS+=("$name")
  if [ $rc != 0 ] && [ $rc != 124 ] && [ $rc != 137 ] && [ $rc != 99 ]; then
    train_run "${name}_half" "$want" "$reserve" "$prec" "$steps" $(( BATCH / 2 ))
    RUNS+=("${name}_half")
  fi
}
if [ "$DATA_RC" = 0 ]; then
  train_pair train_bf16 150 90 bf16 "$STEPS_BF16"
  train_pair train_fp32 120 10 fp32 "$STEPS_FP32"
else
  printf 'train_bf16\tskip\t0\t0\ntrain_fp32\tskip\t0\t0\n' >> "$STAGES"
fi

# ------------------------------------------------------------------ bench
# With the kit, no make at all (parsing the Makefile runs its dependency check, i.e. apt-get).
if [ $USE_KIT = 1 ]; then
  if [ -x "$BIN/tools/bench" ]; then
    # make bench's three steps without make; diffusers comes from carried wheels (.whl, see
    # bench/README.md) when the machine lacks it. Fewer iterations than make bench's 10.
    PY=${PYTHON:-python3}
    if [ -d .whl ] && ! "$PY" -c 'import diffusers' 2> /dev/null; then
      "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        > "$OUT/bench_wheels.log" 2>&1 && export PYTHONPATH=/tmp/site${PYTHONPATH:+:$PYTHONPATH}
    fi
    BDEV=$([ $SMALL = 1 ] && echo cpu || echo cuda)
    BSIZE=$([ $SMALL = 1 ] && echo small || echo full)
    stage bench 240 0 bash -c '
      rc=0
      "$1/tools/bench" --device "$2" --size "$3" --iters 5 --warmup 1 --out "$4/bench_mcm.json" || rc=1
      "$5" tools/bench_torch.py --device "$2" --size "$3" --iters 5 --warmup 1 --out "$4/bench_torch.json" || rc=1
      "$5" tools/bench_report.py "$4/bench_mcm.json" "$4/bench_torch.json" --out-dir "$4" || rc=1
      exit $rc' _ "$BIN" "$BDEV" "$BSIZE" "$OUT" "$PY"
  else
    printf 'bench\tskip\t0\t0\n' >> "$STAGES"
    echo "== bench: skipped (the kit has no tools/bench)"
  fi
elif make -n "${MAKEFLAGS_MCM[@]}" bench > "$OUT/bench_dry.log" 2>&1 && ! grep -q "does not exist" "$OUT/bench_dry.log"; then
  stage bench 120 0 make "${MAKEFLAGS_MCM[@]}" bench
else
  printf 'bench\tskip\t0\t0\n' >> "$STAGES"
  echo "== bench: skipped (make -n bench shows no real target; see bench_dry.log)"
fi

# ------------------------------------------------------------------ summary
# One table row per run from its log.jsonl (jget: the number after "KEY": on a line).
run_table() {
  local name=$1 f=$OUT/$1.jsonl mem rss
  mem=$( [ -s "$OUT/$name.mem" ] && sort -n "$OUT/$name.mem" | tail -n 1 )
  rss=$( [ -s "$OUT/$name.rss" ] && awk '/max_rss_kb/ {printf "%.2f", $2 / 1048576}' "$OUT/$name.rss" )
  [ -s "$f" ] || { echo "| $name | no log.jsonl (see $name.log) | | | | | | | ${mem:-?} | ${rss:-?} | - |"; return; }
  awk -v name="$name" -v mem="${mem:-?}" -v rss="${rss:-?}" '
    function jget(k,   m) {
      if (match($0, "\"" k "\": [-+0-9.eEnaif]+")) { m = substr($0, RSTART, RLENGTH); sub(/^.*: /, "", m); return m }
      return ""
    }
    {
      n++; step = jget("step"); sps = jget("samples_per_s"); tf = jget("tflops_per_device"); mfu = jget("mfu")
      fl = jget("flops_per_step"); fb = jget("flops_bf16_per_step"); world = jget("world")
      dt = (sps > 0) ? B / sps : 0
      if (n == 1) { first = dt } else { sdt += dt; stf += tf; smfu += mfu; k++; if (mfu != "") km++ }
      extra = ""
      s = $0
      while (match(s, /"[a-z_]*(mem|bytes)[a-z_]*": [-+0-9.eE]+/)) { extra = extra " " substr(s, RSTART, RLENGTH); s = substr(s, RSTART + RLENGTH) }
    }
    END {
      if (k == 0) { sdt = first; stf = tf; smfu = mfu; k = 1; km = (mfu != "") }
      if (extra == "") extra = " -"
      printf "| %s | %d | %.3f | %.3f | %.2f | %.3g | %s | %.3g (%.0f%% bf16) | %s | %s |%s |\n", name, n, first, sdt / k,
        (sdt > 0 ? B * k / sdt : 0), stf / k, (km ? sprintf("%.1f%%", 100 * smfu / k) : "n/a"), fl / 1e12,
        (fl > 0 ? 100 * fb / fl : 0), mem, rss, extra
    }' B="$(batch_of "$name")" "$f"
}
batch_of() { case $1 in *_half) echo $(( BATCH / 2 )) ;; *) echo $BATCH ;; esac; }

{
  echo "# GPU session summary ($([ $SMALL = 1 ] && echo 'small mode: CPU, tiny sizes' || echo 'full size'))"
  echo
  echo '```'
  cat "$OUT/env.txt"
  echo '```'
  echo
  echo "## Stages (total $(elapsed)s of BUDGET_S=$BUDGET_S)"
  echo
  echo "| stage | result | seconds | limit s |"
  echo "|---|---|---|---|"
  while IFS=$'\t' read -r n rc s l; do
    case $rc in
      0) r=ok ;; skip) r=skipped ;; 124|137) r="TIMEOUT (rc $rc)" ;; *) r="FAILED (rc $rc)" ;;
    esac
    echo "| $n | $r | $s | $l |"
  done < "$STAGES"
  echo
  echo "## Training step (configs/bench_step.ini; batch $BATCH per device, _half: $(( BATCH / 2 )))"
  echo
  echo "Step time = batch / samples_per_s of each log line (log_every 1). Steady = mean over steps 2..N"
  echo "(step 1 carries the set-up costs). Device memory: the peak of nvidia-smi memory.used, MiB,"
  echo "sampled every 0.2 s (all processes; the arena keeps its high-water mark). Host: max RSS, GiB."
  echo
  echo "| run | steps | step 1 s | steady step s | samples/s | TFLOP/s | MFU | model TFLOP/step | device MiB | host GiB | memory keys in log |"
  echo "|---|---|---|---|---|---|---|---|---|---|---|"
  for r in "${RUNS[@]}"; do run_table "$r"; done
  echo
  for r in "${RUNS[@]}"; do
    echo "### $r: the trainer's own lines"
    echo '```'
    grep -E '^(# device|# train.precision|step |# done)|error' "$OUT/$r.log" 2>/dev/null | cut -c1-400 | tail -n 12
    echo '```'
  done
  if [ -f "$OUT/kit.log" ]; then
    echo "## kit"
    echo '```'
    cat "$OUT/kit.log"
    echo '```'
  fi
  echo "## make test-gpu$([ $USE_KIT = 1 ] && echo ' (kit: .kit/bin/mcm_tests_gpu)')"
  echo '```'
  grep -E 'passed|FAIL|SKIPPED|error' "$OUT/test_gpu.log" 2>/dev/null | tail -n 40
  echo '```'
  if [ -f "$OUT/bench.log" ]; then
    echo "## make bench (tail)"
    echo '```'
    tail -n 40 "$OUT/bench.log"
    echo '```'
  fi
  echo "## data"
  echo '```'
  cat "$OUT/data.log" 2>/dev/null
  echo '```'
} > "$SUMMARY"
echo "== summary: $SUMMARY ($(elapsed)s)"
cat "$SUMMARY"
