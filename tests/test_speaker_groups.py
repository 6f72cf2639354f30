"""`emorec batch --normalise`: speech clips standardised by their folder's or the whole batch's
statistics, scored by a speaker-normalised head, as evaluation scores the same clips."""

import json

import numpy as np
import pytest

from emorec import speaker_groups
from emorec.calibration import expected_calibration_error
from emorec.cli import main
from emorec.datasets import speech_clips
from emorec.errors import InputError
from emorec.evaluate import evaluate_speech
from emorec.models import MODELS_DIR, Classifier, softmax
from emorec.predictor import Predictor
from emorec.speech_features import front_end, normalise, speech_features

from conftest import RAVDESS, error_lines, models_copy, shared, write

ACTORS = (21, 22)
EMOTIONS = ("03", "04", "05", "06", "07", "08")  # happy, sad, angry, fearful, disgust, surprised (RAVDESS codes)
TEMPERATURE = 50.0  # the bundled head's logits on standardised features are in the hundreds: soft probabilities


def clip_name(actor, emotion):
    return f"Actor_{actor:02d}/03-01-{emotion}-02-01-01-{actor:02d}.wav"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """Six real RAVDESS clips of each of two test actors, in RAVDESS's layout (one folder per actor)."""
    root = tmp_path_factory.mktemp("ravdess")
    for actor in ACTORS:
        for emotion in EMOTIONS:
            write(root, clip_name(actor, emotion), shared(RAVDESS / clip_name(actor, emotion)).read_bytes())
    return root


@pytest.fixture(scope="module")
def speaker_models(tmp_path_factory):
    """A models folder whose speech/speaker head is the bundled head's network with a card that says it
    was trained on speaker-standardised features (the arithmetic under test does not depend on the weights)."""
    folder = models_copy(tmp_path_factory.mktemp("models"))
    speaker_head(folder / speaker_groups.HEAD)
    return folder


def speaker_head(folder, **changes):
    folder.mkdir(parents=True)
    card = json.loads((MODELS_DIR / "speech" / "model.json").read_text())
    for name in card.get("ensemble", ["model.tflite"]):
        (folder / name).symlink_to(MODELS_DIR / "speech" / name)
    card |= {"feature_normalisation": "speaker", "temperature": TEMPERATURE, **changes}
    (folder / "model.json").write_text(json.dumps(card))
    return folder


@pytest.fixture(scope="module")
def served(speaker_models):
    return Predictor(speaker_models)


@pytest.fixture
def cli_served(monkeypatch, served):
    """In-process `emorec.cli.main` calls on the module's models folder."""
    import emorec.cli
    monkeypatch.setattr(emorec.cli, "_predictor", lambda args: served)
    return served


def batch(capsys, *args):
    """`emorec batch ARGS --modality speech`: the exit code, the rows of its .jsonl output and stderr."""
    out = args[args.index("--out") + 1]
    code = main(["batch", *map(str, args), "--modality", "speech"])
    err = capsys.readouterr().err
    rows = [json.loads(line) for line in out.read_text().splitlines()] if out.suffix == ".jsonl" else None
    return code, rows, err


@pytest.fixture(scope="module")
def evaluation(corpus, speaker_models, tmp_path_factory):
    """The evaluation path on the corpus: its clips, their features standardised per speaker and per
    corpus, and the head's probabilities of each."""
    head = Classifier(speaker_models / speaker_groups.HEAD)
    clips, cache = speech_clips(corpus, head.labels), tmp_path_factory.mktemp("cache")
    extractor = front_end(head.card["front_end"], speaker_models, head.card)
    (features,) = speech_features([clip.path for clip in clips], extractor, cache, progress=False)
    return {"clips": clips, "cache": cache, **{
        normalisation: softmax(head(normalise([features], clips, normalisation)[0]), head.temperature)
        for normalisation in ("speaker", "corpus")}}


def probabilities(rows):
    return np.array([list(row["probabilities"].values()) for row in rows])


def test_grouped_by_folder_or_as_one_batch():
    paths = [f"calls/{name}/{number}.wav" for name in ("b", "a") for number in range(5)] + ["calls/b/late.wav"]
    by_folder = speaker_groups.grouped(paths, "folder")
    assert list(by_folder) == ["calls/b", "calls/a"]  # in order of first appearance
    assert by_folder["calls/b"] == paths[:5] + ["calls/b/late.wav"] and by_folder["calls/a"] == paths[5:10]
    assert speaker_groups.grouped(paths, "batch") == {"batch": paths}
    with pytest.raises(InputError) as refused:
        speaker_groups.grouped(paths[:9] + [f"x{n}/c.wav" for n in range(5)], "folder")
    assert str(refused.value) == ("--normalise folder standardises each group by its own clips and needs at "
                                  "least 5 clips a group; too few in calls/a (4), x0 (1), x1 (1) and 3 more")
    assert speaker_groups.grouped(paths[:5], "batch") == {"batch": paths[:5]}
    with pytest.raises(InputError, match=r"too few in batch \(4\)"):
        speaker_groups.grouped(paths[:4], "batch")


def test_folder_rows_equal_the_evaluation_per_speaker(cli_served, capsys, corpus, evaluation, speaker_models,
                                                     tmp_path):
    """Each actor's folder is one group: the probabilities that evaluation computes standardising per
    speaker (normalise "speaker"), at the head's temperature, in the Predictor's label order, from the
    default head (<models>/speech/speaker); `evaluate speech` on the clips scores what the rows say."""
    code, rows, err = batch(capsys, corpus, "--normalise", "folder", "--out", tmp_path / "rows.jsonl")
    assert code == 0 and "12 inputs in 2 groups, 0 failed" in err
    assert [row["path"] for row in rows] == [clip.path for clip in evaluation["clips"]]
    assert [(row["group"], row["group_size"]) for row in rows] == [(str(corpus / f"Actor_{actor}"), 6)
                                                                   for actor in ACTORS for _ in EMOTIONS]
    assert {row["status"] for row in rows} == {"ok"}
    np.testing.assert_allclose(probabilities(rows), evaluation["speaker"], atol=2e-6)
    assert 0.05 < probabilities(rows).max(axis=1).min() < 0.95  # soft: the temperature is applied
    for row in rows:
        assert list(row["probabilities"]) == list(cli_served.labels)
        assert row["label"] == max(row["probabilities"], key=row["probabilities"].get)
        assert row["confidence"] == max(row["probabilities"].values())
    report = evaluate_speech(speaker_models / speaker_groups.HEAD, corpus, "test", evaluation["cache"],
                             speaker_models)
    truth = [cli_served.labels[clip.label] for clip in evaluation["clips"]]
    assert report["feature_normalisation"] == "speaker" and report["samples"] == len(rows) == 12
    assert report["accuracy"] == round(np.mean([row["label"] == label for row, label in zip(rows, truth)]), 4)
    targets = np.array([clip.label for clip in evaluation["clips"]])
    assert report["temperature"] == TEMPERATURE  # the calibration error of the probabilities served
    assert report["ece"] == pytest.approx(expected_calibration_error(probabilities(rows), targets), abs=1e-4)
    assert report["ece_temperature_1"] != report["ece"]


def test_batch_is_one_group_for_every_clip(cli_served, capsys, corpus, evaluation, tmp_path):
    """--normalise batch: the two actors' clips are standardised together, as evaluation does per corpus."""
    code, rows, err = batch(capsys, corpus / "Actor_22", corpus / "Actor_21", "--normalise", "batch",
                            "--out", tmp_path / "rows.jsonl")
    assert code == 0 and "12 inputs in 1 group, 0 failed" in err
    assert {(row["group"], row["group_size"]) for row in rows} == {("batch", 12)}
    order = [row["path"] for row in rows]
    assert order == sorted(order, key=lambda path: "Actor_21" in path)  # the order they were named in
    expected = {clip.path: p for clip, p in zip(evaluation["clips"], evaluation["corpus"])}
    # the same clips in another order: the same statistics (summed in float64), the same probabilities
    np.testing.assert_allclose(probabilities(rows), [expected[path] for path in order], atol=2e-6)
    assert not np.allclose(evaluation["corpus"], evaluation["speaker"], atol=1e-3)  # the grouping matters


def test_the_predictors_front_end_serves_a_head_that_reads_the_same_features(served, tmp_path):
    """The encoder is loaded once when the head's card names the Predictor's features; a head reading
    other layers gets its own front end."""
    same = speaker_groups.load_head(served.models_dir / speaker_groups.HEAD, served.labels)
    assert speaker_groups._front_end(served, same) is served.speech_front_end
    fewer = speaker_groups.load_head(speaker_head(tmp_path / "fewer", whisper_layers=[2, 3, 4, 5]), served.labels)
    own = speaker_groups._front_end(served, fewer)
    assert own is not served.speech_front_end and own.layers == [2, 3, 4, 5]


def test_a_bad_clip_is_an_error_row_left_out_of_its_group(cli_served, capsys, corpus, evaluation, tmp_path):
    folder = tmp_path / "voice-notes"
    for emotion in EMOTIONS:
        write(folder, f"{emotion}.wav", (corpus / clip_name(21, emotion)).read_bytes())
    write(folder, "zz-broken.wav", b"RIFF....WAVEjunk")
    code, rows, err = batch(capsys, folder, "--normalise", "folder", "--out", tmp_path / "rows.jsonl",
                            "--speech-model", cli_served.models_dir / speaker_groups.HEAD)
    assert code == 0 and "7 inputs in 1 group, 1 failed" in err and "Traceback" not in err
    assert [row["status"] for row in rows] == ["ok"] * 6 + ["error"]
    assert {(row["group"], row["group_size"]) for row in rows} == {(str(folder), 6)}
    assert "zz-broken.wav: not a readable audio file" in rows[6]["error"] and rows[6]["probabilities"] is None
    np.testing.assert_allclose(probabilities(rows[:6]), evaluation["speaker"][:6], atol=2e-6)  # as without it


def test_a_group_with_too_few_decoded_clips_gets_error_rows(cli_served, capsys, corpus, tmp_path):
    folder = tmp_path / "call"
    for emotion in EMOTIONS[:4]:
        write(folder, f"{emotion}.wav", (corpus / clip_name(21, emotion)).read_bytes())
    write(folder, "y-empty.wav", b"")
    write(folder, "z-tone.txt.wav", "not audio")
    code, _, err = batch(capsys, folder, "--normalise", "folder", "--out", tmp_path / "rows.csv")
    assert code == 0 and "6 inputs in 1 group, 6 failed" in err
    header, *lines = (tmp_path / "rows.csv").read_text().splitlines()
    assert header.startswith("path,group,group_size,status,label,confidence,angry,")
    assert [line.split(",")[2:4] for line in lines] == [["4", "error"]] * 6
    assert all(f"{folder}: only 4 of its clips decoded; standardising by the group needs at least 5" in line
               for line in lines[:4])
    assert "file is empty" in lines[4] and "not a readable audio file" in lines[5]


@pytest.mark.parametrize("args, message", [
    (["{corpus}", "--normalise", "folder", "--speech-model", "{bundled}"],
     "{bundled}: the head was trained with feature normalisation 'none'; --normalise needs one trained with "
     "`emorec train speech --normalise speaker`"),
    (["{corpus}", "--normalise", "folder", "--speech-model", "{tmp}/nowhere"],
     "{tmp}/nowhere: no speech head (model.json and model.tflite) there; give --speech-model"),
    (["{corpus}", "--normalise", "folder", "--speech-model", "{six}"],
     "{six}: the head's labels angry, disgust, fear, happy, neutral, sad are not the models' angry, disgust, "
     "fear, happy, neutral, sad, surprise"),
    (["{corpus}/Actor_21", "{corpus}/Actor_22/03-01-03-02-01-01-22.wav", "--normalise", "folder"],
     "--normalise folder standardises each group by its own clips and needs at least 5 clips a group; "
     "too few in {corpus}/Actor_22 (1)"),
    (["{corpus}/Actor_21/03-01-03-02-01-01-21.wav", "--normalise", "batch"],
     "--normalise batch standardises each group by its own clips and needs at least 5 clips a group; "
     "too few in batch (1)"),
    (["{corpus}", "--normalise", "folder", "--modality", "auto"],
     "--normalise groups speech clips: give files or folders with --modality speech (faces, videos and "
     "--pairs are scored one by one)"),
    (["{corpus}", "--normalise", "folder", "--modality", "video"], "--normalise groups speech clips"),
    (["{corpus}", "--normalise", "folder", "--modality", "face"], "--normalise groups speech clips"),
    (["--pairs", "{tmp}/pairs.csv", "--normalise", "batch"], "--normalise groups speech clips"),
    (["{corpus}", "--normalise", "folder", "--engine", "ray"],
     "--normalise runs on the local engine only: each group's clips are standardised together in one process"),
    (["{corpus}", "--speech-model", "{bundled}"],
     "--speech-model is the head that --normalise scores with: give --normalise too"),
    (["--normalise", "batch"], "give files or folders to predict, or --pairs"),
])
def test_errors_exit_2_with_one_line(cli_served, capsys, corpus, tmp_path, args, message):
    six = speaker_head(tmp_path / "six", labels=["angry", "disgust", "fear", "happy", "neutral", "sad"])
    names = {"corpus": corpus, "tmp": tmp_path, "bundled": MODELS_DIR / "speech", "six": six}
    write(tmp_path, "pairs.csv", f"image,audio\n,{corpus / clip_name(21, '03')}\n")
    arguments = [arg.format(**names) for arg in args]
    code = main(["batch", *arguments, "--out", str(tmp_path / "rows.jsonl")]
                + ([] if "--modality" in arguments else ["--modality", "speech"]))
    captured = capsys.readouterr()
    assert code == 2 and captured.out == "" and "Traceback" not in captured.err
    assert error_lines(captured.err) == captured.err.splitlines()
    (line,) = error_lines(captured.err)
    assert line.startswith(f"emorec: error: {message.format(**names)}")
    assert not (tmp_path / "rows.jsonl").exists()  # refused before any output

