#!/usr/bin/env bash
# Train the face CNN on a GPU machine (the `device` tool's H200; see models/face/README.md,
# "Training on a GPU"). Run from the repository root with two ignored folders carried:
#   .whl/      keras and the dependencies the machine lacks, as wheels
#   .devdata/  fer2013.npz, from `emorec train face --pack --data <FER2013> --out .devdata/fer2013.npz`
# Writes into $OUT: checkpoints/best.keras (the best PublicTest epoch, without optimizer state:
# about 10 MB at width 48), checkpoints/state.json (per-epoch history) and train.log. Export them
# where TensorFlow is, with `emorec train face ... --resume` (the README gives the command).
# Settings from the environment, with their defaults: EPOCHS=60 WIDTH=48 BATCH=64 SEED=2
# AUGMENT=photo WORKERS=12 TIME_LIMIT=300 (seconds of training; training stops after the last
# epoch that fits, and is killed 60 s after it) LIMIT= (a random subset of that many faces, for checks).
set -u
: "${OUT:?set OUT to the folder for the results}"
EPOCHS=${EPOCHS:-60} WIDTH=${WIDTH:-48} BATCH=${BATCH:-64} SEED=${SEED:-2} AUGMENT=${AUGMENT:-photo}
WORKERS=${WORKERS:-12} TIME_LIMIT=${TIME_LIMIT:-300} SITE=${SITE:-/tmp/site} RUN=${RUN:-/tmp/face-run}
start=$SECONDS
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
    .whl/*.whl || exit
# One OpenCV thread per process: each worker augments whole 48x48 faces, one at a time.
export PYTHONPATH=$SITE:$PWD KERAS_BACKEND=jax PYTHONUNBUFFERED=1 OPENCV_FOR_THREADS_NUM=1
python3 -c 'import jax, keras; print("keras", keras.__version__, "on jax", jax.__version__, jax.devices())' 2>&1 \
    | tee "$OUT/train.log"
echo "installed in $((SECONDS - start)) s" | tee -a "$OUT/train.log"
# Without TensorFlow the run ends by saying that the export needs it: expected here. --resume: a
# second call on a machine still warm continues the run from its last epoch.
timeout --signal=INT $((${TIME_LIMIT%.*} + 60)) python3 -m emorec.cli train face --data .devdata/fer2013.npz \
    --resume --out "$RUN" --epochs "$EPOCHS" --width "$WIDTH" --batch-size "$BATCH" --seed "$SEED" \
    --augment "$AUGMENT" --workers "$WORKERS" --time-limit "$TIME_LIMIT" ${LIMIT:+--limit "$LIMIT"} 2>&1 \
    | grep --line-buffered -v -e "os.fork() was called" -e "multi-threaded, use of fork()" -e "^  self.pid = os.fork()" \
    | tee -a "$OUT/train.log"
echo "trained until $((SECONDS - start)) s" | tee -a "$OUT/train.log"
mkdir -p "$OUT/checkpoints"
cp "$RUN/checkpoints/state.json" "$OUT/checkpoints/" || exit
python3 -c 'import sys, keras; keras.models.load_model(sys.argv[1], compile=False).save(sys.argv[2])' \
    "$RUN/checkpoints/best.keras" "$OUT/checkpoints/best.keras" || exit
python3 -c 'import json, sys; s = json.load(open(sys.argv[1])); print("epochs:", s["epoch"], "best val_accuracy:", s["best"])' \
    "$OUT/checkpoints/state.json" | tee -a "$OUT/train.log"
echo "done in $((SECONDS - start)) s" | tee -a "$OUT/train.log"
