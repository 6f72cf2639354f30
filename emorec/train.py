"""Training with backend-agnostic Keras 3: the face CNN and the speech head.

Each run writes `<out>/checkpoints/` after every epoch (so `--resume` continues it, on
any backend) and, when done, the serving files: `<out>/model.tflite` and `<out>/model.json`.
"""

import json
import math
import os
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


def augment_face(face, rng):
    """A random variant of a 48x48 face: flip, one affine warp (rotation, scale, shift), random erasing."""
    if rng.random() < 0.5:
        face = face[:, ::-1]
    matrix = cv2.getRotationMatrix2D((24, 24), rng.uniform(-12, 12), rng.uniform(0.9, 1.1))
    matrix[:, 2] += rng.uniform(-4.8, 4.8, 2)
    face = cv2.warpAffine(face, matrix, (48, 48), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    if rng.random() < 0.5:
        height, width = rng.integers(8, 24, 2)
        top, left = rng.integers(0, 48 - height), rng.integers(0, 48 - width)
        face[top:top + height, left:left + width] = rng.integers(0, 256)
    return face


class FaceBatches(keras.utils.PyDataset):
    """Shuffled, augmented FER2013 batches of (faces, one-hot targets, class weights)."""

    def __init__(self, faces, targets, num_classes, batch_size, seed, weights, epoch=0):
        super().__init__()
        self.faces, self.targets, self.batch_size, self.seed = faces, targets, batch_size, seed
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
        batch = np.stack([face_input(augment_face(self.faces[row].copy(), rng)) for row in rows])
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


def _fit(build, train, validation, out, epochs, learning_rate, resume, batch_size=None):
    """Compile (or resume) and fit with per-epoch checkpoints; returns the best model on validation.

    `train` is an (inputs, one-hot targets) pair, or a function of the first epoch to run that
    returns a keras PyDataset; `validation` is an (inputs, one-hot targets) pair.
    """
    checkpoint = Checkpoint(Path(out) / "checkpoints")
    state = checkpoint.state()
    if resume and state["epoch"]:
        model = keras.models.load_model(checkpoint.folder / "last.keras")
        print(f"resuming at epoch {state['epoch'] + 1} of {epochs}")
    elif state["epoch"] and not resume:
        raise SystemExit(f"{checkpoint.folder} holds a run: pass --resume, or a new --out")
    else:
        model = build()
        model.compile(optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=1e-4),
                      loss=keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
                      metrics=["accuracy"])
    if state["epoch"] < epochs:
        x, y = (train(state["epoch"]), None) if callable(train) else train
        model.fit(x, y, batch_size=batch_size, validation_data=validation, epochs=epochs,
                  initial_epoch=state["epoch"], verbose=2,
                  callbacks=[keras.callbacks.LearningRateScheduler(cosine_schedule(learning_rate, epochs)),
                             checkpoint])
    return keras.models.load_model(checkpoint.folder / "best.keras")


def export(network, out, label_names, **settings):
    """Write the serving files: model.tflite (logits out) and model.json (labels, settings)."""
    out = Path(out)
    network.export(str(out / "model.tflite"), format="litert", verbose=False)
    (out / "model.json").write_text(json.dumps({"labels": list(label_names), "temperature": 1.0,
                                                **settings}, indent=1) + "\n")


def train_face(data, out, epochs=30, batch_size=64, learning_rate=2e-3, width=32,
               label_preset="seven", seed=0, resume=False, limit=None):
    """Train the face CNN on FER2013 Training, choosing on PublicTest; export the best epoch."""
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
        return FaceBatches(faces, targets, len(names), batch_size, seed, weights, first_epoch)

    network = _fit(lambda: face_network(len(names), width), batches, (x_val, onehot[val_targets]), out,
                   epochs, learning_rate, resume)
    export(network, out, names, input="face 48x48 grey in [0, 1]", architecture=f"VGG-style CNN, width {width}",
           parameters=int(network.count_params()))
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


def clip_embeddings(paths, yamnet, cache, variants=0, seed=0):
    """YAMNet frame embeddings per clip, through the serving preprocessing, cached on disk.

    Returns one list per variant: the clean clips first, then `variants` augmented copies.
    """
    import hashlib
    from tqdm import tqdm
    from .audio import load_audio, speech_frames

    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    results = [[] for _ in range(variants + 1)]
    for path in tqdm(paths, desc="embedding clips", unit="clip"):
        key = hashlib.sha1(f"{Path(path).resolve()}:{os.path.getmtime(path)}".encode()).hexdigest()
        waveform = None
        for variant in range(variants + 1):
            file = cache / f"{key}-{seed}-{variant}.npy"
            if not file.exists():
                if waveform is None:
                    waveform = load_audio(path)
                rng = np.random.default_rng([seed, variant, int(key[:8], 16)])
                audio = augment_waveform(waveform, rng) if variant else waveform
                np.save(file, yamnet(speech_frames(audio))[0].astype(np.float16))
            results[variant].append(np.load(file).astype(np.float32))
    return results


def speech_frame_network(num_classes, hidden=256):
    """Per-frame head on a clip's YAMNet embeddings: class logits plus an attention score per frame."""
    inputs = keras.Input((None, 1024), name="embeddings")
    x = layers.Dropout(0.2)(inputs)
    x = layers.Dense(hidden, activation="relu")(x)
    x = layers.Dropout(0.4)(x)
    return keras.Model(inputs, layers.Dense(num_classes + 1, name="logits_attention")(x),
                       name="speech_frames")


def attention_pool(frame_outputs, mask):
    """Clip logits: frame logits weighted by a softmax of the attention scores over real frames."""
    scores = ops.where(mask, frame_outputs[..., -1], -1e9)
    weights = ops.softmax(scores, axis=-1)
    return ops.sum(weights[..., None] * frame_outputs[..., :-1], axis=1)


def pad_sequences(sequences):
    """Zero-padded [n, max_frames, 1024] array and its boolean mask of real frames."""
    length = max(len(sequence) for sequence in sequences)
    batch = np.zeros((len(sequences), length, sequences[0].shape[1]), np.float32)
    mask = np.zeros((len(sequences), length), bool)
    for row, sequence in enumerate(sequences):
        batch[row, :len(sequence)], mask[row, :len(sequence)] = sequence, True
    return batch, mask


def train_speech(data, out, yamnet_path, cache, epochs=60, batch_size=32, learning_rate=1e-3,
                 variants=4, label_preset="seven", seed=0, resume=False):
    """Train the speech head on RAVDESS actors 1-16 (choosing on 17-20); export the best epoch."""
    from .models import YAMNet

    keras.utils.set_random_seed(seed)
    names = label_sets.preset(label_preset)
    clips = datasets.speech_clips(data, names)
    train, val = datasets.ravdess_split(clips, "train"), datasets.ravdess_split(clips, "validation")
    yamnet = YAMNet(yamnet_path)
    train_variants = clip_embeddings([c[0] for c in train], yamnet, cache, variants, seed)
    (val_embeddings,) = clip_embeddings([c[0] for c in val], yamnet, cache)
    x_train = pad_sequences([e for variant in train_variants for e in variant])
    y_train = np.concatenate([[c[1] for c in train]] * (variants + 1))
    x_val = pad_sequences(val_embeddings)

    def build():
        frames = speech_frame_network(len(names))
        embeddings = keras.Input((None, 1024), name="embeddings")
        mask = keras.Input((None,), dtype="bool", name="mask")
        return keras.Model([embeddings, mask], attention_pool(frames(embeddings), mask), name="speech_training")

    onehot = np.eye(len(names), dtype=np.float32)
    model = _fit(build, (list(x_train), onehot[y_train]), (list(x_val), onehot[[c[1] for c in val]]), out,
                 epochs, learning_rate, resume, batch_size)
    network = model.get_layer("speech_frames")
    export(network, out, names, input="YAMNet 1024-d frame embeddings", pooling="attention",
           parameters=int(network.count_params()))
    return network
