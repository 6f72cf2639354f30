"""Training with backend-agnostic Keras 3: the face CNN and the speech head.

Each run writes `<out>/checkpoints/` after every epoch (so `--resume` continues it, on
any backend) and, when done, the serving files: `<out>/model.tflite` and `<out>/model.json`.
"""

import json
import math
import os
import time
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

from . import datasets, labels as label_sets  # noqa: E402
from .image import face_input  # noqa: E402


def face_network(num_classes, width=32):
    """A VGG-style CNN for 48x48 grey faces: four conv blocks, global pooling, logits out."""
    inputs = keras.Input((48, 48, 1), name="face")
    x = inputs
    for block, filters in enumerate((width, 2 * width, 4 * width, 8 * width)):
        for _ in range(2):
            x = layers.Conv2D(filters, 3, padding="same", use_bias=False)(x)
            x = layers.BatchNormalization()(x)
            x = layers.ReLU()(x)
        x = layers.MaxPooling2D()(x)
        x = layers.SpatialDropout2D(0.05 * (block + 1))(x)
    x = layers.GlobalAveragePooling2D()(x)
    x = layers.Dropout(0.4)(x)
    return keras.Model(inputs, layers.Dense(num_classes, name="logits")(x), name="face_cnn")


# Augmentation recipes for training faces (recorded in model.json). "standard" is the FER2013 recipe
# the shipped CNN was trained with; "photo" adds what faces found in real photos go through: a looser
# detector crop, low resolution, blur, sensor noise, JPEG, and other light. Each degradation is
# applied with its probability (about one face in seven goes through none of them).
AUGMENTATIONS = {
    "standard": {"rotation": 12, "scale": [0.9, 1.1], "shift": 0.1, "erase": 0.5},
    "photo": {"rotation": 15, "scale": [0.8, 1.25], "shift": 0.12, "erase": 0.5,
              "light": 0.5, "gamma": [0.6, 1.6], "contrast": [0.6, 1.3], "brightness": 40,
              "low_resolution": 0.3, "face_pixels": [16, 40], "blur": 0.2, "blur_sigma": [0.4, 1.5],
              "noise": 0.2, "noise_sigma": [2, 10], "jpeg": 0.4, "jpeg_quality": [15, 90]},
}


def augment_face(face, rng, recipe=AUGMENTATIONS["standard"]):
    """A random variant of a 48x48 grey uint8 face under an AUGMENTATIONS recipe: flip, one affine
    warp (rotation, scale, shift), the recipe's photo degradations if any, and random erasing."""
    def happens(step):  # draws only for the recipe's own steps: "standard" keeps its random stream
        return step in recipe and rng.random() < recipe[step]

    if rng.random() < 0.5:
        face = face[:, ::-1]
    matrix = cv2.getRotationMatrix2D((24, 24), rng.uniform(-recipe["rotation"], recipe["rotation"]),
                                     rng.uniform(*recipe["scale"]))
    matrix[:, 2] += rng.uniform(-48 * recipe["shift"], 48 * recipe["shift"], 2)
    face = cv2.warpAffine(face, matrix, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if happens("light"):  # gamma, then contrast about the mean and brightness
        light = (face / 255.0) ** rng.uniform(*recipe["gamma"]) * 255
        light = (light - light.mean()) * rng.uniform(*recipe["contrast"]) + light.mean()
        light += rng.uniform(-recipe["brightness"], recipe["brightness"])
        face = np.clip(light, 0, 255).astype(np.uint8)
    small = happens("low_resolution")
    if small:  # the face was this many pixels wide in the photo: noise, blur and JPEG act at that size
        side = int(rng.integers(recipe["face_pixels"][0], recipe["face_pixels"][1] + 1))
        face = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    if happens("blur"):
        face = cv2.GaussianBlur(face, (0, 0), rng.uniform(*recipe["blur_sigma"]) * face.shape[0] / 48)
    if happens("noise"):
        noise = rng.normal(0, rng.uniform(*recipe["noise_sigma"]), face.shape)
        face = np.clip(face + noise, 0, 255).astype(np.uint8)
    if happens("jpeg"):
        quality = int(rng.integers(recipe["jpeg_quality"][0], recipe["jpeg_quality"][1] + 1))
        face = cv2.imdecode(cv2.imencode(".jpg", face, [cv2.IMWRITE_JPEG_QUALITY, quality])[1],
                            cv2.IMREAD_GRAYSCALE)
    if small:
        face = cv2.resize(face, (48, 48), interpolation=cv2.INTER_LINEAR)
    if happens("erase"):
        height, width = rng.integers(8, 24, 2)
        top, left = rng.integers(0, 48 - height), rng.integers(0, 48 - width)
        face[top:top + height, left:left + width] = rng.integers(0, 256)
    return face


class FaceBatches(keras.utils.PyDataset):
    """Shuffled, augmented FER2013 batches of (faces, one-hot targets, class weights).

    With `workers` over 1, that many processes augment batches ahead of the training step.
    """

    def __init__(self, faces, targets, num_classes, batch_size, seed, weights, epoch=0,
                 recipe=AUGMENTATIONS["standard"], workers=1):
        super().__init__(workers=workers, use_multiprocessing=workers > 1,
                         max_queue_size=max(10, 2 * workers))
        self.faces, self.targets, self.batch_size, self.seed = faces, targets, batch_size, seed
        self.recipe = recipe
        self.onehot = np.eye(num_classes, dtype=np.float32)[targets]
        self.sample_weights = np.array([weights[t] for t in targets], np.float32)
        self.epoch = epoch
        self.on_epoch_end()

    def __len__(self):
        return math.ceil(len(self.faces) / self.batch_size)

    def on_epoch_end(self):
        self.epoch += 1
        self.order = np.random.default_rng([self.seed, self.epoch]).permutation(len(self.faces))

    def __getitem__(self, index):
        rows = self.order[index * self.batch_size:(index + 1) * self.batch_size]
        rng = np.random.default_rng([self.seed, self.epoch, index])
        batch = np.stack([face_input(augment_face(self.faces[row].copy(), rng, self.recipe)) for row in rows])
        return batch, self.onehot[rows], self.sample_weights[rows]


def class_weights(targets, num_classes):
    """Inverse-square-root class frequencies, scaled to mean 1 (disgust is 1.6 % of FER2013)."""
    counts = np.bincount(targets, minlength=num_classes).astype(np.float64)
    weights = 1 / np.sqrt(np.maximum(counts, 1))
    return dict(enumerate(weights / np.average(weights, weights=counts)))


def cosine_schedule(peak, epochs, warmup=2):
    """Learning rate per epoch: linear warm-up, then cosine decay to zero."""
    def rate(epoch, _=None):
        if epoch < warmup:
            return peak * (epoch + 1) / warmup
        return 0.5 * peak * (1 + math.cos(math.pi * (epoch - warmup) / max(1, epochs - warmup)))
    return rate


class Checkpoint(keras.callbacks.Callback):
    """Saves the whole training state after every epoch, and the best model on validation."""

    def __init__(self, folder, monitor="val_accuracy"):
        super().__init__()
        self.folder, self.monitor = Path(folder), monitor
        self.folder.mkdir(parents=True, exist_ok=True)

    def state(self):
        path = self.folder / "state.json"
        return json.loads(path.read_text()) if path.exists() else {"epoch": 0, "best": None, "history": []}

    def on_epoch_end(self, epoch, logs=None):
        state = self.state()
        logs = {key: float(value) for key, value in (logs or {}).items()}
        state["history"].append({"epoch": epoch + 1, **logs})
        if state["best"] is None or logs[self.monitor] > state["best"]:
            state["best"] = logs[self.monitor]
            self.model.save(self.folder / "best.keras")
        self.model.save(self.folder / "last.keras")
        state["epoch"] = epoch + 1
        (self.folder / "state.json").write_text(json.dumps(state, indent=1))


class TimeLimit(keras.callbacks.Callback):
    """Stops training after the epoch that leaves less time than that epoch took."""

    def __init__(self, seconds):
        super().__init__()
        self.deadline = time.monotonic() + seconds

    def on_epoch_begin(self, epoch, logs=None):
        self.started = time.monotonic()

    def on_epoch_end(self, epoch, logs=None):
        now = time.monotonic()
        if now + (now - self.started) > self.deadline:
            print(f"stopping after epoch {epoch + 1}: the time limit leaves too little for another")
            self.model.stop_training = True


def _compiled(model, learning_rate):
    """The model compiled with the project's one recipe: AdamW, smoothed cross-entropy on logits."""
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=1e-4),
                  loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
                  metrics=["accuracy"])
    return model


def _fit(build, train, validation, out, epochs, learning_rate, resume, batch_size=None, time_limit=None):
    """Compile (or resume) and fit with per-epoch checkpoints; returns the best model on validation.

    `train` is an (inputs, one-hot targets) pair, or a function of the first epoch to run that
    returns a keras PyDataset; `validation` is an (inputs, one-hot targets) pair. A complete run
    needs only `best.keras` (and state.json), so the slim checkpoint of a GPU run exports here.
    `time_limit` (seconds) stops training early, after the last epoch that fits.
    """
    checkpoint = Checkpoint(Path(out) / "checkpoints")
    state = checkpoint.state()
    if state["epoch"] and not resume:
        raise SystemExit(f"{checkpoint.folder} holds a run: pass --resume, or a new --out")
    if state["epoch"] >= epochs:
        print(f"the run is complete at epoch {state['epoch']}; exporting its best epoch")
    else:
        if state["epoch"]:
            if not (checkpoint.folder / "last.keras").exists():
                raise SystemExit(f"{checkpoint.folder} holds no last.keras to continue from; to export "
                                 f"its best epoch, pass --epochs {state['epoch']} with --resume")
            model = keras.models.load_model(checkpoint.folder / "last.keras")
            print(f"resuming at epoch {state['epoch'] + 1} of {epochs}")
        else:
            model = _compiled(build(), learning_rate)
        x, y = (train(state["epoch"]), None) if callable(train) else train
        callbacks = [keras.callbacks.LearningRateScheduler(cosine_schedule(learning_rate, epochs)), checkpoint]
        model.fit(x, y, batch_size=batch_size, validation_data=validation, epochs=epochs,
                  initial_epoch=state["epoch"], verbose=2,
                  callbacks=callbacks + ([TimeLimit(time_limit)] if time_limit else []))
    return keras.models.load_model(checkpoint.folder / "best.keras")


def export(network, out, label_names, quantize=False, **settings):
    """Write the serving files: model.tflite (logits out) and model.json (labels, settings).

    `quantize` stores the weights as int8 and lets LiteRT quantize activations on the fly
    (dynamic range): a quarter of the size and, for the face CNN, 4x faster on one thread.
    """
    out = Path(out)
    try:
        import tensorflow as tf  # LiteRT's converter, under any Keras backend
    except ImportError:
        raise SystemExit(f"{out / 'checkpoints'} holds the trained run, but writing model.tflite needs "
                         "TensorFlow: run the same command with --resume where it is installed") from None
    converter_settings = {"optimizations": [tf.lite.Optimize.DEFAULT]} if quantize else {}
    network.export(str(out / "model.tflite"), format="litert", verbose=False, **converter_settings)
    (out / "model.json").write_text(json.dumps({"labels": list(label_names), "temperature": 1.0,
                                                "weights": "int8 (dynamic range)" if quantize else "float32",
                                                **settings}, indent=1) + "\n")


def train_face(data, out, epochs=30, batch_size=64, learning_rate=2e-3, width=32,
               label_preset="seven", seed=0, resume=False, limit=None, augment="standard", workers=1,
               time_limit=None):
    """Train the face CNN on FER2013 Training, choosing on PublicTest; export the best epoch
    with int8 weights.

    `data` is the FER2013 folder, its csv, or a pack (datasets.pack_fer2013); `augment` names an
    AUGMENTATIONS recipe; `workers` processes augment batches; `time_limit` is in seconds.
    """
    keras.utils.set_random_seed(seed)
    names = label_sets.preset(label_preset)
    faces, targets, _ = datasets.fer2013(data, "train", names)
    val_faces, val_targets, _ = datasets.fer2013(data, "public-test", names)
    if limit:  # a random subset, for quick checks
        keep = np.random.default_rng(seed).permutation(len(faces))[:limit]
        faces, targets = faces[keep], targets[keep]
    x_val = np.stack([face_input(face) for face in val_faces])
    weights = class_weights(targets, len(names))
    onehot = np.eye(len(names), dtype=np.float32)

    def batches(first_epoch):
        return FaceBatches(faces, targets, len(names), batch_size, seed, weights, first_epoch,
                           AUGMENTATIONS[augment], workers)

    network = _fit(lambda: face_network(len(names), width), batches, (x_val, onehot[val_targets]), out,
                   epochs, learning_rate, resume, time_limit=time_limit)
    export(network, out, names, quantize=True, input="face 48x48 grey in [0, 1]",
           architecture=f"VGG-style CNN, width {width}", parameters=int(network.count_params()),
           augmentation={"recipe": augment, **AUGMENTATIONS[augment]})
    return network


def augment_waveform(waveform, rng):
    """A random variant of a clip: speed 0.9-1.1x, gain +-6 dB, shift up to 0.25 s, noise at 5-30 dB SNR."""
    import soxr
    from .audio import SAMPLE_RATE

    speed = rng.uniform(0.9, 1.1)
    waveform = soxr.resample(waveform, SAMPLE_RATE * speed, SAMPLE_RATE).astype(np.float32)
    waveform = np.roll(np.pad(waveform, (SAMPLE_RATE // 4, 0)), -rng.integers(0, SAMPLE_RATE // 4))
    waveform = waveform * 10 ** (rng.uniform(-6, 6) / 20)
    power = np.mean(waveform ** 2) + 1e-12
    noise = rng.normal(0, np.sqrt(power / 10 ** (rng.uniform(5, 30) / 10)), len(waveform))
    return np.clip(waveform + noise, -1, 1).astype(np.float32)


SPEECH_LAYERS = (6, 7, 8, 9, 10)  # YAMNet layers whose features the speech head reads (see the model card)


def speech_features(paths, yamnet, cache, variants=0, seed=0):
    """Pooled YAMNet features per clip, through the serving preprocessing, cached on disk.

    Returns one [clips, d] array per variant: the clean clips first, then `variants` augmented copies.
    """
    import hashlib
    from tqdm import tqdm
    from .audio import load_audio, speech_frames
    from .models import clip_features

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    results = [[] for _ in range(variants + 1)]
    for path in tqdm(paths, desc="YAMNet features", unit="clip"):
        key = hashlib.sha1(f"{Path(path).resolve()}:{os.path.getmtime(path)}:{yamnet.layers}".encode()).hexdigest()
        waveform = None
        for variant in range(variants + 1):
            file = cache / f"{key}-{seed}-{variant}.npy"
            if not file.exists():
                if waveform is None:
                    waveform = load_audio(path)
                rng = np.random.default_rng([seed, variant, int(key[:8], 16)])
                audio = augment_waveform(waveform, rng) if variant else waveform
                np.save(file, clip_features(yamnet(speech_frames(audio))[0]))
            results[variant].append(np.load(file))
    return [np.stack(variant) for variant in results]


def speech_head(num_classes, train_features):
    """Standardisation (fitted on the training clips), dropout and a linear layer to logits."""
    standardise = layers.Normalization(name="standardise")
    standardise.adapt(train_features)
    inputs = keras.Input((train_features.shape[1],), name="features")
    x = layers.Dropout(0.5)(standardise(inputs))
    logits = layers.Dense(num_classes, kernel_regularizer=keras.regularizers.l2(1e-3), name="logits")(x)
    return keras.Model(inputs, logits, name="speech_head")


def train_speech(data, out, yamnet_path, cache, epochs=150, batch_size=64, learning_rate=1e-3,
                 variants=4, label_preset="seven", seed=0, resume=False, yamnet_layers=SPEECH_LAYERS):
    """Train the speech head on RAVDESS actors 1-16 (choosing on 17-20); export the best epoch."""
    from .models import YAMNet

    keras.utils.set_random_seed(seed)
    names = label_sets.preset(label_preset)
    clips = datasets.speech_clips(data, names)
    train, val = datasets.ravdess_split(clips, "train"), datasets.ravdess_split(clips, "validation")
    yamnet = YAMNet(yamnet_path, yamnet_layers)
    x_train = np.concatenate(speech_features([c[0] for c in train], yamnet, cache, variants, seed))
    y_train = np.concatenate([[c[1] for c in train]] * (variants + 1))
    (x_val,) = speech_features([c[0] for c in val], yamnet, cache)
    onehot = np.eye(len(names), dtype=np.float32)
    network = _fit(lambda: speech_head(len(names), x_train), (x_train, onehot[y_train]),
                   (x_val, onehot[[c[1] for c in val]]), out, epochs, learning_rate, resume, batch_size)
    export(network, out, names, input="mean and std over frames of YAMNet layer features",
           yamnet_layers=list(yamnet_layers), variants=variants, parameters=int(network.count_params()))
    return network


# The speech recipes compared by actor cross-validation: (YAMNet layers, augmented copies, statistics).
SPEECH_RECIPES = {
    "baseline: mean YAMNet embedding": ((15,), 0, "mean"),
    "mean+std of the embedding": ((15,), 0, "mean+std"),
    "mean+std of layers 6-10": (SPEECH_LAYERS, 0, "mean+std"),
    "mean+std of layers 6-10, 4 augmented copies (shipped)": (SPEECH_LAYERS, 4, "mean+std"),
}


def speech_cross_validation(data, yamnet_path, cache, folds=6, epochs=150, batch_size=64,
                            learning_rate=1e-3, seed=0):
    """Each recipe's accuracy on RAVDESS by actor: `folds` folds of consecutive actors, plus the
    canonical split (train 1-16, test 21-24). Every run trains for `epochs` and is scored at
    its last epoch, so nothing is chosen on a held-out actor.
    """
    from .models import YAMNet

    names = label_sets.LABELS
    clips = [clip for clip in datasets.speech_clips(data, names) if datasets.is_ravdess(clip)]
    targets, actors = np.array([c[1] for c in clips]), np.array([c[2] for c in clips])
    onehot = np.eye(len(names), dtype=np.float32)
    per_fold = 24 // folds
    splits = [(f"actors {k * per_fold + 1}-{(k + 1) * per_fold}", (actors - 1) // per_fold == k)
              for k in range(folds)]
    canonical = ("canonical test (actors 21-24, trained on 1-16)", actors >= 21, actors <= 16)
    report = {}
    for name, (yamnet_layers, variants, statistics) in SPEECH_RECIPES.items():
        features = speech_features([c[0] for c in clips], YAMNet(yamnet_path, yamnet_layers), cache, variants, seed)
        if statistics == "mean":
            features = [variant[:, :variant.shape[1] // 2] for variant in features]
        scores = {}
        for split, held, train in [(s, h, ~h) for s, h in splits] + [canonical]:
            keras.utils.set_random_seed(seed)
            x = np.concatenate([variant[train] for variant in features])
            model = _compiled(speech_head(len(names), x), learning_rate)
            schedule = keras.callbacks.LearningRateScheduler(cosine_schedule(learning_rate, epochs))
            model.fit(x, onehot[np.tile(targets[train], variants + 1)], batch_size=batch_size, epochs=epochs,
                      verbose=0, callbacks=[schedule])
            predictions = ops.convert_to_numpy(model(features[0][held], training=False)).argmax(axis=1)
            scores[split] = round(float((predictions == targets[held]).mean()), 4)
            print(f"{name} | {split}: {scores[split]:.2%}", flush=True)
        fold_scores = [scores[split] for split, _ in splits]
        report[name] = {"yamnet_layers": list(yamnet_layers), "augmented_copies": variants,
                        "statistics": statistics, "folds": scores,
                        "cross_validation_mean": round(float(np.mean(fold_scores)), 4),
                        "cross_validation_std": round(float(np.std(fold_scores)), 4),
                        "canonical_test": scores[canonical[0]]}
    return {"data": str(data), "folds": folds, "epochs": epochs, "recipes": report}
