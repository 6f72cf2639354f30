"""A video's timelines on one thread: real-time factor and where the time goes, side by side with the
photo + WAV path.

    .venv/bin/python benchmarks/video.py [--reps 5] [--out benchmarks/video.json]

The clip is the 720p RAVDESS take ../shared/samples/video/01-01-03-01-01-02-05.mp4 (1280x720, 29.97
frames/s, 3.24 s, H.264 + AAC), analysed at the default 5 frames/s, decoding included, with frames
decoded at most timeline.FRAME_MAX_SIDE (640) pixels wide, and at most 1280 (what photos get). The real-time
factor is seconds of video per second of processing (the median run). The photo + WAV path is
Predictor.predict on common.make_inputs()'s 640x480 photo and 5 s WAV. Peak memory: fresh processes
analysing synthetic 720p clips (10 frames/s, a face, a tone) of 30 s and 10 minutes (--memory).
The machine's load average is recorded with the figures: they compare side by side, not across machines.
"""

import argparse
import collections
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

import common

os.environ.update(common.ONE_THREAD)

import av  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from emorec import timeline, video  # noqa: E402
from emorec.predictor import Predictor  # noqa: E402

HERE = Path(__file__).resolve().parent
CLIP = common.SHARED / "samples" / "video" / "01-01-03-01-01-02-05.mp4"
STAGES = ("decode frames", "detect", "classify faces", "decode sound", "speech model")
# Peak resident memory of a fresh process analysing the video named on its command line.
MEMORY_PROBE = """
import sys
sys.path.insert(0, sys.argv[2])
from common import rss_mb
from emorec import timeline
from emorec.predictor import Predictor
predictor = Predictor(threads=1)
ready = rss_mb(field="VmHWM")
steps = len(timeline.analyse(predictor, sys.argv[1], threads=1)["timeline"])
print(ready, rss_mb(field="VmHWM"), steps)
"""


class Stopwatch:
    """Seconds spent in each wrapped function (and in each wrapped generator's steps), by stage."""

    def __init__(self):
        self.seconds = collections.Counter()

    def function(self, stage, function):
        def timed(*args, **kwargs):
            start = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                self.seconds[stage] += time.perf_counter() - start
        return timed

    def generator(self, stage, function):
        def timed(*args, **kwargs):
            items = function(*args, **kwargs)
            while True:
                start = time.perf_counter()
                try:
                    item = next(items)
                except StopIteration:
                    return
                finally:
                    self.seconds[stage] += time.perf_counter() - start
                yield item
        return timed


def profile(predictor, data, reps, max_side):
    """Median seconds of a whole analysis, and the median seconds of each stage."""
    watch, totals, stages = Stopwatch(), [], collections.defaultdict(list)
    originals = (video.read_frames, video.load_soundtrack, predictor.detector.detect,
                 predictor.classify_photo_faces, predictor.predict_speech, timeline.FRAME_MAX_SIDE)
    video.read_frames = watch.generator("decode frames", originals[0])
    video.load_soundtrack = watch.function("decode sound", originals[1])
    predictor.detector.detect = watch.function("detect", originals[2])
    predictor.classify_photo_faces = watch.function("classify faces", originals[3])
    predictor.predict_speech = watch.function("speech model", originals[4])
    timeline.FRAME_MAX_SIDE = max_side
    try:
        for rep in range(reps + 1):  # the first is a warm-up
            watch.seconds.clear()
            start = time.perf_counter()
            result = timeline.analyse(predictor, data, threads=1)
            if rep:
                totals.append(time.perf_counter() - start)
                for stage in STAGES:
                    stages[stage].append(watch.seconds[stage])
    finally:
        video.read_frames, video.load_soundtrack = originals[:2]
        del predictor.detector.detect, predictor.classify_photo_faces, predictor.predict_speech
        timeline.FRAME_MAX_SIDE = originals[5]
    total = statistics.median(totals)
    seconds = {stage: statistics.median(values) for stage, values in stages.items()}
    seconds["other (tracking, fusion, JSON)"] = max(0.0, total - sum(seconds.values()))
    return total, seconds, result


def write_clip(path, seconds, fps=10, size=(1280, 720)):
    """A synthetic 720p H.264 + AAC clip, written frame by frame: the astronaut's face drifting over grey,
    a 220 Hz tone."""
    face = np.asarray(Image.open(common.ASTRONAUT).convert("RGB").resize((360, 360)))
    with av.open(str(path), "w") as output:
        picture = output.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        picture.width, picture.height, picture.pix_fmt = *size, "yuv420p"
        sound = output.add_stream("aac", rate=16000, layout="mono")
        for index in range(round(seconds * fps)):
            frame = np.full((size[1], size[0], 3), 110, np.uint8)
            left = int(200 + 300 * (1 + np.sin(index / fps)))
            frame[180:540, left:left + 360] = face
            output.mux(picture.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
            tone = 0.1 * np.sin(2 * np.pi * 220 * (np.arange(1600) + 1600 * index) / 16000)
            samples = av.AudioFrame.from_ndarray(tone.astype(np.float32)[None], format="fltp", layout="mono")
            samples.sample_rate, samples.pts, samples.time_base = 16000, 1600 * index, Fraction(1, 16000)
            output.mux(sound.encode(samples))
        output.mux(picture.encode(None))
        output.mux(sound.encode(None))


def peak_memory(seconds_list):
    """{seconds: (resident MB when ready, peak resident MB, steps)} of fresh processes analysing synthetic
    clips of those lengths."""
    found = {}
    with tempfile.TemporaryDirectory() as folder:
        for seconds in seconds_list:
            path = Path(folder) / f"{seconds}.mp4"
            write_clip(path, seconds)
            output = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path), str(HERE)], capture_output=True,
                                    text=True, check=True, env={**os.environ, **common.ONE_THREAD}).stdout
            ready, peak, steps = output.split()
            found[seconds] = {"ready_mb": round(float(ready), 1), "peak_mb": round(float(peak), 1),
                              "steps": int(steps)}
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--out", type=Path, default=HERE / "video.json")
    parser.add_argument("--memory", type=float, nargs="*", default=[30, 600],
                        help="seconds of synthetic 720p video whose peak memory is measured (none: skip)")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    predictor = Predictor(threads=1)
    data = CLIP.read_bytes()
    info = video.video_info(data)
    report = {"load_average_at_start": os.getloadavg(), "clip": CLIP.name,
              "clip_info": {"seconds": info.seconds, "width": info.width, "height": info.height, "fps": info.fps},
              "sampling_fps": video.DEFAULT_FPS, "threads": 1, "runs": {}}
    for max_side in (timeline.FRAME_MAX_SIDE, 1280):  # the default, and the photo path's detection size
        total, seconds, result = profile(predictor, data, args.reps, max_side)
        report["runs"][f"frames at most {max_side} px"] = {
            "seconds_median": round(total, 4), "real_time_factor": round(info.seconds / total, 2),
            "stage_seconds_median": {stage: round(value, 4) for stage, value in seconds.items()},
            "steps": len(result["timeline"]), "face_label": result["face"]["label"],
            "fused_label": result["fusion"]["label"]}
    inputs = common.make_inputs()
    predictor.predict(inputs["photo"], inputs["clip5"])
    durations = []
    for _ in range(args.reps * 4):
        start = time.perf_counter()
        predictor.predict(inputs["photo"], inputs["clip5"])
        durations.append(time.perf_counter() - start)
    photo_wav = statistics.median(durations)
    report["photo_and_5s_wav"] = {"seconds_median": round(photo_wav, 4), "real_time_factor": round(5 / photo_wav, 2)}
    report["peak_memory"] = peak_memory(args.memory)
    report["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"load average {report['load_average_at_start'][0]:.1f} at the start, "
          f"{report['load_average_at_end'][0]:.1f} at the end, on 2 cores shared: the machine is loaded")
    for name, run in report["runs"].items():
        print(f"{CLIP.name} ({info.seconds:.2f} s, {info.width}x{info.height}) at {video.DEFAULT_FPS:g} frames/s, "
              f"{name}: {run['seconds_median']:.3f} s, {run['real_time_factor']:.1f}x real time")
        for stage, value in run["stage_seconds_median"].items():
            print(f"    {stage:32s} {value:7.3f} s  {value / run['seconds_median']:6.1%}")
    print(f"photo (640x480) + 5 s WAV through Predictor.predict: {photo_wav:.3f} s, "
          f"{report['photo_and_5s_wav']['real_time_factor']:.1f}x real time for its 5 s of sound")
    for seconds, memory in report["peak_memory"].items():
        print(f"synthetic 720p clip of {seconds:g} s at 10 frames/s: {memory['steps']} steps, resident "
              f"{memory['ready_mb']} MB when ready, {memory['peak_mb']} MB at the peak")


if __name__ == "__main__":
    main()
