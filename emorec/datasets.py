"""Dataset adapters: FER2013 (Kaggle folders or csv), labelled photos, speech corpora by file name."""

import csv
import re
from pathlib import Path

import cv2
import numpy as np

from . import labels as label_maps
from .errors import InputError

FACE_SPLITS = {"train": "Training", "public-test": "PublicTest", "private-test": "PrivateTest"}
SPEECH_SPLITS = {"train": range(1, 17), "validation": range(17, 21), "test": range(21, 25)}


def fer2013(path, split, labels=label_maps.LABELS):
    """48x48 uint8 faces, label indices into `labels`, and file names (or csv rows) of a split.

    `path` is the Kaggle folder (train/<emotion>/Training_*.jpg, test/<emotion>/PublicTest_*.jpg
    and PrivateTest_*.jpg) or fer2013.csv (columns emotion, pixels, Usage). Faces whose
    emotion is not in `labels` are left out.
    """
    if split not in FACE_SPLITS:
        raise InputError(f"unknown FER2013 split {split!r}; choose from {', '.join(FACE_SPLITS)}")
    path = Path(path)
    usage = FACE_SPLITS[split]
    if path.is_file():
        rows = _fer2013_csv(path, usage)
    elif path.is_dir():
        rows = _fer2013_folders(path, usage)
    else:
        raise InputError(f"{path}: no FER2013 folder or csv there")
    rows = [(face, labels.index(emotion), name) for face, emotion, name in rows if emotion in labels]
    if not rows:
        raise InputError(f"{path}: no FER2013 {usage} images found")
    faces, targets, names = zip(*rows)
    return np.stack(faces), np.array(targets, np.int64), list(names)


def _fer2013_csv(path, usage):
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        if not {"emotion", "pixels", "Usage"} <= set(reader.fieldnames or ()):
            raise InputError(f"{path}: a FER2013 csv needs the columns emotion, pixels, Usage")
        for number, row in enumerate(reader):
            if row["Usage"] == usage:
                face = np.array(row["pixels"].split(), np.uint8).reshape(48, 48)
                yield face, label_maps.FER2013_CSV[int(row["emotion"])], f"{path.name}:{number}"


def _fer2013_folders(path, usage):
    for file in sorted(path.glob(f"*/*/{usage}_*")):
        face = cv2.imread(str(file), cv2.IMREAD_GRAYSCALE)
        if face is not None:
            yield cv2.resize(face, (48, 48), interpolation=cv2.INTER_AREA), file.parent.name, str(file)


def labelled_photos(path, labels=label_maps.LABELS):
    """(photo path, label index) of a folder of real photos, e.g. photos_wild, sorted by path.

    The labels come from `<path>/labels.csv` (columns image, label; image relative to the folder)
    or, without one, from each file's folder name (`<label>/<photo>`). Other labels are left out.
    """
    path = Path(path)
    if not path.is_dir():
        raise InputError(f"{path}: no folder of labelled photos there")
    table = path / "labels.csv"
    if table.exists():
        with open(table, newline="") as handle:
            reader = csv.DictReader(handle)
            if not {"image", "label"} <= set(reader.fieldnames or ()):
                raise InputError(f"{table}: a labels csv needs the columns image, label")
            rows = [(path / row["image"], row["label"]) for row in reader]
    else:
        rows = [(file, file.parent.name) for file in path.glob("*/*")
                if file.is_file() and not file.name.startswith(".")]
    photos = sorted((str(file), labels.index(label)) for file, label in rows if label in labels)
    if not photos:
        raise InputError(f"{path}: no photos labelled {', '.join(labels)} found")
    return photos


# Each corpus: a file-name pattern, and how its match gives (label, speaker).
SPEECH_CORPORA = {
    "ravdess": (re.compile(r"^\d\d-\d\d-(\d\d)-\d\d-\d\d-\d\d-(\d\d)\.wav$", re.I),
                lambda m: (label_maps.RAVDESS.get(m[1]), int(m[2]))),
    "crema-d": (re.compile(r"^(\d{4})_[A-Z]{3}_([A-Z]{3})_[A-Z]{2}\.wav$", re.I),
                lambda m: (label_maps.CREMA_D.get(m[2].upper()), int(m[1]))),
    "tess": (re.compile(r"^([OY]AF)_\w+?_([a-z]+)\.wav$", re.I),
             lambda m: (label_maps.TESS.get(m[2].lower()), m[1].upper())),
    "emodb": (re.compile(r"^(\d\d)[a-z]\d\d([A-Z])[a-z]?\.wav$"),
              lambda m: (label_maps.EMODB.get(m[2]), int(m[1]))),
}


def parse_speech_name(name):
    """(corpus, label, speaker) from a speech file's name, or None if no corpus matches.

    The label is None for emotions outside the label set (RAVDESS calm, EmoDB boredom).
    """
    for corpus, (pattern, read) in SPEECH_CORPORA.items():
        match = pattern.match(name)
        if match:
            return (corpus, *read(match))
    return None


def speech_clips(root, labels=label_maps.LABELS):
    """(path, label index, speaker) of every labelled clip under `root`, sorted by path."""
    clips = []
    for path in sorted(Path(root).rglob("*.wav")):
        parsed = parse_speech_name(path.name)
        if parsed and parsed[1] in labels:
            clips.append((str(path), labels.index(parsed[1]), parsed[2]))
    if not clips:
        raise InputError(f"{root}: no labelled RAVDESS, CREMA-D, TESS or EmoDB clips found")
    return clips


def is_ravdess(clip):
    """Whether a (path, label, speaker) clip is named like a RAVDESS file."""
    return parse_speech_name(Path(clip[0]).name)[0] == "ravdess"


def ravdess_split(clips, split):
    """The clips of a canonical speaker-independent RAVDESS split (actors 1-16/17-20/21-24)."""
    if split not in SPEECH_SPLITS:
        raise InputError(f"unknown RAVDESS split {split!r}; choose from {', '.join(SPEECH_SPLITS)}")
    actors = SPEECH_SPLITS[split]
    return [clip for clip in clips if clip[2] in actors and is_ravdess(clip)]


PAIR_SPLITS = {"validation": "public-test", "test": "private-test"}  # RAVDESS split -> FER2013 split


def pair_up(clip_targets, face_targets, per_clip=1, seed=0):
    """(clip index, face index) pairs of the same label: each clip meets `per_clip` faces.

    Faces of a label are dealt from a seeded shuffle of that label's faces, cycling when the
    label has fewer faces than its clips need, so every face is used before any is reused.
    """
    rng = np.random.default_rng(seed)
    face_targets = np.asarray(face_targets)
    decks = {label: rng.permutation(np.flatnonzero(face_targets == label)) for label in set(clip_targets)}
    dealt = dict.fromkeys(decks, 0)
    pairs = []
    for clip, label in enumerate(clip_targets):
        if not len(decks[label]):
            raise InputError(f"no face of label index {label} to pair with")
        for _ in range(per_clip):
            pairs.append((clip, int(decks[label][dealt[label] % len(decks[label])])))
            dealt[label] += 1
    return pairs


def pseudo_pairs(faces, speech, split, labels=label_maps.LABELS, per_clip=1, seed=0):
    """Rows (image, audio, label) pairing RAVDESS clips of a split with FER2013 faces of the same label.

    Validation pairs actors 17-20 with PublicTest, test pairs actors 21-24 with PrivateTest.
    The faces must be the Kaggle folder layout (the manifest names image files).
    """
    if split not in PAIR_SPLITS:
        raise InputError(f"unknown pair split {split!r}; choose from {', '.join(PAIR_SPLITS)}")
    if not Path(faces).is_dir():
        raise InputError(f"{faces}: pair manifests need the FER2013 folder layout (image files)")
    _, face_targets, face_paths = fer2013(faces, PAIR_SPLITS[split], labels)
    clips = ravdess_split(speech_clips(speech, labels), split)
    return [(face_paths[face], clips[clip][0], labels[clips[clip][1]])
            for clip, face in pair_up([clip[1] for clip in clips], face_targets, per_clip, seed)]
