"""The `emorec` command line, in subprocesses (as users run it) and in-process (fast)."""

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from emorec.cli import main
from emorec.evaluate import CONDITIONS
from emorec.labels import LABELS, RAVDESS
from emorec.predictor import Predictor

from conftest import (PAIR_ACTORS, PAIR_LABELS, assert_valid_result, error_lines, gradient, image_bytes, run_cli,
                      tone, wav_bytes, write)


# ---- subprocesses -----------------------------------------------------------------------

def test_predict_json(astronaut, clip, clip_result):
    done = run_cli("predict", "--image", astronaut, "--audio", clip, "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert set(result) == {"face", "speech", "fusion"}
    assert len(result["face"]["faces"]) == 1
    assert result["speech"]["status"] == "ok" and result["speech"]["label"] == clip_result["label"]
    assert result["fusion"]["status"] == "fused"
    for part in ("face", "speech", "fusion"):
        assert_valid_result(result[part], LABELS)
    assert "Traceback" not in done.stderr


def test_predict_human_readable(astronaut, clip, clip_result):
    done = run_cli("predict", "--image", astronaut, "--audio", clip, "--weights", "face=0.6,speech=0.4")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("face 1: ") and "at box [" in lines[0]
    assert lines[1].startswith(f"speech: {clip_result['label']} (") and "over 4.4 s" in lines[1]
    assert lines[2].startswith("fusion: ") and "from face + speech [weights face=0.60, speech=0.40; applied face=" in lines[2]
    assert [line.split()[0] for line in lines[3:]] == list(LABELS)
    assert all(line.rstrip().endswith("%") for line in lines[3:])


def test_batch_folder_keeps_going_past_bad_files(tmp_path, astronaut, chelsea, clip, clip_result):
    folder = tmp_path / "inputs"
    write(folder, "a.png", astronaut.read_bytes())
    write(folder, "b/cat.png", chelsea.read_bytes())
    write(folder, "c.wav", clip.read_bytes())
    write(folder, "d-broken.jpg", b"\xff\xd8\xff\xe0 definitely not a JPEG")
    write(folder, "e.wav", b"RIFF....WAVEjunk")
    write(folder, "notes.txt", "ignored: not an image or audio suffix")
    out = tmp_path / "results.jsonl"
    done = run_cli("batch", folder, "--out", out)
    assert done.returncode == 0, done.stderr
    assert "Traceback" not in done.stderr
    assert "5 inputs, 2 failed" in done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["path"].split("inputs/")[1] for row in rows] == ["a.png", "b/cat.png", "c.wav",
                                                                  "d-broken.jpg", "e.wav"]
    statuses = [row["status"] for row in rows]
    assert statuses == ["ok", "no_face", "ok", "error", "error"]
    assert rows[2]["label"] == clip_result["label"]
    for row in rows[3:]:
        assert row["path"] in row["error"] and row["label"] is None and row["probabilities"] is None
    assert "not a readable image" in rows[3]["error"] and "not a readable audio file" in rows[4]["error"]
    assert_valid_result(rows[0], LABELS)


def test_bad_input_is_one_clean_line(tmp_path):
    bad = write(tmp_path, "photo.png", b"\x89PNG\r\n\x1a\nbroken")
    done = run_cli("predict", "--image", bad)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "Traceback" not in done.stderr
    assert error_lines(done.stderr) == [f"emorec: error: {bad}: not a readable image (JPEG, PNG, BMP or WebP)"]


def test_usage_errors_exit_2():
    done = run_cli("predict", "--json")
    assert done.returncode == 2 and error_lines(done.stderr) == ["emorec: error: give --image, --audio, both, or --video"]
    done = run_cli("frobnicate")
    assert done.returncode == 2 and "invalid choice" in done.stderr and "Traceback" not in done.stderr


# ---- in-process -------------------------------------------------------------------------

def run_main(capsys, *args):
    code = main([str(arg) for arg in args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_image_only_json(cli_predictor, capsys, camera):
    code, out, _ = run_main(capsys, "predict", "--image", camera, "--json")
    assert code == 0
    result = json.loads(out)
    assert result["speech"] is None and result["fusion"]["status"] == "face_only"


def test_predict_no_face_human_readable(cli_predictor, capsys, chelsea):
    code, out, _ = run_main(capsys, "predict", "--image", chelsea)
    assert code == 0
    assert out.splitlines() == ["face:   no face found", "fusion: nothing to go on"]


def test_predict_silence_human_readable(cli_predictor, capsys, tmp_path):
    silence = write(tmp_path, "quiet.wav", wav_bytes(np.zeros(16000)))
    code, out, _ = run_main(capsys, "predict", "--audio", silence)
    assert code == 0
    assert "(no speech detected)" in out.splitlines()[0] and "nothing to go on" in out


def test_predict_crops(cli_predictor, capsys, tmp_path):
    face = write(tmp_path, "face.png", image_bytes(gradient(48, 48, channels=1)))
    code, out, _ = run_main(capsys, "predict", "--image", face, "--crops", "--json")
    assert code == 0
    assert json.loads(out)["face"]["faces"][0]["box"] == [0, 0, 48, 48]


def test_batch_csv_has_label_columns(cli_predictor, capsys, tmp_path, astronaut, clip, clip_result):
    write(tmp_path / "in", "a.png", astronaut.read_bytes())
    write(tmp_path / "in", "b.wav", clip.read_bytes())
    write(tmp_path / "in", "c.bmp", b"BMnot really")
    out = tmp_path / "results.csv"
    code, _, err = run_main(capsys, "batch", tmp_path / "in", "--out", out)
    assert code == 0 and "3 inputs, 1 failed" in err
    with open(out, newline="") as handle:
        rows = list(csv.reader(handle))
    header = rows[0]
    assert header == ["path", "status", "label", "confidence", *LABELS, "error"]
    assert all(len(row) == len(header) for row in rows)
    records = [dict(zip(header, row)) for row in rows[1:]]
    assert [record["status"] for record in records] == ["ok", "ok", "error"]
    assert records[1]["label"] == clip_result["label"]
    for record in records[:2]:
        probabilities = [float(record[label]) for label in LABELS]
        assert sum(probabilities) == pytest.approx(1, abs=1e-4)
        assert float(record["confidence"]) == max(probabilities)
        assert record["label"] == LABELS[int(np.argmax(probabilities))] and record["error"] == ""
    assert records[2]["label"] == "" and "not a readable image" in records[2]["error"]


def test_batch_pairs_manifest(cli_predictor, capsys, tmp_path, astronaut, chelsea, clip):
    manifest = tmp_path / "pairs.csv"
    manifest.write_text("image,audio\n"
                        f"{astronaut},{clip}\n"
                        f"{chelsea},{clip}\n"
                        f",{clip}\n"
                        f"{astronaut},\n"
                        f"{tmp_path / 'missing.png'},{clip}\n")
    out = tmp_path / "fused.jsonl"
    code, _, err = run_main(capsys, "batch", "--pairs", manifest, "--out", out, "--weights", "face=1,speech=1")
    assert code == 0 and "5 inputs, 1 failed" in err
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [row["status"] for row in rows] == ["fused", "speech_only", "speech_only", "face_only", "error"]
    assert rows[0]["image"] == str(astronaut) and rows[0]["audio"] == str(clip)
    assert rows[1]["probabilities"] == rows[2]["probabilities"]
    assert "missing.png: no such file" in rows[4]["error"]
    for row in rows[:4]:
        assert_valid_result(row, LABELS)


def test_batch_pairs_csv(cli_predictor, capsys, tmp_path, astronaut, clip):
    manifest = write(tmp_path, "pairs.csv", f"audio,image,note\n{clip},{astronaut},x\n")
    out = tmp_path / "fused.csv"
    code, _, _ = run_main(capsys, "batch", "--pairs", manifest, "--out", out)
    assert code == 0
    rows = list(csv.reader(out.open(newline="")))
    assert rows[0] == ["image", "audio", "status", "label", "confidence", *LABELS, "error"]
    assert rows[1][:3] == [str(astronaut), str(clip), "fused"] and len(rows[1]) == len(rows[0])


def test_batch_modality_override(cli_predictor, capsys, tmp_path, clip, clip_result):
    audio = write(tmp_path, "clip.dat", clip.read_bytes())
    out = tmp_path / "out.jsonl"
    code, _, _ = run_main(capsys, "batch", audio, "--modality", "speech", "--out", out)
    assert code == 0
    assert json.loads(out.read_text())["label"] == clip_result["label"]
    code, _, _ = run_main(capsys, "batch", audio, "--out", out)  # auto: unknown suffix
    row = json.loads(out.read_text())
    assert code == 0 and row["status"] == "error" and "unknown file type" in row["error"]


def test_batch_named_missing_file_is_an_error_row(cli_predictor, capsys, tmp_path):
    out = tmp_path / "out.jsonl"
    code, _, _ = run_main(capsys, "batch", tmp_path / "gone.png", "--out", out)
    row = json.loads(out.read_text())
    assert code == 0 and row["status"] == "error" and "gone.png: no such file" in row["error"]


@pytest.mark.parametrize("args, message", [
    (["predict"], "give --image, --audio, both, or --video"),
    (["predict", "--image", "{missing}"], "{missing}: no such file"),
    (["predict", "--audio", "{missing}"], "{missing}: no such file"),
    (["predict", "--image", "{astronaut}", "--weights", "face=2,voice=1"], "'voice' is not one of face, speech"),
    (["predict", "--image", "{astronaut}", "--weights", "face=0"], "at least one positive weight"),
    (["batch", "--out", "{tmp}/out.jsonl"], "give files or folders to predict, or --pairs"),
    (["batch", "{astronaut}", "--out", "{tmp}/out.txt"], "--out must end in .jsonl or .csv"),
    (["batch", "{astronaut}", "--out", "{tmp}/no/such/dir/out.jsonl"], "cannot write the output file"),
    (["batch", "--pairs", "{missing}", "--out", "{tmp}/out.jsonl"], "{missing}: cannot read the pairs csv"),
    (["batch", "--pairs", "{wrong_columns}", "--out", "{tmp}/out.jsonl"], "needs columns image,audio"),
    (["batch", "--pairs", "{binary}", "--out", "{tmp}/out.jsonl"], "cannot read the pairs csv"),
    (["evaluate", "speech", "--data", "{tmp}", "--split", "public-test"], "unknown speech split 'public-test'"),
    (["evaluate", "speech", "--data", "{tmp}", "--split", "validation"], "{tmp}: no clips of validation speakers"),
    (["evaluate", "speech", "--data", "{nemo}"], "nEMO's data.tsv needs the columns file_id, emotion, speaker_id"),
    (["evaluate", "speech", "--data", "{tmp}", "--model", "{tmp}"], "{tmp}: no speech model"),
    (["evaluate", "speech"], "give --data"),
    (["train", "face", "--data", "{tmp}", "{tmp}", "--out", "{tmp}/run"], "the face CNN trains on one FER2013 --data"),
    (["train", "speech", "--data", "{tmp}", "--out", "{tmp}/run", "--augment", "photo"],
     "--augment photo: the speech recipes are signal, channel"),
    (["train", "speech", "--data", "{tmp}", "--out", "{tmp}/run", "--level-db", "-26"],
     "--level-db levels what Whisper hears: use it with --front-end whisper-base"),
    (["train", "face", "--data", "{tmp}", "--out", "{tmp}/run", "--augment", "channel"],
     "--augment channel: the face recipes are standard, photo"),
    (["evaluate", "face", "--data", "{tmp}", "--split", "validation"], "unknown FER2013 split 'validation'"),
    (["evaluate", "face", "--data", "{missing}"], "no FER2013 folder or csv"),
    (["evaluate", "face"], "give --data"),
    (["evaluate", "fusion"], "evaluate fusion needs --pairs (a manifest from `emorec pairs`)"),
    (["evaluate", "fusion", "--pairs", "{missing}"], "{missing}: cannot read the pairs csv"),
    (["evaluate", "fusion", "--pairs", "{unlabelled}"], "the pairs csv needs a label column"),
    (["pairs", "--faces", "{fer_csv}", "--speech", "{tmp}", "--out", "{tmp}/pairs.csv"],
     "{fer_csv}: pair manifests need the FER2013 folder layout"),
])
def test_errors_exit_2_with_one_message(cli_predictor, capsys, tmp_path, astronaut, args, message):
    corpus = write(tmp_path, "ravdess/03-01-05-01-01-01-21.wav", wav_bytes(tone(0.2)))
    names = {"missing": tmp_path / "missing.file", "astronaut": astronaut, "tmp": tmp_path,
             "wrong_columns": write(tmp_path, "wrong.csv", "photo,clip\na.png,b.wav\n"),
             "binary": write(tmp_path, "binary.csv", b"\xff\xfe\x00\x81" * 100),
             "unlabelled": write(tmp_path, "unlabelled.csv", "image,audio\na.png,b.wav\n"),
             "fer_csv": write(tmp_path, "fer2013.csv", "emotion,pixels,Usage\n"),
             "nemo": write(tmp_path, "nemo/data.tsv", "file_id\tlabel\n").parent}
    assert corpus.exists()
    code, out, err = run_main(capsys, *(arg.format(**names) for arg in args))
    assert code == 2
    assert out == ""
    assert "Traceback" not in err
    (line,) = error_lines(err)
    assert message.format(**names) in line


def test_evaluate_face_on_a_tiny_folder(cli_predictor, capsys, tmp_path):
    for number, emotion in enumerate(LABELS):
        path = tmp_path / "fer" / "test" / emotion / f"PrivateTest_{number}.jpg"
        path.parent.mkdir(parents=True)
        assert cv2.imwrite(str(path), np.full((48, 48), 30 * number, np.uint8))
    code, out, _ = run_main(capsys, "evaluate", "face", "--data", tmp_path / "fer", "--out", tmp_path / "report")
    assert code == 0 and "face on private-test: accuracy" in out and "over 7 samples" in out
    report = json.loads((tmp_path / "report" / "metrics-private-test.json").read_text())
    assert report["samples"] == 7 and report["labels"] == list(LABELS)
    assert np.array(report["confusion"]).sum(axis=1).tolist() == [1] * 7
    assert (tmp_path / "report" / "metrics-private-test.png").stat().st_size > 0


# ---- pseudo-pairs, fusion evaluation and calibration ------------------------------------

def pairs_args(pair_corpus, out, *options):
    return ["pairs", "--faces", pair_corpus["faces"], "--speech", pair_corpus["speech"], "--out", out, *options]


@pytest.fixture(scope="module")
def manifest(pair_corpus, tmp_path_factory):
    """`emorec pairs` on the real mini corpus: test split, two faces per clip."""
    path = tmp_path_factory.mktemp("manifest") / "pairs-test.csv"
    assert main([str(arg) for arg in pairs_args(pair_corpus, path, "--per-clip", "2")]) == 0
    return path


def read_rows(path):
    with open(path, newline="") as handle:
        return list(csv.reader(handle))


@pytest.mark.parametrize("split, usage", [("test", "PrivateTest"), ("validation", "PublicTest")])
def test_pairs_manifest(capsys, pair_corpus, manifest, tmp_path, split, usage):
    out = tmp_path / "pairs.csv"
    code, printed, _ = run_main(capsys, *pairs_args(pair_corpus, out, "--split", split, "--per-clip", "2"))
    clips = len(PAIR_LABELS) * len(PAIR_ACTORS[split])
    assert code == 0 and printed == f"{2 * clips} pseudo-pairs ({split}) -> {out}\n"
    rows = read_rows(out)
    assert rows[0] == ["image", "audio", "label"] and len(rows) == 1 + 2 * clips
    for image, audio, label in rows[1:]:
        image, audio = Path(image), Path(audio)
        assert image.parent.name == label and image.name.startswith(f"{usage}_")
        assert RAVDESS[audio.name.split("-")[2]] == label
        assert int(audio.stem.split("-")[6]) in PAIR_ACTORS[split]
    assert {row[1] for row in rows[1:]} == {str(path) for path in Path(pair_corpus["speech"]).rglob("*.wav")
                                            if int(path.stem[-2:]) in PAIR_ACTORS[split]}
    if split == "test":
        assert rows == read_rows(manifest)  # the default seed, again: the same pairs
        run_main(capsys, *pairs_args(pair_corpus, out, "--per-clip", "2", "--seed", "1"))
        reseeded = read_rows(out)  # the same clips in the same order, other faces
        assert [row[1:] for row in reseeded] == [row[1:] for row in rows] and reseeded != rows


def test_pairs_unwritable_out_is_a_clean_error(capsys, pair_corpus, tmp_path):
    code, _, err = run_main(capsys, *pairs_args(pair_corpus, tmp_path / "missing" / "pairs.csv"))
    assert code == 2
    assert err.strip() == f"emorec: error: {tmp_path / 'missing' / 'pairs.csv'}: cannot write the manifest " \
                          "(No such file or directory)"


def test_evaluate_fusion_command(cli_predictor, capsys, manifest, tmp_path):
    code, out, _ = run_main(capsys, "evaluate", "fusion", "--pairs", manifest, "--crops", "--robustness",
                            "--out", tmp_path / "report")
    assert code == 0
    report = json.loads((tmp_path / "report" / "metrics-pairs-test.json").read_text())
    assert (tmp_path / "report" / "metrics-pairs-test.png").stat().st_size > 0
    assert report["split"] == "pseudo-paired pairs-test" and report["manifest"] == str(manifest)
    assert report["pairs"] == report["samples"] == 12 and report["weights"] == cli_predictor.default_weights
    assert list(report["conditions"]) == list(CONDITIONS)
    assert report["conditions"]["face removed"]["face"] is None
    assert report["conditions"]["speech removed"]["speech"] is None
    clean = report["conditions"]["clean"]
    assert report["accuracy"] == clean["fused"] and np.array(report["confusion"]).sum() == 12
    assert list(report["certainty_exponents"]) == ["0.0", "0.5", "1.0"]
    lines = out.splitlines()
    assert lines[:len(CONDITIONS)] == [f"{name:<48} " + "  ".join(f"{modality} {value:.2%}"
                                                                  for modality, value in accuracy.items()
                                                                  if value is not None)
                                       for name, accuracy in report["conditions"].items()]
    assert lines[len(CONDITIONS):-1] == [f"fused with certainty exponent {exponent}: mean over the conditions with "
                                         f"both modalities {compared['mean_with_both']:.2%}"
                                         for exponent, compared in report["certainty_exponents"].items()]
    assert lines[5].startswith("speech + babble 10 dB") and "face" in lines[5] and "speech" in lines[5]
    assert lines[-1].startswith(f"fusion on pseudo-paired pairs-test: accuracy {clean['fused']:.2%}")
    assert lines[-1].endswith(f"over 12 samples -> {tmp_path / 'report' / 'metrics-pairs-test.json'}")


def test_calibrate_writes_into_the_models_folder(capsys, pair_corpus, models_folder, astronaut, clip, tmp_path):
    """Face, speech and the speaker-standardised head get their temperatures, the fusion its rule."""
    heads = ("face", "speech", "speech/speaker")
    cards = {name: json.loads((models_folder / name / "model.json").read_text()) for name in heads}
    code, out, err = run_main(capsys, "--models", models_folder, "calibrate", "--faces", pair_corpus["faces"],
                              "--speech", pair_corpus["speech"], "--per-clip", "2", "--seed", "3",
                              "--cache", tmp_path / "cache")
    assert code == 0, err
    clips = len(PAIR_LABELS) * len(PAIR_ACTORS["validation"])
    for name, samples in zip(heads, (2 * len(PAIR_LABELS), clips, clips)):  # PublicTest faces, actors 17-18
        card = json.loads((models_folder / name / "model.json").read_text())
        assert card["temperature"] == card["calibration"]["temperature"] > 0
        assert card["calibration"]["samples"] == samples
        assert {key: value for key, value in card.items() if key not in ("temperature", "calibration")} == \
            {key: value for key, value in cards[name].items() if key not in ("temperature", "calibration")}
        assert f"{name}: temperature {card['temperature']:.3f}" in out
    settings = json.loads((models_folder / "fusion" / "fusion.json").read_text())
    validation = settings["validation"]
    assert validation["pairs"] == 2 * clips and validation["faces_per_clip"] == 2 and validation["seed"] == 3
    assert list(validation["rules"]) == ["sum", "product", "stacker"]
    assert settings["rule"] in validation["rules"]
    assert f"validation pseudo-pairs: {2 * clips};" in out and f"kept: {settings['rule']}," in out

    calibrated = Predictor(models_folder)
    assert calibrated.fusion_rule == settings["rule"]
    assert calibrated.default_weights == pytest.approx(settings["weights"])
    for name in ("face", "speech"):
        model = getattr(calibrated, f"{name}_model")
        assert model.temperature == json.loads((models_folder / name / "model.json").read_text())["temperature"]
    result = calibrated.predict(image=astronaut, audio=clip)
    assert result["fusion"]["status"] == "fused" and result["fusion"]["weights"] == calibrated.default_weights
    assert_valid_result(result["fusion"], LABELS)
