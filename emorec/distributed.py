"""`emorec batch --engine ray`: the batch scoring of `scoring` on Ray Data, from one machine to a cluster.

Scoring actors each load one Predictor once and score batches (the driver lists the inputs and never
loads a model). Ray Data spreads the actors over the nodes, replaces one that dies and retries its batch
on the replacement (its actor pools' defaults: max_restarts=-1, max_task_retries=-1). Inputs are local
paths or URIs any pyarrow filesystem reads (s3://, gs://), or a CSV or Parquet manifest. The output is a
Parquet dataset, one row per input, which a rerun resumes (inputs it already holds are skipped), or for
small jobs the local engine's JSONL/CSV.
"""

import math
import os
import socket
import sys
import time
from pathlib import PurePosixPath

from . import scoring
from .errors import InputError
from .labels import LABELS

try:
    import pyarrow
    import pyarrow.csv
    import pyarrow.fs
    import pyarrow.parquet
    import ray
    import ray.data
except ImportError:
    raise InputError("the ray engine needs Ray: pip install 'emorec[ray]'") from None

ROWS_PER_BLOCK = 128  # inputs per Ray block: one output file each, and the unit a resumed run redoes
BATCH_SIZE = 16  # inputs per actor call
# Logical CPUs an actor reserves. An actor holding a whole CPU starves the read and write tasks (2 actors on
# 2 CPUs deadlock); at half a CPU, one actor per core leaves half the cluster's CPUs for them.
ACTOR_CPUS = 0.5
OUTPUTS = (".parquet", ".jsonl", ".csv")


def filesystem(path):
    """(pyarrow filesystem, path inside it) of a local path or a URI such as s3://bucket/key."""
    if "://" in path:
        return pyarrow.fs.FileSystem.from_uri(path)
    return pyarrow.fs.LocalFileSystem(), os.path.abspath(path)


def folder_files(path):
    """The files under a folder (local or a URI), sorted, or None when `path` is not a folder."""
    if "://" not in path:
        return scoring.local_folder(path)
    fs, inner = filesystem(path)
    if fs.get_file_info(inner).type != pyarrow.fs.FileType.Directory:
        return None
    scheme = path.split("://", 1)[0]
    found = fs.get_file_info(pyarrow.fs.FileSelector(inner, recursive=True))
    files = sorted(PurePosixPath(info.path) for info in found if info.type == pyarrow.fs.FileType.File)
    return [f"{scheme}://{file}" for file in files]  # in the local engine's order (Path order)


def inputs(paths, modality="auto"):
    """The jobs of files and folders, local or URIs, found as the local engine finds them."""
    return [{"path": path, "modality": kind} for path, kind in scoring.expand(paths, modality, folder_files)]


def _read(path):
    """A local path as it is, or the bytes of a URI's file (the decoders take either)."""
    if "://" not in path:
        return path
    fs, inner = filesystem(path)
    try:
        with fs.open_input_stream(inner) as stream:
            return stream.read()
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except OSError as error:
        raise InputError(f"{path}: cannot read the file ({error})") from None


class Scorer:
    """A scoring actor: one Predictor, loaded once; each call turns a batch of inputs into result rows."""

    def __init__(self, models=None, crops=False, weights=None):
        from .predictor import Predictor
        self.predictor = Predictor(models) if models else Predictor()
        self.crops, self.weights = crops, weights

    def __call__(self, batch):
        jobs = batch.to_pylist()
        return _table(jobs, [self._score(job) for job in jobs], self.predictor.labels)

    def _score(self, job):
        if "image" in job:
            result = scoring.row(lambda: scoring.predict_pair(
                self.predictor, job["image"] and _read(job["image"]), job["audio"] and _read(job["audio"]),
                self.crops, self.weights))
        else:
            result = scoring.row(lambda: scoring.predict_file(
                self.predictor, job["path"], job["modality"], self.crops, job["modality"] and _read(job["path"])))
        if result["status"] == "error":  # errors about the bytes of a URI name the URI
            for kind in ("image", "audio"):
                name = job.get(kind, job.get("path"))
                result["error"] = result["error"].replace(f"{kind} upload:", f"{name}:", 1)
        return result


def _table(jobs, results, labels):
    """The output rows as an Arrow table with a fixed schema (probabilities one column per label)."""
    text, number = pyarrow.string(), pyarrow.float64()
    columns = {key: pyarrow.array([job[key] for job in jobs], text) for key in jobs[0]}
    columns.update({key: pyarrow.array([result[key] for result in results], text) for key in ("status", "label")})
    columns["confidence"] = pyarrow.array([result["confidence"] for result in results], number)
    for label in labels:
        columns[label] = pyarrow.array([(result["probabilities"] or {}).get(label) for result in results], number)
    columns["error"] = pyarrow.array([result.get("error") for result in results], text)
    return pyarrow.table(columns)


def _local_row(record, keys, labels):
    """An output row as the local engine writes it to JSONL/CSV."""
    row = {key: record[key] for key in keys if key != "modality"}
    row.update({key: record[key] for key in ("status", "label", "confidence")})
    row["probabilities"] = None if record["confidence"] is None else {label: record[label] for label in labels}
    if record["error"] is not None:
        row["error"] = record["error"]
    return row


def scored(out, keys):
    """The inputs (tuples of `keys`) and the statuses a Parquet dataset `out` holds; a file that a killed run
    left unreadable is deleted, so that its inputs are scored again."""
    fs, root = filesystem(out)
    kind = fs.get_file_info(root).type
    if kind == pyarrow.fs.FileType.NotFound:
        return {}
    if kind != pyarrow.fs.FileType.Directory:
        raise InputError(f"{out}: exists and is not a Parquet dataset folder")
    done = {}
    for info in fs.get_file_info(pyarrow.fs.FileSelector(root, recursive=True)):
        if info.type != pyarrow.fs.FileType.File or not info.path.endswith(".parquet"):
            continue
        try:
            names = pyarrow.parquet.read_schema(info.path, filesystem=fs).names
        except (OSError, pyarrow.ArrowInvalid):
            fs.delete_file(info.path)
            continue
        if not {*keys, "status"} <= set(names):
            raise InputError(f"{out}: holds results of other inputs (no {', '.join(keys)} columns); "
                             "choose another --out")
        table = pyarrow.parquet.read_table(info.path, columns=[*keys, "status"], filesystem=fs)
        done.update(zip(zip(*(table[key].to_pylist() for key in keys)), table["status"].to_pylist()))
    return done


def read_manifest(manifest, modality="auto"):
    """The inputs of a CSV or Parquet manifest (a path column, or image,audio columns), on any filesystem.

    The driver reads it (it filters out what a resumed run has done and sizes the blocks), with pyarrow;
    Ray Data's readers would run on any node, where a manifest beside the job is not."""
    fs, inner = filesystem(manifest)
    try:
        if manifest.endswith(".parquet"):
            table = pyarrow.parquet.read_table(inner, filesystem=fs)
        else:
            with fs.open_input_stream(inner) as stream:
                table = pyarrow.csv.read_csv(stream, convert_options=pyarrow.csv.ConvertOptions(
                    column_types={name: pyarrow.string() for name in ("path", "image", "audio")}))
    except FileNotFoundError:
        raise InputError(f"{manifest}: no such file") from None
    except (OSError, pyarrow.ArrowInvalid) as error:
        raise InputError(f"{manifest}: cannot read the manifest ({error})") from None
    if "path" in table.column_names:
        return [{"path": path, "modality": kind}
                for path, kind in scoring.expand(table["path"].to_pylist(), modality, lambda path: None)]
    if {"image", "audio"} <= set(table.column_names):
        return [{"image": row["image"] or "", "audio": row["audio"] or ""}
                for row in table.select(["image", "audio"]).to_pylist()]
    raise InputError(f"{manifest}: the manifest needs a path column, or columns image,audio")


def run(jobs, out, workers=None, models=None, crops=False, weights=None, scorer=Scorer):
    """Score `jobs` (dicts of path and modality, or of image and audio) on the connected Ray cluster into
    `out` (.parquet: resumed; .jsonl/.csv: rewritten) with actors of class `scorer`. Returns a summary."""
    scoring.check_output(out, OUTPUTS)
    if workers is not None and workers < 1:
        raise InputError("--workers must be at least 1")
    keys = tuple(jobs[0]) if jobs else ("path", "modality")
    resume_keys = keys[:1] if keys[0] == "path" else keys
    parquet = out.endswith(".parquet")
    done = scored(out, resume_keys) if parquet else {}
    todo = [job for job in jobs if tuple(job[key] for key in resume_keys) not in done]
    workers = workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
    ray.data.DataContext.get_current().execution_options.preserve_order = not parquet
    start = time.perf_counter()
    failures = None
    if todo:
        blocks = _blocks(len(todo), workers)
        results = ray.data.from_items(todo, override_num_blocks=blocks).map_batches(
            scorer, fn_constructor_kwargs={"models": models, "crops": crops, "weights": weights},
            batch_size=BATCH_SIZE, batch_format="pyarrow", num_cpus=ACTOR_CPUS,
            compute=ray.data.ActorPoolStrategy(size=min(workers, blocks)))
        if parquet:
            results.write_parquet(out if "://" in out else os.path.abspath(out))
        else:
            failures = _write_rows(results, out, keys)
    elif not parquet:
        failures = _write_rows(None, out, keys)
    seconds = time.perf_counter() - start
    if parquet:
        statuses = scored(out, resume_keys).values()
        total, failures = len(statuses), sum(status == "error" for status in statuses)
    else:
        total = len(todo)
    return {"inputs": len(jobs), "skipped": len(jobs) - len(todo), "scored": len(todo), "rows": total,
            "errors": failures, "seconds": round(seconds, 3),
            "files_per_second": round(len(todo) / seconds, 2) if todo and seconds else None, "workers": workers}


def _blocks(inputs, workers):
    """Blocks of at most ROWS_PER_BLOCK inputs, and at least a few per worker while there are inputs."""
    return min(inputs, max(math.ceil(inputs / ROWS_PER_BLOCK), 4 * workers))


def _write_rows(results, out, keys):
    """Stream the result rows into a JSONL/CSV file in input order; returns the number of error rows."""
    writer, failures, extra = None, 0, [key for key in keys if key != "modality"]
    for batch in results.iter_batches(batch_format="pyarrow", batch_size=None) if results is not None else ():
        names = batch.column_names
        labels = names[names.index("confidence") + 1:names.index("error")]
        writer = writer or scoring.Writer(out, labels, extra)
        for record in batch.to_pylist():
            failures += record["status"] == "error"
            writer.write(_local_row(record, keys, labels))
    if writer is None:
        scoring.Writer(out, LABELS, extra)
    return failures


def connect(address=None):
    """Join the Ray cluster at `address` (auto, ray://host:10001; default: $RAY_ADDRESS, one started on this
    machine, or a new local instance) unless already connected; returns whether this call connected."""
    if address and address != "auto" and "://" not in address:  # ray.init would retry a dead host:port for minutes
        host, _, port = address.rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=10).close()
        except (OSError, ValueError) as error:
            raise InputError(f"cannot join the Ray cluster at {address} ({error})") from None
    if ray.is_initialized():
        return False
    try:
        ray.init(address=address)
    except (ConnectionError, RuntimeError, ValueError) as error:
        raise InputError(f"cannot join the Ray cluster at {address} ({error})") from None
    return True


def batch(args):
    """`emorec batch --engine ray`: list the inputs, score them on the cluster, print a summary."""
    scoring.check_output(args.out, OUTPUTS)
    manifest = args.manifest or args.pairs
    if not (args.paths or manifest):
        raise InputError("give files or folders to predict, --manifest or --pairs")
    jobs = read_manifest(manifest, args.modality) if manifest else inputs(args.paths, args.modality)
    connected = connect(args.address)
    try:
        summary = run(jobs, args.out, args.workers, args.models, args.crops, args.weights)
    finally:
        if connected:
            ray.shutdown()
    rate = f" ({summary['files_per_second']} files/s)" if summary["files_per_second"] else ""
    skipped = f", {summary['skipped']} skipped as already scored" if summary["skipped"] else ""
    print(f"{summary['inputs']} inputs: {summary['scored']} scored by {summary['workers']} workers in "
          f"{summary['seconds']:.1f} s{rate}{skipped}; {summary['rows']} rows, {summary['errors']} failed -> "
          f"{args.out}", file=sys.stderr)
