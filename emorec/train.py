"""Training with backend-agnostic Keras 3: the face CNN and the speech head.

Each run writes `<out>/checkpoints/` after every epoch (so `--resume` continues it, on
any backend) and, when done, the serving files: `<out>/model.tflite` and `<out>/model.json`.
"""

import json
import math
import os
import time
from collections import Counter
from pathlib import Path

import cv2
import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

from . import datasets, labels as label_sets  # noqa: E402
from .errors import InputError  # noqa: E402
from .image import face_input  # noqa: E402
from .speech_features import (MISSING_CLASSES, SPEECH_LAYERS, WHISPER_LAYERS, YAMNetFeatures,  # noqa: E402
                              decoded, normalise, speech_features)


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


def _compiled(model, learning_rate, loss=None):
    """The model compiled with the project's one recipe: AdamW, smoothed cross-entropy on logits
    (`loss`, when given, replaces Keras's cross-entropy: the speech head masks absent classes)."""
    model.compile(optimizer=keras.optimizers.AdamW(learning_rate, weight_decay=1e-4),
                  loss=loss or keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.1),
                  metrics=[keras.metrics.CategoricalAccuracy(name="accuracy")])
    return model


def _fit(build, train, validation, out, epochs, learning_rate, resume, batch_size=None, loss=None,
         callbacks=(), monitor="val_accuracy", time_limit=None):
    """Compile (or resume) and fit with per-epoch checkpoints; returns the best model on `monitor`.

    `train` is an (inputs, one-hot targets[, sample weights]) tuple, or a function of the first epoch
    to run that returns a keras PyDataset; `validation` is an (inputs, one-hot targets) pair.
    `callbacks` run before the checkpoint, so the metrics they add to the logs can be monitored.
    A complete run needs only `best.keras` (and state.json), so the slim checkpoint of a GPU run
    exports here. `time_limit` (seconds) stops training early, after the last epoch that fits.
    """
    checkpoint = Checkpoint(Path(out) / "checkpoints", monitor)
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
            model = _compiled(build(), learning_rate, loss)
        x, y, *weights = (train(state["epoch"]), None) if callable(train) else train
        model.fit(x, y, sample_weight=weights[0] if weights else None, batch_size=batch_size,
                  validation_data=validation, epochs=epochs, initial_epoch=state["epoch"], verbose=2,
                  callbacks=[keras.callbacks.LearningRateScheduler(cosine_schedule(learning_rate, epochs)),
                             *callbacks, checkpoint, *([TimeLimit(time_limit)] if time_limit else [])])
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


MLP_UNITS = 256  # the "mlp" speech head's hidden layer
MIDDLE_LAYERS = (2, 3, 4, 5)  # the "middle-means" head's Whisper layers (blocks 2-5) ...
MIDDLE_L2 = 0.1  # ... and its L2: what transferred best across corpora (models/speech/README.md)


def speech_head(num_classes, train_features, head="linear", groups=1):
    """Standardisation (fitted on the training clips), dropout and a linear layer to logits.

    "layer-weighted" first reads the features as `groups` equal parts (an encoder's layers) and sums
    them with learned softmax weights, so the linear layer sees one layer's width; "mlp" puts a hidden
    layer of MLP_UNITS (GELU, L2 1e-3, dropout 0.5) before it; "middle-means" reads only the means over
    time of the MIDDLE_LAYERS (each of the `groups` parts being a layer's mean then its std), with L2
    MIDDLE_L2 on the linear layer.
    """
    inputs = keras.Input((train_features.shape[1],), name="features")
    x = inputs
    if head == "middle-means":
        chosen = Columns(middle_mean_columns(train_features.shape[1], groups), name="middle_means")
        x, train_features = chosen(x), np.asarray(chosen(train_features))
    standardise = layers.Normalization(name="standardise")
    standardise.adapt(train_features)
    x = standardise(x)
    if head == "layer-weighted":
        x = LayerWeighting(name="layer_weights")(layers.Reshape((groups, -1))(x))
    x = layers.Dropout(0.5)(x)
    if head == "mlp":
        x = layers.Dense(MLP_UNITS, "gelu", kernel_regularizer=keras.regularizers.l2(1e-3), name="hidden")(x)
        x = layers.Dropout(0.5)(x)
    l2 = MIDDLE_L2 if head == "middle-means" else 1e-3
    logits = layers.Dense(num_classes, kernel_regularizer=keras.regularizers.l2(l2), name="logits")(x)
    return keras.Model(inputs, logits, name="speech_head")


def middle_mean_columns(width, groups):
    """The columns of the MIDDLE_LAYERS' means in features of `groups` layers, each its mean then its std
    (`speech_encoder.pool`'s layout)."""
    part = width // groups
    return [layer * part + column for layer in MIDDLE_LAYERS for column in range(part // 2)]


@keras.saving.register_keras_serializable(package="emorec")
class Columns(layers.Layer):
    """[batch, d] -> [batch, len(columns)]: fixed columns of the features."""

    def __init__(self, columns, **kwargs):
        super().__init__(**kwargs)
        self.columns = [int(column) for column in columns]

    def call(self, inputs):
        return ops.take(inputs, self.columns, axis=1)

    def get_config(self):
        return {**super().get_config(), "columns": self.columns}


@keras.saving.register_keras_serializable(package="emorec")
class LayerWeighting(layers.Layer):
    """[batch, layers, d] -> [batch, d]: a sum over layers with softmax-normalised learned weights."""

    def build(self, input_shape):
        self.logits = self.add_weight(shape=(input_shape[1],), initializer="zeros", name="logits")

    def call(self, inputs):
        return ops.einsum("l,bld->bd", ops.softmax(self.logits), inputs)


@keras.saving.register_keras_serializable(package="emorec")
class MaskedCrossEntropy(keras.losses.Loss):
    """Smoothed cross-entropy on logits over the classes each sample's corpus has.

    `y_true` is one-hot with -1 at the classes the sample's corpus lacks (nEMO has no disgust):
    those logits are left out of the sample's softmax, so the sample gives them no gradient and no
    probability mass, and label smoothing spreads over the classes present only. With every class
    present it equals Keras's CategoricalCrossentropy(from_logits=True, label_smoothing=...).
    """

    def __init__(self, label_smoothing=0.0, name="masked_crossentropy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.label_smoothing = label_smoothing

    def call(self, y_true, y_pred):
        present = ops.greater_equal(y_true, 0)
        share = ops.cast(present, y_pred.dtype)
        target = ((1 - self.label_smoothing) * ops.maximum(ops.cast(y_true, y_pred.dtype), 0)
                  + self.label_smoothing * share / ops.sum(share, axis=-1, keepdims=True))
        logits = ops.where(present, y_pred, -1e9)
        log_probabilities = logits - ops.logsumexp(logits, axis=-1, keepdims=True)
        return -ops.sum(ops.where(present, target * log_probabilities, 0.0), axis=-1)

    def get_config(self):
        return {**super().get_config(), "label_smoothing": self.label_smoothing}


def masked_targets(clips, names, missing_classes="masked"):
    """One-hot targets (the input of MaskedCrossEntropy). With "masked", -1 at the classes a clip's
    corpus lacks, which leaves them out of its loss; with "negative" they stay 0, wrong answers like
    any other class (nEMO's angry clip is then also taught as not disgust)."""
    if missing_classes not in MISSING_CLASSES:
        raise ValueError(f"unknown missing_classes {missing_classes!r}; choose from {', '.join(MISSING_CLASSES)}")
    targets = np.zeros((len(clips), len(names)), np.float32)
    for row, clip in zip(targets, clips):
        if missing_classes == "masked":
            present = label_sets.corpus_labels(clip.corpus, names)
            row[[index for index, name in enumerate(names) if name not in present]] = -1
        row[clip.label] = 1
    return targets


def corpus_class_weights(clips):
    """Sample weights giving every (corpus, class) the same total weight, scaled to mean 1."""
    cells = [(clip.corpus, clip.label) for clip in clips]
    counts = Counter(cells)
    weights = np.array([1 / counts[cell] for cell in cells])
    return (weights / weights.mean()).astype(np.float32)


class CorpusValidation(keras.callbacks.Callback):
    """Adds each corpus's validation accuracy (val_<corpus>_accuracy) and their mean
    (val_mean_accuracy) to the epoch's logs, so that a large corpus does not outvote a small one
    when the best epoch is chosen. `sets` is {corpus: (features, label indices)}."""

    def __init__(self, sets):
        super().__init__()
        self.sets = sets

    def on_epoch_end(self, epoch, logs=None):
        scores = []
        for corpus, (features, targets) in self.sets.items():
            predictions = ops.convert_to_numpy(self.model(features, training=False)).argmax(axis=1)
            scores.append(float((predictions == targets).mean()))
            logs[f"val_{corpus}_accuracy"] = scores[-1]
        logs["val_mean_accuracy"] = float(np.mean(scores))


def train_speech(data, out, extractor, cache, epochs=150, batch_size=64, learning_rate=1e-3, variants=4,
                 label_preset="seven", seed=0, resume=False, normalisation="none", augment="signal",
                 head="linear", missing_classes="masked", quantize=False):
    """Train the speech head on the training speakers of one or more corpora (`data`: a folder or
    a list; RAVDESS actors 1-16, nEMO's train speakers), choosing the epoch on the mean accuracy
    over the corpora's validation speakers; export the best epoch.

    `extractor` is a front end (`emorec.speech_features`); `normalisation` standardises features
    per speaker or per corpus ("none" for a head that serves single clips); `variants` copies of each
    training clip are augmented by the `augment` recipe (speech_features.AUGMENTATIONS); `head` is one of
    speech_features.HEADS ("layer-weighted" and "middle-means" need Whisper's front end of layers). The
    loss is masked to the classes each clip's corpus has (`missing_classes` "masked"; "negative" counts
    the classes a corpus lacks as wrong answers for its clips), and every (corpus, class) gets the same
    total weight. `quantize` exports the head with int8 weights (`export`).
    """
    groups = len(extractor.card.get("whisper_layers", ()))
    if head in ("layer-weighted", "middle-means") and not groups:
        raise InputError(f"the {head} head needs the Whisper front end, not {extractor.name}")
    if head == "middle-means" and extractor.card["whisper_layers"] != list(range(WHISPER_LAYERS)):
        raise InputError(f"the middle-means head reads all {WHISPER_LAYERS} Whisper layers, not "
                         f"{extractor.card['whisper_layers']}")
    keras.utils.set_random_seed(seed)
    names = label_sets.preset(label_preset)
    folders = [data] if isinstance(data, (str, os.PathLike)) else list(data)
    clips = [clip for folder in folders for clip in datasets.speech_clips(folder, names)]
    train, val = datasets.speaker_split(clips, "train"), datasets.speaker_split(clips, "validation")
    if not train or not val:
        raise InputError(f"{', '.join(map(str, folders))}: no clips of a corpus with speaker splits "
                         "(RAVDESS, nEMO)")
    train, x_train = decoded(train, speech_features([c.path for c in train], extractor, cache, variants, seed,
                                                                   augment=augment))
    x_train = np.concatenate(normalise(x_train, train, normalisation))
    val, x_val = decoded(val, speech_features([c.path for c in val], extractor, cache))
    (x_val,) = normalise(x_val, val, normalisation)
    val_corpora = np.array([clip.corpus for clip in val])
    val_targets = np.array([clip.label for clip in val])
    by_corpus = {corpus: (x_val[val_corpora == corpus], val_targets[val_corpora == corpus])
                 for corpus in sorted(set(val_corpora))}
    network = _fit(lambda: speech_head(len(names), x_train, head, groups),
                   (x_train, np.tile(masked_targets(train, names, missing_classes), (variants + 1, 1)),
                    np.tile(corpus_class_weights(train), variants + 1)),
                   (x_val, masked_targets(val, names, missing_classes)), out, epochs, learning_rate, resume, batch_size,
                   loss=MaskedCrossEntropy(label_smoothing=0.1), callbacks=[CorpusValidation(by_corpus)],
                   monitor="val_mean_accuracy")
    corpora = sorted({clip.corpus for clip in train})
    trained = [name for name in names if any(name in label_sets.corpus_labels(c, names) for c in corpora)]
    export(network, out, names, quantize, **extractor.card, corpora=corpora, trained_labels=trained,
           feature_normalisation=normalisation, variants=variants,
           augmentation=augment if variants else None, head=head, missing_classes=missing_classes,
           **_layer_weights(network), parameters=int(network.count_params()))
    return network


def _layer_weights(network):
    """{"layer_weights": the learned weight of each layer, rounded} for a layer-weighted head, else {}."""
    if "layer_weights" not in {layer.name for layer in network.layers}:
        return {}
    weights = ops.convert_to_numpy(ops.softmax(network.get_layer("layer_weights").logits))
    return {"layer_weights": [round(float(weight), 4) for weight in weights]}


# The speech recipes compared by actor cross-validation: (YAMNet layers, augmented copies, statistics).
SPEECH_RECIPES = {
    "baseline: mean YAMNet embedding": ((15,), 0, "mean"),
    "mean+std of the embedding": ((15,), 0, "mean+std"),
    "mean+std of layers 6-10": (SPEECH_LAYERS, 0, "mean+std"),
    "mean+std of layers 6-10, 4 augmented copies (shipped)": (SPEECH_LAYERS, 4, "mean+std"),
}


def fit_last_epoch(model, x, y, epochs, batch_size, learning_rate, sample_weight=None):
    """Fit a compiled model for `epochs` on the cosine schedule, without checkpoints or validation: for
    cross-validation, where every run is scored at its last epoch. Returns the model."""
    model.fit(x, y, sample_weight=sample_weight, batch_size=batch_size, epochs=epochs, verbose=0,
              callbacks=[keras.callbacks.LearningRateScheduler(cosine_schedule(learning_rate, epochs))])
    return model


def speech_cross_validation(data, yamnet_path, cache, folds=6, epochs=150, batch_size=64,
                            learning_rate=1e-3, seed=0):
    """Each recipe's accuracy on RAVDESS by actor: `folds` folds of consecutive actors, plus the
    canonical split (train 1-16, test 21-24). Every run trains for `epochs` and is scored at
    its last epoch, so nothing is chosen on a held-out actor.
    """
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
        features = speech_features([c.path for c in clips], YAMNetFeatures(yamnet_path, yamnet_layers), cache,
                                   variants, seed)
        if statistics == "mean":
            features = [variant[:, :variant.shape[1] // 2] for variant in features]
        scores = {}
        for split, held, train in [(s, h, ~h) for s, h in splits] + [canonical]:
            keras.utils.set_random_seed(seed)
            x = np.concatenate([variant[train] for variant in features])
            model = fit_last_epoch(_compiled(speech_head(len(names), x), learning_rate), x,
                                   onehot[np.tile(targets[train], variants + 1)], epochs, batch_size, learning_rate)
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
