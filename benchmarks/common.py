"""Shared benchmark helpers: generated inputs, multipart requests, gunicorn servers, /proc memory."""

import http.client
import io
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
ASTRONAUT = SHARED / "samples" / "astronaut.png"
FER_TEST = SHARED / "data" / "fer2013" / "test"
RAVDESS = SHARED / "data" / "ravdess_speech_16k"
ONE_THREAD = {name: "1" for name in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                     "OPENCV_FOR_THREADS_NUM", "TF_NUM_INTRAOP_THREADS",
                                     "TF_NUM_INTEROP_THREADS")}


def make_inputs():
    """Request bodies: a 640x480 JPEG photo with one face, a 48x48 FER2013 crop, 5 s and 30 s speech WAVs."""
    photo = Image.open(ASTRONAUT).convert("RGB").resize((640, 640), Image.LANCZOS).crop((0, 0, 640, 480))
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=90)
    crop = sorted((FER_TEST / "happy").iterdir())[0].read_bytes()
    clips, total = [], 0
    for path in sorted((RAVDESS / "Actor_21").glob("*.wav")):
        samples, rate = soundfile.read(path, dtype="float32")
        assert rate == 16000, path
        clips.append(samples if samples.ndim == 1 else samples.mean(axis=1))
        total += len(clips[-1])
        if total >= 30 * rate:
            break
    speech = np.concatenate(clips)
    return {"photo": buffer.getvalue(), "crop": crop,
            "clip5": wav_bytes(speech[:5 * 16000]), "clip30": wav_bytes(speech[:30 * 16000])}


def wav_bytes(samples, rate=16000):
    buffer = io.BytesIO()
    soundfile.write(buffer, samples, rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def request_fields(inputs, kind):
    """Multipart fields of one request kind: photo, crop, clip5, clip30 or both (photo + 5 s clip)."""
    return {"photo": {"image": inputs["photo"]}, "crop": {"image": inputs["crop"], "crops": "1"},
            "clip5": {"audio": inputs["clip5"]}, "clip30": {"audio": inputs["clip30"]},
            "both": {"image": inputs["photo"], "audio": inputs["clip5"]}}[kind]


def multipart(fields):
    """(body, content type) of a multipart/form-data request; bytes values are sent as files."""
    boundary = uuid.uuid4().hex
    parts = []
    for name, value in fields.items():
        filename = f'; filename="{name}"' if isinstance(value, bytes) else ""
        data = value if isinstance(value, bytes) else value.encode()
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"{filename}\r\n\r\n'.encode()
                     + data + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode(), f"multipart/form-data; boundary={boundary}"


def post(connection, body, content_type):
    """POST /api/predict on an open connection: (status, seconds)."""
    start = time.perf_counter()
    connection.request("POST", "/api/predict", body, {"Content-Type": content_type})
    response = connection.getresponse()
    response.read()
    return response.status, time.perf_counter() - start


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_server(command, port, env=None, timeout=120):
    """Start a server command (argument list) from the repository root; returns (process, seconds to
    the first 200 on /api/health)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, cwd=ROOT, env={**os.environ, **(env or {})},
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    while time.perf_counter() - start < timeout:
        if process.poll() is not None:
            raise RuntimeError(f"server exited: {process.stderr.read().decode()[-2000:]}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/health")
            if connection.getresponse().status == 200:
                return process, time.perf_counter() - start
        except OSError:
            time.sleep(0.05)
    stop_server(process)
    raise RuntimeError(f"server not ready after {timeout} s")


def stop_server(process):
    process.terminate()
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def gunicorn(port):
    """The start of a gunicorn command line: one worker, one thread, on a loopback port."""
    return [sys.executable, "-m", "gunicorn", "-w", "1", "--threads", "1", "--bind", f"127.0.0.1:{port}",
            "--timeout", "300"]


def children(pid):
    """Process ids whose parent is pid (gunicorn's workers)."""
    found = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return sorted(found)


def rss_mb(pid="self", field="VmRSS"):
    """Resident memory (or another /proc status field such as VmHWM) of a process in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"{field} not in /proc/{pid}/status")


def maps_tensorflow(pid):
    """Whether a process has a TensorFlow library mapped (LiteRT's own libraries do not count)."""
    return any("tensorflow" in line.rsplit("/", 1)[-1] for line in Path(f"/proc/{pid}/maps").read_text().splitlines()
               if ".so" in line)


def percentiles(seconds, points=(50, 95)):
    """{"p50": ms, ...} of a list of durations in seconds."""
    return {f"p{p}": round(float(np.percentile(np.array(seconds) * 1000, p)), 2) for p in points}
