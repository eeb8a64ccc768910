#!/usr/bin/env bash
# make demo: the whole demo chain from nothing, on this machine.
#
#   dataset -> vocabulary -> mel shards (+ audio) -> VAE -> vocoder -> latents -> teacher (+ text
#   tower) -> text embeddings -> bridge -> student (consistency distillation + adversarial term)
#   -> bundle -> samples -> evaluation report
#
# Every stage is logged (DEMO_WORK/logs/<stage>.log) and resumable: a stage whose outputs exist
# and whose done-marker (DEMO_WORK/stages/<stage>.done) was written after it succeeded is
# skipped; a training stage that was interrupted resumes from its newest checkpoint (./train
# does that by itself). Delete a stage's marker to redo it (and the markers after it).
#
# Environment (all optional):
#   DEMO_SCALE     full (default): 200 clips of 10.24 s, the configs' step counts, bundle in
#                  checkpoints/demo. tiny: 3 clips of 1 s, 64-frame segments and a few steps
#                  per stage (the chain's test, tests/test_demo_chain.c), bundle in DEMO_WORK/bundle.
#   DEMO_WORK      where data, runs, logs and samples go (default: the repository root for
#                  full, required for tiny)
#   DEMO_BUNDLE    the model bundle to write (default checkpoints/demo, or DEMO_WORK/bundle for tiny)
#   DEMO_DEVICE    auto (default), cpu, cuda, cuda:N
#   DEMO_CLIPS     clips in the dataset (default 200 full, 3 tiny)
#   DEMO_STEPS     every training stage runs this many steps (a smoke test of the full-size configs)
#   DEMO_PROMPTS   captions sampled per evaluated set, >= 2 (default 24 full, 2 tiny)
#   MCM_BIN_DIR    where ./train, ./prepare, ./infer are (default: the repository root)
#   MCM_TOOLS_DIR  where the tools are (default: $BUILD/tools, BUILD default build/cpu)
#
# The AudioMAE feature network at demo scale (documented rule, configs/demo.ini [adversarial]):
# a small ViT with random frozen weights from a fixed seed (adversarial.audiomae = random;
# projected-GAN discriminators work on random features), fed through the 64-bin mel -> 128-bin
# fbank bridge fitted on the demo audio with tools/fit_bridge.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

SCALE=${DEMO_SCALE:-full}
case "$SCALE" in
  full | tiny) ;;
  *) echo "demo.sh: DEMO_SCALE=$SCALE: expected full or tiny" >&2; exit 2 ;;
esac
if [ "$SCALE" = tiny ] && [ -z "${DEMO_WORK:-}" ]; then
  echo "demo.sh: DEMO_SCALE=tiny needs DEMO_WORK (a scratch directory)" >&2
  exit 2
fi
WORK=${DEMO_WORK:-.}
mkdir -p "$WORK"
WORK=$(cd "$WORK" && pwd)
BIN=${MCM_BIN_DIR:-$ROOT}
TOOLS=${MCM_TOOLS_DIR:-$ROOT/${BUILD:-build/cpu}/tools}
DEVICE=${DEMO_DEVICE:-auto}
for b in "$BIN/train" "$BIN/prepare" "$BIN/infer" "$TOOLS/make_demo_dataset" "$TOOLS/build_vocab" \
  "$TOOLS/fit_bridge" "$TOOLS/eval_report"; do
  [ -x "$b" ] || { echo "demo.sh: $b is missing (hint: make)" >&2; exit 2; }
done

DATA=$WORK/data/demo
SHARDS=$DATA/shards
RUNS=$WORK/runs
LOGS=$WORK/logs
STAGES=$WORK/stages
SAMPLES=$WORK/samples
mkdir -p "$LOGS" "$STAGES" "$RUNS/demo"

# Scale: the dataset and the --set overrides every stage gets.
if [ "$SCALE" = tiny ]; then
  CLIPS=${DEMO_CLIPS:-3}
  SECONDS_PER_CLIP=1.0
  BUNDLE=${DEMO_BUNDLE:-$WORK/bundle}
  VOCAB_SIZE=400
  # 64-frame segments (0.64 s): latents 8 x 16 x 16; the AudioMAE reads 64 frames
  MEL=(--set prepare.segment_frames=64 --set prepare.hop_frames=64)
  NET=(--set unet.latent_frames=16 --set adversarial.mae_frames=64)
  STEPS_VAE=(--set train.steps=3 --set checkpoint.every=3 --set vae_train.scale_batches=1)
  STEPS_VOC=(--set train.steps=2 --set checkpoint.every=2)
  STEPS_TEACHER=(--set train.steps=2 --set checkpoint.every=2 --set train.batch_size=2)
  STEPS_DISTILL=(--set train.steps=2 --set checkpoint.every=2 --set train.batch_size=2 --set adversarial.virtual_bs=2)
  LOG_EVERY=(--set run.log_every=1)
  EVAL_PROMPTS=2
  EVAL_SECONDS=0.64
  EVAL_SETS="teacher_ddim4 student_cm1 student_cm4 noadv_cm4"
  BRIDGE_HOLDOUT=0
else
  CLIPS=${DEMO_CLIPS:-200}
  SECONDS_PER_CLIP=10.24
  BUNDLE=${DEMO_BUNDLE:-$ROOT/checkpoints/demo}
  VOCAB_SIZE=2000
  # 2.56 s segments, half overlapping (the configs' [prepare]; ./prepare reads no config file)
  MEL=(--set prepare.segment_frames=256 --set prepare.hop_frames=128)
  NET=() STEPS_VAE=() STEPS_VOC=() STEPS_TEACHER=() STEPS_DISTILL=() LOG_EVERY=()
  # 24 captions at the models' native 2.56 s (one UNet window; the teacher's 50 guided steps
  # at 10.24 s would take most of an hour on 2 cores)
  EVAL_PROMPTS=24
  EVAL_SECONDS=2.56
  EVAL_SETS="teacher_ddim50 teacher_ddim4 student_cm1 student_cm2 student_cm4 noadv_cm4"
  BRIDGE_HOLDOUT=5
fi

if [ -n "${DEMO_STEPS:-}" ]; then
  S=(--set "train.steps=$DEMO_STEPS" --set "checkpoint.every=$DEMO_STEPS")
  STEPS_VAE+=("${S[@]}") STEPS_VOC+=("${S[@]}") STEPS_TEACHER+=("${S[@]}") STEPS_DISTILL+=("${S[@]}")
fi
EVAL_PROMPTS=${DEMO_PROMPTS:-$EVAL_PROMPTS}
if ! [ "$EVAL_PROMPTS" -ge 2 ] 2>/dev/null; then
  echo "demo.sh: DEMO_PROMPTS=$EVAL_PROMPTS: at least 2 (the Frechet distance needs two clips per set)" >&2
  exit 2
fi

log() { printf '[demo %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# stage NAME OUTPUT... -- COMMAND...: runs COMMAND (output to logs/NAME.log) unless the stage's
# marker and every OUTPUT exist; writes the marker when it succeeds.
stage() {
  local name=$1
  shift
  local outs=()
  while [ "$1" != -- ]; do outs+=("$1"); shift; done
  shift
  local done=1
  [ -e "$STAGES/$name.done" ] || done=0
  for o in "${outs[@]}"; do [ -e "$o" ] || done=0; done
  if [ $done = 1 ]; then
    log "$name: done already (${outs[*]}), skipped"
    return 0
  fi
  rm -f "$STAGES/$name.done"
  log "$name: $*"
  local t0=$SECONDS
  if ! "$@" >"$LOGS/$name.log" 2>&1; then
    log "$name: FAILED; the end of $LOGS/$name.log:"
    tail -n 20 "$LOGS/$name.log" >&2
    exit 1
  fi
  for o in "${outs[@]}"; do
    [ -e "$o" ] || { log "$name: finished but $o is missing (see $LOGS/$name.log)"; exit 1; }
  done
  touch "$STAGES/$name.done"
  log "$name: ok in $((SECONDS - t0)) s"
}

log "scale $SCALE, work $WORK, bundle $BUNDLE, device $DEVICE"

# 1. The dataset: generated MIDI rendered with fluidsynth, captions from its attributes.
stage dataset "$DATA/manifest.json" -- \
  "$TOOLS/make_demo_dataset" --out "$DATA" --clips "$CLIPS" --seconds "$SECONDS_PER_CLIP" --seed 0

# 2. The byte-level BPE vocabulary of the captions (the text tower's tokenizer).
stage vocab "$RUNS/demo_vocab/vocab.json" "$RUNS/demo_vocab/merges.txt" -- \
  "$TOOLS/build_vocab" --manifest "$DATA/manifest.json" --vocab-size "$VOCAB_SIZE" --out "$RUNS/demo_vocab"

# 3. Mel shards with the audio beside them (the vocoder trains on it).
PREP=(--set run.device="$DEVICE" --set prepare.keep_audio=true "${MEL[@]}")
stage shards "$SHARDS/prepare_summary.txt" -- \
  "$BIN/prepare" --manifest "$DATA/manifest.json" --out "$SHARDS" --overwrite "${PREP[@]}"

# Every training stage: these shards, this device, checkpoints beside its outputs.
train_args() { # $1: the run's name under runs/
  printf '%s\n' --set "data.train_shards=$SHARDS" --set "run.out_dir=$RUNS/$1" \
    --set "checkpoint.dir=$RUNS/$1/checkpoints" --set "run.device=$DEVICE"
}
mapfile -t A_VAE < <(train_args demo_vae)
mapfile -t A_VOC < <(train_args demo_vocoder)
mapfile -t A_TEACHER < <(train_args demo_teacher)
mapfile -t A_DISTILL < <(train_args demo)
mapfile -t A_NOADV < <(train_args demo_noadv)

# 4. The VAE on the log-mels (its latent scale factor measured on the data).
stage vae "$RUNS/demo_vae/vae.h5" -- \
  "$BIN/train" configs/demo_vae.ini "${A_VAE[@]}" "${MEL[@]}" "${STEPS_VAE[@]}" "${LOG_EVERY[@]}"

# 5. The vocoder on the audio (mel L1 + multi-resolution STFT).
stage vocoder "$RUNS/demo_vocoder/vocoder.h5" -- \
  "$BIN/train" configs/demo_vocoder.ini "${A_VOC[@]}" "${MEL[@]}" "${STEPS_VOC[@]}" "${LOG_EVERY[@]}"

# 6. Latents (the VAE posterior's moments) into the shards.
stage latents "$SHARDS/encoders.h5" -- \
  "$BIN/prepare" --add-latents --out "$SHARDS" --vae "$RUNS/demo_vae/vae.h5" "${PREP[@]}"

# 7. The teacher UNet with its text tower trained jointly: unet.h5 (EMA), text_encoder.h5, tokenizer/.
stage teacher "$RUNS/demo_teacher/unet.h5" "$RUNS/demo_teacher/text_encoder.h5" "$RUNS/demo_teacher/tokenizer/vocab.json" -- \
  "$BIN/train" configs/demo_teacher.ini "${A_TEACHER[@]}" --set "text.tokenizer=$RUNS/demo_vocab" "${MEL[@]}" "${NET[@]}" \
  "${STEPS_TEACHER[@]}" "${LOG_EVERY[@]}"

# 8. The captions' embeddings by the (now frozen) tower, for distillation (latents re-encoded too).
stage text_emb "$SHARDS/encoders.h5" -- \
  "$BIN/prepare" --add-latents --out "$SHARDS" --vae "$RUNS/demo_vae/vae.h5" \
  --text-encoder "$RUNS/demo_teacher/text_encoder.h5" --tokenizer "$RUNS/demo_teacher/tokenizer" "${PREP[@]}"

# 9. The 64-bin mel -> 128-bin fbank bridge into the AudioMAE, fitted on the demo audio.
stage bridge "$RUNS/demo/bridge.h5" -- \
  "$TOOLS/fit_bridge" --out "$RUNS/demo/bridge.h5" --seconds "$SECONDS_PER_CLIP" --holdout "$BRIDGE_HOLDOUT" "$DATA"/audio/*.wav

# 10. The student: consistency distillation of the teacher, with the adversarial term.
stage distill "$RUNS/demo/student.h5" -- \
  "$BIN/train" configs/demo.ini "${A_DISTILL[@]}" --set "teacher.weights=$RUNS/demo_teacher/unet.h5" \
  --set "vae.weights=$RUNS/demo_vae/vae.h5" --set "adversarial.bridge=$RUNS/demo/bridge.h5" "${MEL[@]}" "${NET[@]}" \
  "${STEPS_DISTILL[@]}" "${LOG_EVERY[@]}"

# 10b. The paper's ablation: the same distillation without the adversarial term (evaluated
# beside the student; not part of the bundle).
stage distill_noadv "$RUNS/demo_noadv/student.h5" -- \
  "$BIN/train" configs/demo.ini "${A_NOADV[@]}" --set train.adversarial=false \
  --set "teacher.weights=$RUNS/demo_teacher/unet.h5" --set "vae.weights=$RUNS/demo_vae/vae.h5" \
  "${MEL[@]}" "${NET[@]}" "${STEPS_DISTILL[@]}" "${LOG_EVERY[@]}"

# 11. The bundle ./infer reads.
make_bundle() {
  mkdir -p "$BUNDLE/tokenizer"
  cp "$RUNS/demo_teacher/unet.h5" "$RUNS/demo/student.h5" "$RUNS/demo_vae/vae.h5" "$RUNS/demo_vocoder/vocoder.h5" \
    "$RUNS/demo_teacher/text_encoder.h5" "$RUNS/demo/bridge.h5" "$BUNDLE/"
  cp "$RUNS/demo_teacher/tokenizer/vocab.json" "$RUNS/demo_teacher/tokenizer/merges.txt" "$BUNDLE/tokenizer/"
}
stage bundle "$BUNDLE/unet.h5" "$BUNDLE/student.h5" "$BUNDLE/vae.h5" "$BUNDLE/vocoder.h5" "$BUNDLE/text_encoder.h5" \
  "$BUNDLE/bridge.h5" "$BUNDLE/tokenizer/vocab.json" "$BUNDLE/tokenizer/merges.txt" -- make_bundle
# The ablation's bundle: the same files with its student.
NOADV_BUNDLE=$RUNS/demo_noadv/bundle
make_noadv_bundle() {
  mkdir -p "$NOADV_BUNDLE/tokenizer"
  cp "$BUNDLE/unet.h5" "$BUNDLE/vae.h5" "$BUNDLE/vocoder.h5" "$BUNDLE/text_encoder.h5" "$NOADV_BUNDLE/"
  cp "$BUNDLE/tokenizer/vocab.json" "$BUNDLE/tokenizer/merges.txt" "$NOADV_BUNDLE/tokenizer/"
  cp "$RUNS/demo_noadv/student.h5" "$NOADV_BUNDLE/"
}
stage bundle_noadv "$NOADV_BUNDLE/student.h5" -- make_noadv_bundle

# 12. Samples: the first EVAL_PROMPTS captions, one clip each, per sampler setting.
mkdir -p "$SAMPLES"
head -n "$EVAL_PROMPTS" "$DATA/captions.lst" | cut -d'|' -f2- >"$SAMPLES/prompts.txt"
for set in $EVAL_SETS; do
  bundle=$BUNDLE
  case "$set" in
    teacher_ddim*) opts=(--sampler ddim --steps "${set#teacher_ddim}") ;;
    student_cm*) opts=(--sampler cm --steps "${set#student_cm}") ;;
    noadv_cm*) opts=(--sampler cm --steps "${set#noadv_cm}") bundle=$NOADV_BUNDLE ;;
  esac
  stage "sample_$set" "$SAMPLES/$set" -- \
    "$BIN/infer" --checkpoint "$bundle" --prompts-file "$SAMPLES/prompts.txt" --out "$SAMPLES/$set" \
    --seconds "$EVAL_SECONDS" --seed 0 --device "$DEVICE" --timings "${opts[@]}"
done

# 13. Evaluation, one report of every set against the demo audio (tools/eval_report): Frechet
# distance on log-mel statistics, prompt adherence (tempo, key, genre against the captions'
# attributes), latency per component from ./infer --timings, and a mel-spectrogram grid:
# eval/report.json, eval/report.md, eval/mels.png.
EVAL_ARGS=()
for set in $EVAL_SETS; do EVAL_ARGS+=(--set "$set=$SAMPLES/$set,timings=$LOGS/sample_$set.log"); done
stage report "$WORK/eval/report.json" "$WORK/eval/report.md" "$WORK/eval/mels.png" -- \
  "$TOOLS/eval_report" --reference "$DATA/audio" --manifest "$DATA/manifest.json" \
  --prompts "$SAMPLES/prompts.txt" "${EVAL_ARGS[@]}" --out "$WORK/eval"
cat "$WORK/eval/report.md"
log "done: bundle $BUNDLE, report $WORK/eval/report.md"
