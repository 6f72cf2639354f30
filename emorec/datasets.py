"""Dataset adapters: FER2013 (Kaggle folders, csv or a pack), labelled photos, speech corpora by file
name, and nEMO."""

import csv
import re
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from . import labels as label_maps
from .errors import InputError

FACE_SPLITS = {"train": "Training", "public-test": "PublicTest", "private-test": "PrivateTest"}


def fer2013(path, split, labels=label_maps.LABELS):
    """48x48 uint8 faces, label indices into `labels`, and file names (or csv rows) of a split.

    `path` is the Kaggle folder (train/<emotion>/Training_*.jpg, test/<emotion>/PublicTest_*.jpg
    and PrivateTest_*.jpg), fer2013.csv (columns emotion, pixels, Usage) or a .npz pack from
    pack_fer2013. Faces whose emotion is not in `labels` are left out.
    """
    if split not in FACE_SPLITS:
        raise InputError(f"unknown FER2013 split {split!r}; choose from {', '.join(FACE_SPLITS)}")
    path = Path(path)
    usage = FACE_SPLITS[split]
    if path.is_file() and path.suffix == ".npz":
        rows = _fer2013_pack(path, usage)
    elif path.is_file():
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


# The splits a pack holds, each with its cv2 WebP quality (over 100: lossless). Training faces are
# stored lossy (a mean error of about 1 grey level, under what augmentation adds) so that the pack
# travels in about 40 MB; PublicTest, on which epochs are chosen, is stored exactly.
PACK_QUALITY = {"train": 95, "public-test": 101}


def pack_fer2013(path, out):
    """Write FER2013 Training and PublicTest (faces as WebP, labels, file names) into one .npz at
    `out`, to train where the dataset is not (fer2013() reads it back); returns its size in bytes."""
    arrays = {"labels": np.array(label_maps.LABELS)}
    for split, quality in PACK_QUALITY.items():
        faces, targets, names = fer2013(path, split)
        encoded = [cv2.imencode(".webp", face, [cv2.IMWRITE_WEBP_QUALITY, quality])[1] for face in faces]
        usage = FACE_SPLITS[split]
        arrays |= {f"{usage}_webp": np.concatenate(encoded), f"{usage}_targets": targets,
                   f"{usage}_offsets": np.cumsum([0] + [len(face) for face in encoded]),
                   f"{usage}_names": np.array(names), f"{usage}_quality": np.array(quality)}
    try:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        with open(out, "wb") as handle:
            np.savez_compressed(handle, **arrays)
    except OSError as error:
        raise InputError(f"{out}: cannot write the pack ({error.strerror})") from None
    return Path(out).stat().st_size


def _fer2013_pack(path, usage):
    try:
        with np.load(path) as pack:
            arrays = {key: pack[key] for key in pack.files if key == "labels" or key.startswith(usage)}
    except (OSError, ValueError) as error:
        raise InputError(f"{path}: not a FER2013 pack ({error})") from None
    if f"{usage}_webp" not in arrays:
        return
    data, offsets = arrays[f"{usage}_webp"], arrays[f"{usage}_offsets"]
    for start, end, target, name in zip(offsets[:-1], offsets[1:], arrays[f"{usage}_targets"],
                                        arrays[f"{usage}_names"]):
        yield cv2.imdecode(data[start:end], cv2.IMREAD_GRAYSCALE), str(arrays["labels"][target]), str(name)


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


# Each corpus named by its files: a file-name pattern, and how its match gives (label, speaker).
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

# Speaker-independent splits per corpus. RAVDESS: actors 1-16 / 17-20 / 21-24 (odd male, even female).
# nEMO (4 female, 5 male speakers), fixed before any model was scored on it: the two speakers
# without every emotion in full (MK0 has no "surprised", MP0 has 256 clips, 17 of them fear) train;
# of the seven complete ones, in alphabetical order per gender, the last is test, the one before
# validation, the rest train. Train 2 female + 3 male (2323 clips), validation IC0 (f) + TP0 (m)
# (1079), test KD0 (f) + WR0 (m) (1079).
SPEECH_SPLITS = {"train": range(1, 17), "validation": range(17, 21), "test": range(21, 25)}
NEMO_SPLITS = {"train": ("EB0", "MK0", "KS0", "MP0", "SM0"), "validation": ("IC0", "TP0"),
               "test": ("KD0", "WR0")}
SPEAKER_SPLITS = {"ravdess": SPEECH_SPLITS, "nemo": NEMO_SPLITS}


class Clip(NamedTuple):
    """A labelled speech clip: file, label index, speaker (unique within its corpus), corpus name."""
    path: str
    label: int
    speaker: object
    corpus: str


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
    """Every labelled clip under `root`, sorted by path.

    A folder with `data.tsv` and `samples/` is nEMO; any other folder is searched for WAV files
    named like RAVDESS, CREMA-D, TESS or EmoDB clips.
    """
    root = Path(root)
    if (root / "data.tsv").is_file():
        return nemo_clips(root, labels)
    clips = []
    for path in sorted(root.rglob("*.wav")):
        parsed = parse_speech_name(path.name)
        if parsed and parsed[1] in labels:
            clips.append(Clip(str(path), labels.index(parsed[1]), parsed[2], parsed[0]))
    if not clips:
        raise InputError(f"{root}: no nEMO data.tsv and no labelled RAVDESS, CREMA-D, TESS or EmoDB "
                         "clips found")
    return clips


def nemo_clips(root, labels=label_maps.LABELS):
    """The clips of nEMO's layout: `data.tsv` (file_id, emotion, speaker_id, ...) and `samples/<file_id>`."""
    root = Path(root)
    try:
        with open(root / "data.tsv", newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{root / 'data.tsv'}: cannot read it ({error})") from None
    if not rows or not {"file_id", "emotion", "speaker_id"} <= set(rows[0]):
        raise InputError(f"{root / 'data.tsv'}: nEMO's data.tsv needs the columns file_id, emotion, "
                         "speaker_id")
    clips, missing = [], []
    for row in rows:
        label = label_maps.NEMO.get(row["emotion"].strip())
        path = root / "samples" / row["file_id"].strip()
        if label in labels:
            clips.append(Clip(str(path), labels.index(label), row["speaker_id"].strip(), "nemo"))
            if not path.is_file():
                missing.append(path.name)
    if missing:
        raise InputError(f"{root}: {len(missing)} clips listed in data.tsv are not in samples/ "
                         f"(first: {missing[0]})")
    if not clips:
        raise InputError(f"{root / 'data.tsv'}: no clip with a known emotion")
    return sorted(clips)


def speaker_split(clips, split):
    """The clips whose speaker is in `split` ("train", "validation", "test") of their corpus's
    speaker-independent split, or every clip for "all". Corpora without a split are left out."""
    if split == "all":
        return list(clips)
    if split not in SPEECH_SPLITS:
        raise InputError(f"unknown speech split {split!r}; choose from {', '.join(SPEECH_SPLITS)}, all")
    return [clip for clip in clips
            if clip.corpus in SPEAKER_SPLITS and clip.speaker in SPEAKER_SPLITS[clip.corpus][split]]


def is_ravdess(clip):
    """Whether a (path, label, speaker, ...) clip is named like a RAVDESS file."""
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
