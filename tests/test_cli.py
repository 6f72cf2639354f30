"""The `emorec` command line, in subprocesses (as users run it) and in-process (fast)."""

import csv
import json

import cv2
import numpy as np
import pytest

from emorec.cli import main
from emorec.labels import LABELS

from conftest import (assert_valid_result, error_lines, gradient, image_bytes, run_cli, tone, wav_bytes,
                      write)


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
    assert lines[2].startswith("fusion: ") and "from face + speech [weights face=0.60, speech=0.40]" in lines[2]
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
    assert done.returncode == 2 and error_lines(done.stderr) == ["emorec: error: give --image, --audio, or both"]
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
    (["predict"], "give --image, --audio, or both"),
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
    (["evaluate", "speech", "--data", "{tmp}", "--split", "public-test"], "unknown RAVDESS split 'public-test'"),
    (["evaluate", "face", "--data", "{tmp}", "--split", "validation"], "unknown FER2013 split 'validation'"),
    (["evaluate", "face", "--data", "{missing}"], "no FER2013 folder or csv"),
])
def test_errors_exit_2_with_one_message(cli_predictor, capsys, tmp_path, astronaut, args, message):
    corpus = write(tmp_path, "ravdess/03-01-05-01-01-01-21.wav", wav_bytes(tone(0.2)))
    names = {"missing": tmp_path / "missing.file", "astronaut": astronaut, "tmp": tmp_path,
             "wrong_columns": write(tmp_path, "wrong.csv", "photo,clip\na.png,b.wav\n"),
             "binary": write(tmp_path, "binary.csv", b"\xff\xfe\x00\x81" * 100)}
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
