"""Audio decoding side by side: libsndfile against FFmpeg (PyAV) on the same WAV, FFmpeg on compressed
copies of it, and what importing PyAV adds to a serving process (time and resident memory).

    .venv/bin/python benchmarks/decode.py [--reps 40] [--out benchmarks/decode.json]

One thread; the figures compare side by side, on a machine whose load average is recorded with them.
The clips are common.make_inputs()'s 5 s and 30 s RAVDESS speech (actor 21).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common

os.environ.update(common.ONE_THREAD)

from emorec import media  # noqa: E402
from emorec.audio import SAMPLE_RATE, load_audio  # noqa: E402

HERE = Path(__file__).resolve().parent
# Everything serving imports besides PyAV, then PyAV: its own import time and memory.
IMPORT_PROBE = """
import time
def rss():
    return int(open('/proc/self/status').read().split('VmRSS:')[1].split()[0]) / 1024
import numpy, soundfile, soxr, cv2, flask, PIL.Image, ai_edge_litert.interpreter
before, start = rss(), time.perf_counter()
import av
print(time.perf_counter() - start, rss() - before)
"""


def timed(function, reps):
    function()  # warm-up
    durations = []
    for _ in range(reps):
        start = time.perf_counter()
        function()
        durations.append(time.perf_counter() - start)
    return common.percentiles(durations)["p50"]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=40)
    parser.add_argument("--out", type=Path, default=HERE / "decode.json")
    args = parser.parse_args()
    inputs = common.make_inputs()
    report = {"load_average_at_start": os.getloadavg(), "decode_ms_p50": {}}
    for clip in ("clip5", "clip30"):
        wav = inputs[clip]
        waveform = load_audio(wav)
        rows = {"wav libsndfile (load_audio)": lambda: load_audio(wav),
                "wav FFmpeg (media.decode_audio)": lambda: media.decode_audio(wav, SAMPLE_RATE)}
        for codec, bitrate in (("mp3", 32000), ("aac", 32000), ("opus", 24000)):
            data = media.encode_audio(waveform, SAMPLE_RATE, codec, bitrate)
            rows[f"{codec} {bitrate // 1000}k FFmpeg (load_audio)"] = lambda data=data: load_audio(data)
        rows["opus round trip (media.codec_round_trip)"] = lambda: media.codec_round_trip(waveform, SAMPLE_RATE,
                                                                                           "opus", 24000)
        report["decode_ms_p50"][clip] = {name: timed(function, args.reps) for name, function in rows.items()}
    probes = [subprocess.run([sys.executable, "-c", IMPORT_PROBE], capture_output=True, text=True, check=True,
                             env={**os.environ, **common.ONE_THREAD}).stdout.split() for _ in range(5)]
    report["import_av"] = {"seconds_median": round(statistics.median(float(p[0]) for p in probes), 3),
                           "rss_mb_median": round(statistics.median(float(p[1]) for p in probes), 1)}
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    for clip, rows in report["decode_ms_p50"].items():
        wav = rows["wav libsndfile (load_audio)"]
        for name, value in rows.items():
            print(f"{clip:7s} {name:42s} {value:8.2f} ms  {value / wav:6.1f}x libsndfile WAV")
    print(f"import av in a process that has the other serving imports: {report['import_av']['seconds_median']} s, "
          f"+{report['import_av']['rss_mb_median']} MB resident (median of 5 fresh processes)")


if __name__ == "__main__":
    main()
