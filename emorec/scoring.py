"""Batch scoring shared by the local and the Ray engines: which inputs a command names, one output row
per input (a bad input is a row with its error), and the JSONL/CSV output."""

import csv
import json
from pathlib import Path

from .errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
AUDIO_SUFFIXES = {".wav", ".flac", ".ogg", ".opus", ".mp3", ".m4a", ".aac", ".webm"}  # what load_audio reads
VIDEO_SUFFIXES = {".mp4", ".mov", ".mkv", ".avi", ".webm"}  # a .webm with no video stream is audio
SUFFIXES = {"face": IMAGE_SUFFIXES, "video": VIDEO_SUFFIXES, "speech": AUDIO_SUFFIXES}
FIELDS = ("status", "label", "confidence", "probabilities")
VIDEO_FIELDS = ("face_label", "speech_label")  # a video's row: its fused label, and each modality's


def local_folder(path):
    """The files under a local folder, sorted, or None when `path` is not a folder."""
    path = Path(path)
    return [str(p) for p in sorted(p for p in path.rglob("*") if p.is_file())] if path.is_dir() else None


def expand(paths, modality, folder_files=local_folder):
    """(path, modality) of each input: named files as given, folders searched recursively for known suffixes.

    `folder_files(path)` lists a folder's files (None for anything else), so that another filesystem
    can be searched the same way. The modality is None for a named file of unknown type."""
    for path in map(str, paths):
        files = folder_files(path)
        for file in [path] if files is None else files:
            suffix = Path(file).suffix.lower()
            kind = modality if modality != "auto" else next(
                (name for name, suffixes in SUFFIXES.items() if suffix in suffixes), None)
            known = suffix in SUFFIXES.get(kind, ())
            if files is not None and not known:
                continue
            yield file, kind


def read_pairs(manifest):
    """The rows of a pairs csv (columns image,audio)."""
    try:
        with open(manifest, newline="") as handle:
            rows = list(csv.DictReader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        raise InputError(f"{manifest}: cannot read the pairs csv ({error})") from None
    if not rows or not {"image", "audio"} <= set(rows[0]):
        raise InputError(f"{manifest}: the pairs csv needs columns image,audio")
    return rows


def predict_file(predictor, path, modality, crops=False, source=None):
    """The result for one photo or clip; `source` (its bytes) is read instead of `path` when given."""
    source = path if source is None else source
    if modality == "face":
        return predictor.predict_face(source, crops)
    if modality == "speech":
        return predictor.predict_speech(source)
    if modality == "video":
        from . import timeline
        if not timeline.has_video(source):  # a .webm holding sound only is a recording
            return predictor.predict_speech(source)
        return timeline.clip_row(predictor.predict_video(source))
    raise InputError(f"{path}: unknown file type; use --modality face, speech or video")


def predict_pair(predictor, image, audio, crops=False, weights=None):
    """The fused result for one row of a pairs manifest (an empty cell leaves that modality out)."""
    return predictor.predict(image or None, audio or None, weights, crops)["fusion"]


def row(predict):
    """The output fields of one input scored by `predict()`; a bad input gives a row with its error."""
    try:
        result = predict()
    except InputError as error:
        return failed(error)
    return {key: result.get(key) for key in FIELDS} | {key: result[key] for key in VIDEO_FIELDS if key in result}


def failed(error):
    """The output fields of an input that could not be scored, with the error's message."""
    return {"status": "error", "label": None, "confidence": None, "probabilities": None, "error": str(error)}


class Writer:
    """Rows to .jsonl or .csv, flushed one by one so an interrupted batch keeps its work."""

    def __init__(self, path, labels, extra):
        self.path = Path(path)
        check_output(path)
        self.labels, self.extra = labels, extra
        try:
            self.handle = open(self.path, "w", newline="")
        except OSError as error:
            raise InputError(f"{path}: cannot write the output file ({error.strerror})") from None
        if self.path.suffix == ".csv":
            self.csv = csv.writer(self.handle)
            self.csv.writerow([*extra, "status", "label", "confidence", *labels, "error"])

    def write(self, row):
        if self.path.suffix == ".jsonl":
            self.handle.write(json.dumps(row) + "\n")
        else:
            probabilities = row.get("probabilities") or {}
            self.csv.writerow([row.get(key) for key in [*self.extra, "status", "label", "confidence"]]
                              + [probabilities.get(label, "") for label in self.labels] + [row.get("error", "")])
        self.handle.flush()


def check_output(path, suffixes=(".jsonl", ".csv")):
    if Path(path).suffix not in suffixes:
        raise InputError(f"{path}: --out must end in {' or '.join(suffixes)}"
                         + ("" if ".parquet" in suffixes else " (.parquet with --engine ray)"))
