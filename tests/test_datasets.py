"""Dataset adapters on small generated copies: FER2013 csv and folders, speech corpora by file name."""

import csv
from pathlib import Path

import cv2
import numpy as np
import pytest

from emorec import datasets
from emorec.audio import load_audio
from emorec.datasets import (fer2013, pair_up, parse_speech_name, pseudo_pairs, ravdess_split, speaker_split,
                             speech_clips)
from emorec.errors import InputError
from emorec.labels import FER2013_CSV, LABELS, corpus_labels, preset

from conftest import tone, wav_bytes, write

# (csv emotion code, Usage) rows; codes follow FER2013_CSV, not LABELS.
CSV_ROWS = [(0, "Training"), (1, "Training"), (4, "Training"), (5, "Training"), (6, "Training"),
            (3, "PublicTest"), (2, "PublicTest"), (5, "PublicTest"),
            (6, "PrivateTest"), (4, "PrivateTest")]


def face_pixels(number):
    """A distinct 48x48 face for each row, so rows can be traced through the adapter."""
    face = np.full((48, 48), number * 20, np.uint8)
    face[0, 0] = number
    return face


@pytest.fixture
def fer_csv(tmp_path):
    path = tmp_path / "fer2013.csv"
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["emotion", "pixels", "Usage"])
        for number, (emotion, usage) in enumerate(CSV_ROWS):
            writer.writerow([emotion, " ".join(map(str, face_pixels(number).ravel())), usage])
    return path


@pytest.mark.parametrize("split, usage", [("train", "Training"), ("public-test", "PublicTest"),
                                          ("private-test", "PrivateTest")])
def test_fer2013_csv_splits_by_usage_and_maps_labels(fer_csv, split, usage):
    faces, targets, names = fer2013(fer_csv, split)
    rows = [(number, emotion) for number, (emotion, row_usage) in enumerate(CSV_ROWS) if row_usage == usage]
    assert faces.shape == (len(rows), 48, 48) and faces.dtype == np.uint8
    assert targets.dtype == np.int64
    assert [LABELS[t] for t in targets] == [FER2013_CSV[emotion] for _, emotion in rows]
    assert names == [f"fer2013.csv:{number}" for number, _ in rows]
    for face, (number, _) in zip(faces, rows):
        np.testing.assert_array_equal(face, face_pixels(number))


def test_fer2013_csv_label_codes(fer_csv):
    _, targets, _ = fer2013(fer_csv, "train")
    # codes 0, 1, 4, 5, 6 are angry, disgust, sad, surprise, neutral (not alphabetical).
    assert [LABELS[t] for t in targets] == ["angry", "disgust", "sad", "surprise", "neutral"]
    assert targets.tolist() == [0, 1, 5, 6, 4]


def test_fer2013_six_preset_leaves_out_surprise(fer_csv):
    six = preset("six")
    _, targets, names = fer2013(fer_csv, "train", six)
    assert [six[t] for t in targets] == ["angry", "disgust", "sad", "neutral"]
    assert len(names) == 4


@pytest.fixture
def fer_folder(tmp_path):
    """A Kaggle-layout FER2013 tree of tiny JPEGs (one of them not 48x48)."""
    root = tmp_path / "fer2013"
    files = {"train/happy/Training_10.jpg": 200, "train/happy/Training_11.jpg": 190,
             "train/surprise/Training_12.jpg": 30, "train/disgust/Training_13.jpg": 60,
             "test/sad/PublicTest_20.jpg": 100, "test/angry/PublicTest_21.jpg": 120,
             "test/fear/PrivateTest_30.jpg": 140, "test/neutral/PrivateTest_31.jpg": 160}
    for name, value in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        size = 64 if name.endswith("_13.jpg") else 48
        assert cv2.imwrite(str(path), np.full((size, size), value, np.uint8))
    write(root, "train/happy/notes.txt", "not an image")
    write(root, "train/happy/Training_99.jpg", b"corrupt")  # unreadable: skipped
    return root


def test_fer2013_folders(fer_folder):
    faces, targets, names = fer2013(fer_folder, "train")
    assert faces.shape == (4, 48, 48)
    assert sorted(LABELS[t] for t in targets) == ["disgust", "happy", "happy", "surprise"]
    by_name = {name.split("/")[-1]: (face, LABELS[t]) for face, t, name in zip(faces, targets, names)}
    assert set(by_name) == {"Training_10.jpg", "Training_11.jpg", "Training_12.jpg", "Training_13.jpg"}
    assert by_name["Training_13.jpg"][1] == "disgust"
    assert abs(int(by_name["Training_10.jpg"][0].mean()) - 200) <= 2
    assert abs(int(by_name["Training_13.jpg"][0].mean()) - 60) <= 2  # resized from 64x64

    _, targets, names = fer2013(fer_folder, "public-test")
    assert sorted(LABELS[t] for t in targets) == ["angry", "sad"]
    assert all("PublicTest_" in name for name in names)
    _, targets, names = fer2013(fer_folder, "private-test")
    assert sorted(LABELS[t] for t in targets) == ["fear", "neutral"]
    assert all("PrivateTest_" in name for name in names)


def test_fer2013_errors(tmp_path, fer_csv):
    with pytest.raises(InputError, match="unknown FER2013 split 'validation'"):
        fer2013(fer_csv, "validation")
    with pytest.raises(InputError, match="no FER2013 folder or csv"):
        fer2013(tmp_path / "missing", "train")
    write(tmp_path, "other.csv", "label,image\n1,a.png\n")
    with pytest.raises(InputError, match="needs the columns emotion, pixels, Usage"):
        fer2013(tmp_path / "other.csv", "train")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no FER2013 Training images"):
        fer2013(tmp_path / "empty", "train")


# ---- speech corpora ---------------------------------------------------------------------

@pytest.mark.parametrize("name, expected", [
    ("03-01-06-01-02-01-12.wav", ("ravdess", "fear", 12)),
    ("03-01-01-01-01-01-01.wav", ("ravdess", "neutral", 1)),
    ("03-01-08-02-02-02-24.wav", ("ravdess", "surprise", 24)),
    ("03-01-05-02-01-01-21.WAV", ("ravdess", "angry", 21)),
    ("03-01-02-01-01-01-05.wav", ("ravdess", None, 5)),  # calm
    ("1001_DFA_ANG_XX.wav", ("crema-d", "angry", 1001)),
    ("1091_TSI_DIS_HI.wav", ("crema-d", "disgust", 1091)),
    ("1050_IEO_NEU_LO.wav", ("crema-d", "neutral", 1050)),
    ("OAF_back_angry.wav", ("tess", "angry", "OAF")),
    ("YAF_dog_ps.wav", ("tess", "surprise", "YAF")),
    ("YAF_germ_neutral.wav", ("tess", "neutral", "YAF")),
    ("OAF_back_sad.wav", ("tess", "sad", "OAF")),
    ("03a01Wa.wav", ("emodb", "angry", 3)),
    ("16b10Tb.wav", ("emodb", "sad", 16)),
    ("08a02Ac.wav", ("emodb", "fear", 8)),
    ("11b03Ed.wav", ("emodb", "disgust", 11)),
    ("09a05L.wav", ("emodb", None, 9)),  # boredom
])
def test_parse_speech_name(name, expected):
    assert parse_speech_name(name) == expected


@pytest.mark.parametrize("name", ["recording.wav", "03-01-06-01-02-01-12.mp3", "03-01-06-01-02-12.wav",
                                  "1001_DFA_ANG.wav", "OAF_back_angry.mp3", "XAF_back_angry.wav",
                                  "3a01Wa.wav", ""])
def test_parse_speech_name_unknown(name):
    assert parse_speech_name(name) is None


@pytest.fixture
def speech_corpus(tmp_path):
    """Tiny WAVs named like the real corpora, in their folder layouts."""
    clip = wav_bytes(tone(0.2))
    names = ["ravdess/Actor_01/03-01-03-01-01-01-01.wav", "ravdess/Actor_01/03-01-02-01-01-01-01.wav",
             "ravdess/Actor_17/03-01-05-01-01-01-17.wav", "ravdess/Actor_24/03-01-07-02-01-01-24.wav",
             "crema/1001_DFA_ANG_XX.wav", "tess/YAF_dog_ps.wav", "emodb/03a01Wa.wav", "emodb/03a01La.wav",
             "other/readme.wav"]
    for name in names:
        write(tmp_path, name, clip)
    write(tmp_path, "ravdess/Actor_01/03-01-04-01-01-01-01.txt", "not audio")
    return tmp_path


def test_speech_clips(speech_corpus):
    clips = speech_clips(speech_corpus)
    found = {path.split(str(speech_corpus))[1].lstrip("/"): (LABELS[label], speaker)
             for path, label, speaker, _ in clips}
    assert found == {
        "crema/1001_DFA_ANG_XX.wav": ("angry", 1001),
        "emodb/03a01Wa.wav": ("angry", 3),
        "ravdess/Actor_01/03-01-03-01-01-01-01.wav": ("happy", 1),
        "ravdess/Actor_17/03-01-05-01-01-01-17.wav": ("angry", 17),
        "ravdess/Actor_24/03-01-07-02-01-01-24.wav": ("disgust", 24),
        "tess/YAF_dog_ps.wav": ("surprise", "YAF"),
    }
    assert [clip[0] for clip in clips] == sorted(clip[0] for clip in clips)


def test_speech_clips_six_preset(speech_corpus):
    six = preset("six")
    clips = speech_clips(speech_corpus, six)
    assert "surprise" not in {six[label] for _, label, *_ in clips}
    assert len(clips) == 5


def test_speech_clips_none_found(tmp_path):
    write(tmp_path, "x/recording.wav", wav_bytes(tone(0.1)))
    with pytest.raises(InputError, match="no labelled"):
        speech_clips(tmp_path)


def test_ravdess_split_actor_ranges():
    clips = [(f"03-01-03-01-01-01-{actor:02d}.wav", 3, actor) for actor in range(1, 25)]
    splits = {split: {clip[2] for clip in ravdess_split(clips, split)} for split in datasets.SPEECH_SPLITS}
    assert splits == {"train": set(range(1, 17)), "validation": set(range(17, 21)), "test": set(range(21, 25))}
    assert not (splits["train"] & splits["validation"] or splits["train"] & splits["test"]
                or splits["validation"] & splits["test"])
    assert set().union(*splits.values()) == set(range(1, 25))


def test_ravdess_split_on_generated_corpus(speech_corpus):
    clips = speech_clips(speech_corpus)
    # EmoDB speaker 3 is not RAVDESS actor 3: only RAVDESS-named clips are in a RAVDESS split.
    assert [clip[0].split(str(speech_corpus))[1] for clip in ravdess_split(clips, "train")] == \
        ["/ravdess/Actor_01/03-01-03-01-01-01-01.wav"]
    assert [clip[2] for clip in ravdess_split(clips, "validation")] == [17]
    assert [clip[2] for clip in ravdess_split(clips, "test")] == [24]
    assert "train" in datasets.SPEECH_SPLITS
    with pytest.raises(InputError, match="unknown RAVDESS split 'public-test'"):
        ravdess_split(clips, "public-test")


def test_shared_ravdess_splits_are_speaker_independent():
    from conftest import RAVDESS, shared
    clips = speech_clips(shared(RAVDESS))
    assert len(clips) == 1440 - 192  # calm is left out
    actors = {split: {clip[2] for clip in ravdess_split(clips, split)} for split in datasets.SPEECH_SPLITS}
    assert [len(actors[split]) for split in ("train", "validation", "test")] == [16, 4, 4]
    assert sum(len(ravdess_split(clips, split)) for split in datasets.SPEECH_SPLITS) == len(clips)


# ---- pseudo-pairs -----------------------------------------------------------------------

CLIP_TARGETS = [0, 3, 3, 0, 3, 3, 3]
FACE_TARGETS = [3, 0, 3, 5, 3, 0, 0]  # happy (3) faces at 0, 2, 4; angry (0) at 1, 5, 6


@pytest.mark.parametrize("per_clip", [1, 2, 5])
def test_pair_up_deals_faces_of_the_same_label(per_clip):
    pairs = pair_up(CLIP_TARGETS, FACE_TARGETS, per_clip, seed=0)
    assert [clip for clip, _ in pairs] == [clip for clip in range(len(CLIP_TARGETS)) for _ in range(per_clip)]
    assert all(FACE_TARGETS[face] == CLIP_TARGETS[clip] for clip, face in pairs)
    for label in (0, 3):
        dealt = [face for clip, face in pairs if CLIP_TARGETS[clip] == label]
        deck = np.flatnonzero(np.array(FACE_TARGETS) == label)
        # Each face of the label once before any face twice: the shuffled deck cycles in one order.
        first = dealt[:len(deck)]
        assert len(set(first)) == len(first) and set(first) <= set(deck)
        assert dealt == [first[i % len(deck)] for i in range(len(dealt))]


def test_pair_up_is_seeded():
    first = pair_up(CLIP_TARGETS, FACE_TARGETS, 3, seed=1)
    assert pair_up(CLIP_TARGETS, FACE_TARGETS, 3, seed=1) == first
    assert any(pair_up(CLIP_TARGETS, FACE_TARGETS, 3, seed=seed) != first for seed in range(2, 6))


def test_pair_up_needs_a_face_of_every_clip_label():
    with pytest.raises(InputError, match="no face of label index 6"):
        pair_up([0, 6], FACE_TARGETS)
    assert pair_up([], FACE_TARGETS) == []


@pytest.fixture
def pairing_corpus(fer_folder, tmp_path):
    """RAVDESS-named clips for the labels of fer_folder's test faces, and some that must be left out."""
    names = {"Actor_17/03-01-04-01-01-01-17.wav": "sad", "Actor_17/03-01-05-02-01-01-17.wav": "angry",
             "Actor_20/03-01-05-01-02-01-20.wav": "angry", "Actor_21/03-01-06-01-01-01-21.wav": "fear",
             "Actor_24/03-01-01-01-01-02-24.wav": "neutral",
             "Actor_01/03-01-05-01-01-01-01.wav": None,  # train actor
             "Actor_18/03-01-02-01-01-01-18.wav": None,  # calm
             "emodb/17a01Wa.wav": None}  # EmoDB speaker 17 is no validation actor
    for name in names:
        write(tmp_path / "ravdess", name, wav_bytes(tone(0.1)))
    return tmp_path / "ravdess", names


@pytest.mark.parametrize("split, faces", [("validation", "PublicTest_"), ("test", "PrivateTest_")])
def test_pseudo_pairs(fer_folder, pairing_corpus, split, faces):
    speech, names = pairing_corpus
    rows = pseudo_pairs(fer_folder, speech, split, per_clip=2, seed=0)
    actors = datasets.SPEECH_SPLITS[split]
    expected = sorted(name for name, label in names.items() if label and int(name[6:8]) in actors)
    assert sorted({audio.split("ravdess/")[1] for _, audio, _ in rows}) == expected
    assert len(rows) == 2 * len(expected)
    for image, audio, label in rows:
        assert label == names[audio.split("ravdess/")[1]]
        assert image.startswith(str(fer_folder)) and f"/{label}/{faces}" in image
    assert pseudo_pairs(fer_folder, speech, split, per_clip=2, seed=0) == rows


def test_pseudo_pairs_errors(fer_folder, fer_csv, pairing_corpus, tmp_path):
    speech, _ = pairing_corpus
    with pytest.raises(InputError, match="unknown pair split 'train'"):
        pseudo_pairs(fer_folder, speech, "train")
    with pytest.raises(InputError, match="pair manifests need the FER2013 folder layout"):
        pseudo_pairs(fer_csv, speech, "validation")
    write(speech, "Actor_19/03-01-03-01-01-01-19.wav", wav_bytes(tone(0.1)))  # happy: no happy PublicTest face
    with pytest.raises(InputError, match=f"no face of label index {LABELS.index('happy')}"):
        pseudo_pairs(fer_folder, speech, "validation")


# ---- nEMO -------------------------------------------------------------------------------

NEMO_ROWS = [("EB0_anger_1.opus", "anger", "EB0"), ("IC0_happiness_2.opus", "happiness", "IC0"),
             ("KD0_surprised_3.opus", "surprised", "KD0"), ("WR0_sadness_4.opus", "sadness", "WR0"),
             ("TP0_neutral_5.opus", "neutral", "TP0"), ("MP0_fear_6.opus", "fear", "MP0"),
             ("SM0_boredom_7.opus", "boredom", "SM0")]  # no such nEMO emotion: left out


@pytest.fixture
def nemo_corpus(tmp_path):
    """nEMO's layout: Opus clips at 24 kHz in samples/, and data.tsv with space-padded speaker ids."""
    root = tmp_path / "nemo"
    for number, (name, _, _) in enumerate(NEMO_ROWS):
        write(root / "samples", name, wav_bytes(tone(0.3, 24000, 200 + 50 * number), 24000, "OPUS", "OGG"))
    lines = ["file_id\temotion\traw_text\tnormalized_text\tspeaker_id\tgender\tage"]
    lines += [f"{name}\t{emotion}\tZdanie.\tzdanie\t        {speaker}\tfemale\t27"
              for name, emotion, speaker in NEMO_ROWS]
    write(root, "data.tsv", "\n".join(lines) + "\n")
    return root


def test_nemo_clips_from_data_tsv(nemo_corpus):
    clips = speech_clips(nemo_corpus)
    assert [(Path(clip.path).name, LABELS[clip.label], clip.speaker, clip.corpus) for clip in clips] == [
        ("EB0_anger_1.opus", "angry", "EB0", "nemo"), ("IC0_happiness_2.opus", "happy", "IC0", "nemo"),
        ("KD0_surprised_3.opus", "surprise", "KD0", "nemo"), ("MP0_fear_6.opus", "fear", "MP0", "nemo"),
        ("TP0_neutral_5.opus", "neutral", "TP0", "nemo"), ("WR0_sadness_4.opus", "sad", "WR0", "nemo")]
    waveform = load_audio(clips[0].path)  # Opus at 24 kHz decodes to 16 kHz mono
    assert waveform.dtype == np.float32 and abs(len(waveform) - 0.3 * 16000) < 400 and np.abs(waveform).max() > 0.1
    six = preset("six")
    assert "surprise" not in {six[clip.label] for clip in speech_clips(nemo_corpus, six)}


def test_nemo_speaker_split(nemo_corpus):
    clips = speech_clips(nemo_corpus)
    found = {split: [clip.speaker for clip in speaker_split(clips, split)] for split in datasets.SPEECH_SPLITS}
    assert found == {"train": ["EB0", "MP0"], "validation": ["IC0", "TP0"], "test": ["KD0", "WR0"]}
    assert speaker_split(clips, "all") == clips
    assert ravdess_split(clips, "test") == []  # nEMO speakers are no RAVDESS actors
    with pytest.raises(InputError, match="unknown speech split 'public-test'"):
        speaker_split(clips, "public-test")


def test_nemo_errors(nemo_corpus):
    (nemo_corpus / "samples" / "KD0_surprised_3.opus").unlink()
    with pytest.raises(InputError, match="1 clips listed in data.tsv are not in samples/ .first: KD0_surprised_3"):
        speech_clips(nemo_corpus)
    write(nemo_corpus, "data.tsv", "file_id\tlabel\nEB0_anger_1.opus\tanger\n")
    with pytest.raises(InputError, match="needs the columns file_id, emotion, speaker_id"):
        speech_clips(nemo_corpus)


def test_mixed_corpora_split_by_their_own_speakers(speech_corpus, nemo_corpus):
    clips = speech_clips(speech_corpus) + speech_clips(nemo_corpus)
    validation = speaker_split(clips, "validation")
    assert {(clip.corpus, clip.speaker) for clip in validation} == {("ravdess", 17), ("nemo", "IC0"),
                                                                    ("nemo", "TP0")}
    assert {clip.corpus for clip in speaker_split(clips, "all")} == {"ravdess", "crema-d", "tess", "emodb", "nemo"}


def test_shared_nemo_split_is_speaker_independent_and_gender_balanced():
    from conftest import SHARED, shared
    root = shared(SHARED / "data" / "nemo_pl")
    clips = speech_clips(root)
    assert len(clips) == 4481 and {clip.corpus for clip in clips} == {"nemo"}
    with open(root / "data.tsv", newline="", encoding="utf-8") as handle:
        gender = {row["speaker_id"].strip(): row["gender"] for row in csv.DictReader(handle, delimiter="\t")}
    speakers = {split: {clip.speaker for clip in speaker_split(clips, split)} for split in datasets.SPEECH_SPLITS}
    assert set().union(*speakers.values()) == set(gender) and sum(map(len, speakers.values())) == 9
    for split in ("validation", "test"):
        assert sorted(gender[speaker] for speaker in speakers[split]) == ["female", "male"]
        held = [clip.label for clip in speaker_split(clips, split)]
        assert set(held) == {LABELS.index(label) for label in corpus_labels("nemo")}  # every nEMO emotion
    assert [len(speaker_split(clips, split)) for split in ("train", "validation", "test")] == [2323, 1079, 1079]


def test_corpus_labels():
    assert corpus_labels("nemo") == ("angry", "fear", "happy", "neutral", "sad", "surprise")
    assert corpus_labels("ravdess") == LABELS
    assert corpus_labels("crema-d", preset("six")) == preset("six")
