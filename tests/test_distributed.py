"""The Ray engine of `emorec batch` (emorec.distributed) on a local Ray instance of 2 CPUs."""

import json
import os
import sys

import pyarrow
import pyarrow.parquet
import pytest
import ray
import ray.cloudpickle

import emorec
from emorec import distributed
from emorec.cli import main
from emorec.labels import LABELS

from conftest import RAVDESS, SAMPLES, shared, write

CLIPS = [f"Actor_{actor}/03-01-{code}-02-01-01-{actor}.wav"
         for actor, code in (("21", "03"), ("22", "04"), ("23", "05"))]


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    """One local Ray instance for the module: 2 CPUs, as on the machines the suite runs on."""
    ray.init(num_cpus=2, include_dashboard=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """Three photos (one without a face), three RAVDESS clips, a broken photo and a broken clip."""
    folder = tmp_path_factory.mktemp("inputs")
    for name in ("astronaut.png", "camera.png", "chelsea.png"):
        write(folder, f"photos/{name}", shared(SAMPLES / name).read_bytes())
    for name in CLIPS:
        write(folder, f"clips/{name.split('/')[1]}", shared(RAVDESS / name).read_bytes())
    write(folder, "photos/broken.jpg", b"\xff\xd8\xff\xe0 not a JPEG")
    write(folder, "clips/broken.wav", b"RIFF....WAVEjunk")
    write(folder, "notes.txt", "not an input")
    return folder


@pytest.fixture(scope="module")
def local_rows(folder, tmp_path_factory):
    """The local engine's JSONL rows over the folder and a missing file, by path."""
    out = tmp_path_factory.mktemp("local") / "local.jsonl"
    assert main(["batch", str(folder), str(folder / "gone.wav"), "--out", str(out)]) == 0
    return {row["path"]: row for row in map(json.loads, out.read_text().splitlines())}


def read_rows(out):
    return pyarrow.parquet.read_table(out).to_pylist()


def test_parquet_rows_equal_the_local_engine(folder, local_rows, tmp_path):
    jobs = distributed.inputs([folder, folder / "gone.wav"])
    summary = distributed.run(jobs, str(tmp_path / "scores.parquet"))
    assert (summary["inputs"], summary["scored"], summary["skipped"], summary["rows"]) == (9, 9, 0, 9)
    assert summary["errors"] == 3
    rows = read_rows(tmp_path / "scores.parquet")
    assert sorted(row["path"] for row in rows) == sorted(local_rows)
    assert [name for name in rows[0]] == ["path", "modality", "status", "label", "confidence", *LABELS, "error"]
    for row in rows:
        local = local_rows[row["path"]]
        assert row["modality"] == ("face" if row["path"].endswith((".png", ".jpg")) else "speech")
        assert (row["status"], row["label"], row["confidence"]) == (local["status"], local["label"],
                                                                    local["confidence"])
        assert {label: row[label] for label in LABELS} == (local["probabilities"] or dict.fromkeys(LABELS))
        assert row["error"] == local.get("error")
    statuses = {os.path.basename(row["path"]): row["status"] for row in rows}
    assert [statuses[name] for name in ("astronaut.png", "chelsea.png", "broken.jpg", "broken.wav", "gone.wav")] \
        == ["ok", "no_face", "error", "error", "error"]
    assert sum(row["status"] == "ok" and row["modality"] == "speech" for row in rows) == 3


@pytest.mark.parametrize("suffix", ["jsonl", "csv"])
def test_jsonl_and_csv_are_the_local_engines_files(folder, tmp_path, suffix):
    """The same bytes as `emorec batch` writes locally, row order included."""
    local, remote = tmp_path / f"local.{suffix}", tmp_path / f"ray.{suffix}"
    assert main(["batch", str(folder), "--out", str(local)]) == 0
    assert main(["batch", str(folder), "--engine", "ray", "--workers", "2", "--out", str(remote)]) == 0
    assert remote.read_bytes() == local.read_bytes()
    assert len(remote.read_text().splitlines()) == 8 + (suffix == "csv")


def test_resume_scores_only_the_rest(folder, local_rows, tmp_path):
    """An interrupted run: some inputs already written, and a file the kill left truncated."""
    out = tmp_path / "scores.parquet"
    jobs = distributed.inputs([folder])
    first = distributed.run(jobs[:3], str(out), workers=1)
    assert first["scored"] == 3
    (written,) = out.glob("*.parquet")
    write(out, "killed-mid-write.parquet", written.read_bytes()[:200])
    summary = distributed.run(jobs, str(out))
    assert (summary["skipped"], summary["scored"], summary["rows"]) == (3, len(jobs) - 3, len(jobs))
    assert not (out / "killed-mid-write.parquet").exists()
    rows = read_rows(out)
    assert sorted(row["path"] for row in rows) == sorted(job["path"] for job in jobs)
    assert all(row["label"] == local_rows[row["path"]]["label"] for row in rows)
    again = distributed.run(jobs, str(out))
    assert (again["skipped"], again["scored"], again["rows"]) == (len(jobs), 0, len(jobs))


def test_uris_are_listed_and_read_through_pyarrow(folder, local_rows, tmp_path):
    """file:// stands for s3:// and gs://: listed with pyarrow, read as bytes, errors naming the URI."""
    jobs = distributed.inputs([f"file://{folder}", f"file://{folder}/gone.wav"])
    assert [job["path"] for job in jobs] == [f"file://{path}" for path in local_rows]
    distributed.run(jobs, str(tmp_path / "scores.parquet"))
    for row in read_rows(tmp_path / "scores.parquet"):
        local = local_rows[row["path"].removeprefix("file://")]
        assert (row["status"], row["label"], row["confidence"]) == (local["status"], local["label"],
                                                                    local["confidence"])
        assert row["error"] == (local.get("error") and "file://" + local["error"])


def test_manifests_csv_paths_and_parquet_pairs(folder, predictor, tmp_path):
    photo, clip = folder / "photos" / "astronaut.png", folder / "clips" / CLIPS[0].split("/")[1]
    paths = write(tmp_path, "paths.csv", f"path\n{photo}\n{clip}\n{folder / 'gone.png'}\n")
    assert [job["modality"] for job in distributed.read_manifest(str(paths))] == ["face", "speech", "face"]
    pairs = tmp_path / "pairs.parquet"
    pyarrow.parquet.write_table(pyarrow.table({"image": [str(photo), ""], "audio": [str(clip), str(clip)]}), pairs)
    out = tmp_path / "fused.jsonl"
    assert main(["batch", "--manifest", str(pairs), "--engine", "ray", "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    for row, image in zip(rows, (photo, None)):
        expected = predictor.predict(image, clip)["fusion"]
        assert (row["status"], row["label"], row["probabilities"]) == (expected["status"], expected["label"],
                                                                       expected["probabilities"])
    assert [row["status"] for row in rows] == ["fused", "speech_only"]


class DyingScorer(distributed.Scorer):
    """Kills its own worker process on its first batch (once: `marker`, a file, says it died)."""

    marker = None

    def __call__(self, batch):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            os._exit(1)
        return super().__call__(batch)


def test_a_dying_worker_is_replaced_and_its_batch_retried(folder, tmp_path, monkeypatch):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the workers cannot import tests/
    monkeypatch.setattr(DyingScorer, "marker", str(tmp_path / "died"))
    jobs = distributed.inputs([folder / "photos"])
    summary = distributed.run(jobs, str(tmp_path / "scores.parquet"), workers=1, scorer=DyingScorer)
    assert os.path.exists(DyingScorer.marker)
    assert (summary["scored"], summary["rows"]) == (4, 4)
    assert sorted(row["path"] for row in read_rows(tmp_path / "scores.parquet")) == sorted(j["path"] for j in jobs)


def test_missing_paths_and_manifests(folder, tmp_path, capsys):
    jobs = distributed.inputs([tmp_path / "gone.png", tmp_path / "no-folder"])
    assert [job["modality"] for job in jobs] == ["face", None]
    out = tmp_path / "scores.jsonl"
    assert main(["batch", str(tmp_path / "gone.png"), "--engine", "ray", "--out", str(out)]) == 0
    (row,) = map(json.loads, out.read_text().splitlines())
    assert (row["status"], row["error"]) == ("error", f"{tmp_path / 'gone.png'}: no such file")
    for argv, message in (
            (["--manifest", str(tmp_path / "gone.csv")], f"{tmp_path / 'gone.csv'}: no such file"),
            (["--manifest", str(write(tmp_path, "bad.csv", "name\nx.png\n"))], "needs a path column"),
            (["--manifest", str(write(tmp_path, "bad.parquet", b"PAR1 junk"))], "cannot read the manifest"),
            ([str(folder), "--out", str(tmp_path / "scores.txt")], "--out must end in .parquet or .jsonl or .csv"),
            ([str(folder), "--workers", "0"], "--workers must be at least 1"),
            ([str(folder), "--address", "127.0.0.1:1"], "cannot join the Ray cluster at 127.0.0.1:1"),
            ([], "give files or folders to predict, --manifest or --pairs")):
        argv = ["batch", *argv, "--engine", "ray"] + ([] if "--out" in argv else ["--out", str(out)])
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert err[-1].startswith("emorec: error: ") and message in err[-1], err


def test_local_engine_refuses_ray_options(tmp_path, capsys):
    assert main(["batch", str(tmp_path), "--workers", "2", "--out", str(tmp_path / "x.jsonl")]) == 2
    assert capsys.readouterr().err.strip() == "emorec: error: --manifest, --address and --workers need --engine ray"


def test_without_ray_installed_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray fails, as where the extra is not installed
    monkeypatch.delitem(sys.modules, "emorec.distributed")
    monkeypatch.delattr(emorec, "distributed")
    assert main(["batch", str(tmp_path), "--engine", "ray", "--out", str(tmp_path / "x.parquet")]) == 2
    assert capsys.readouterr().err.strip() == "emorec: error: the ray engine needs Ray: pip install 'emorec[ray]'"
