"""A video's timelines on one thread: real-time factor and where the time goes, side by side with the
photo + WAV path; what following faces and holding their classification cost in quality; decoding;
peak memory.

    .venv/bin/python benchmarks/video.py [--reps 5] [--out benchmarks/video.json]

The clip is the 720p RAVDESS take ../shared/samples/video/01-01-03-01-01-02-05.mp4 (1280x720, 29.97
frames/s, 3.24 s, H.264 + AAC), analysed at the default 5 frames/s, decoding included, with frames
decoded at most timeline.FRAME_MAX_SIDE (640) pixels wide (and at most 1280, what photos get), by the
paths of PATHS: the default (the whole frame searched every timeline.SEARCH_SECONDS and faces followed in
between, each classified every timeline.CLASSIFY_SECONDS by both face models), the previous default (1 s and
0.4 s), the default with the CNN alone, and every-frame (every frame searched, every face classified: both
settings 0). The real-time factor is seconds of video per second of processing (the median run). Quality:
each path against the every-frame path on the four sample takes (per-step face labels and probabilities,
fused labels, clip labels). Decoding: the clip's every frame decoded plainly and with skip_loop_filter;
read_frames at 5 frames/s with its skipping of non-reference pictures never taken and without it, on the
clip and on a copy re-encoded with B-frames (time, pictures decoded, whether the frames and timestamps
change). The photo + WAV path is Predictor.predict on common.make_inputs()'s 640x480 photo and 5 s WAV.
Peak memory: fresh processes analysing synthetic 720p clips (10 frames/s, a face, a tone) of 30 s and 10
minutes by the default path (--memory), with the size of their result's JSON. The machine's load average
is recorded with the figures: they compare side by side, not across machines.
"""

import argparse
import collections
import contextlib
import io
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
from av.video.frame import PictureType  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
from PIL import Image  # noqa: E402

from emorec import media, timeline, video  # noqa: E402
from emorec.predictor import Predictor  # noqa: E402

HERE = Path(__file__).resolve().parent
VIDEOS = common.SHARED / "samples" / "video"
CLIP = VIDEOS / "01-01-03-01-01-02-05.mp4"
STAGES = ("decode frames", "detect", "classify faces", "decode sound", "speech model")
# timeline settings of each path, and whether faces get the photo ensemble (both face models) or the CNN alone
DEFAULT = {"SEARCH_SECONDS": timeline.SEARCH_SECONDS, "CLASSIFY_SECONDS": timeline.CLASSIFY_SECONDS}
PATHS = {"every frame": ({"SEARCH_SECONDS": 0.0, "CLASSIFY_SECONDS": 0.0}, "ensemble"),
         "previous default": ({"SEARCH_SECONDS": 1.0, "CLASSIFY_SECONDS": 0.4}, "ensemble"),
         "default": (DEFAULT, "ensemble"), "default, CNN alone": (DEFAULT, "CNN alone")}
DECODER_OPTIONS = {"plain": {}, "skip_loop_filter all": {"options": {"skip_loop_filter": "all"}}}
# Peak resident memory of a fresh process analysing the video named on its command line, and its result's size.
MEMORY_PROBE = """
import json
import sys
sys.path.insert(0, sys.argv[2])
from common import rss_mb
from emorec import timeline
from emorec.predictor import Predictor
predictor = Predictor(threads=1)
ready = rss_mb(field="VmHWM")
result = timeline.analyse(predictor, sys.argv[1], threads=1)
print(ready, rss_mb(field="VmHWM"), len(result["timeline"]), len(json.dumps(result)))
"""


class Stopwatch:
    """Seconds spent in each wrapped function (and in each step of the iterator a wrapped one returns), by stage."""

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

    def iterator(self, stage, function):
        """A function that returns an iterator (or None): its call and each of the iterator's steps timed."""
        call = self.function(stage, function)

        def timed(*args, **kwargs):
            items = call(*args, **kwargs)
            return None if items is None else self._steps(stage, items)
        return timed

    def _steps(self, stage, items):
        while True:
            start = time.perf_counter()
            try:
                item = next(items)
            except StopIteration:
                return
            finally:
                self.seconds[stage] += time.perf_counter() - start
            yield item


@contextlib.contextmanager
def configured(predictor, path, max_side=timeline.FRAME_MAX_SIDE):
    """The timeline's settings and the face models of one of PATHS, frames at most `max_side` pixels."""
    values, models = PATHS[path]
    values = {**values, "FRAME_MAX_SIDE": max_side}
    before = {name: getattr(timeline, name) for name in values}, predictor.face_model.photo_members
    for name, value in values.items():
        setattr(timeline, name, value)
    if models == "CNN alone":
        predictor.face_model.photo_members = []  # classify_photo_faces falls back on classify_faces
    try:
        yield
    finally:
        for name, value in before[0].items():
            setattr(timeline, name, value)
        predictor.face_model.photo_members = before[1]


def profile(predictor, data, reps, runs):
    """For each run (a path of PATHS, the frames' largest side), the median seconds of a whole analysis, the
    median seconds of each stage and the last result; the runs take turns, so that a change in the machine's
    load falls on all of them alike."""
    watch, totals, stages, results = Stopwatch(), collections.defaultdict(list), collections.defaultdict(list), {}
    originals = (video.sampled_frames, video.soundtrack)
    video.sampled_frames = watch.iterator("decode frames", originals[0])
    video.soundtrack = watch.iterator("decode sound", originals[1])  # its blocks are read inside predict_speech
    predictor.detector.detect = watch.function("detect", predictor.detector.detect)  # detect_around's too
    predictor.classify_photo_faces = watch.function("classify faces", predictor.classify_photo_faces)
    predictor.predict_speech = watch.function("speech model", predictor.predict_speech)
    try:
        for rep in range(reps + 1):  # the first is a warm-up
            for run in runs:
                with configured(predictor, *run):
                    watch.seconds.clear()
                    start = time.perf_counter()
                    results[run] = timeline.analyse(predictor, data, threads=1)
                    seconds = time.perf_counter() - start
                if rep:
                    totals[run].append(seconds)
                    watch.seconds["speech model"] -= watch.seconds["decode sound"]
                    for stage in STAGES:
                        stages[run, stage].append(watch.seconds[stage])
    finally:
        video.sampled_frames, video.soundtrack = originals
        del predictor.detector.detect, predictor.classify_photo_faces, predictor.predict_speech
    found = {}
    for run in runs:
        total = statistics.median(totals[run])
        seconds = {stage: statistics.median(stages[run, stage]) for stage in STAGES}
        seconds["other (opening, following, tracking, fusion, JSON)"] = max(0.0, total - sum(seconds.values()))
        found[run] = total, seconds, results[run]
    return found


def analysed(predictor, source, path):
    with configured(predictor, path):
        return timeline.analyse(predictor, source, threads=1)


def face_probabilities(step):
    return np.array(list(step["face"]["probabilities"].values()))


def quality(predictor, path):
    """One of PATHS against the every-frame path on each sample take: the per-step face (the main person's
    smoothed label and probabilities, as the timeline shows them), the fused step labels, and the clip's
    face and fused labels."""
    found, totals = {}, collections.defaultdict(list)
    for source in sorted(VIDEOS.glob("*.mp4")):
        every, other = analysed(predictor, source, "every frame"), analysed(predictor, source, path)
        pairs = list(zip(every["timeline"], other["timeline"], strict=True))
        rows = {"face": [a["face"]["label"] == b["face"]["label"] for a, b in pairs],
                "fused": [a["fusion"]["label"] == b["fusion"]["label"] for a, b in pairs],
                "delta": [float(np.abs(face_probabilities(a) - face_probabilities(b)).mean()) for a, b in pairs
                          if a["face"]["status"] == b["face"]["status"] == "ok"]}
        for name, values in rows.items():
            totals[name] += values
        found[source.name] = {
            "steps": len(pairs), "face_label_agreement": round(float(np.mean(rows["face"])), 4),
            "fused_label_agreement": round(float(np.mean(rows["fused"])), 4),
            "face_mean_abs_delta_p": round(float(np.mean(rows["delta"])), 4),
            "face_max_step_mean_abs_delta_p": round(float(np.max(rows["delta"])), 4),
            "clip_face_labels": [every["face"]["label"], other["face"]["label"]],
            "clip_fused_labels": [every["fusion"]["label"], other["fusion"]["label"]],
            "clip_fused_max_abs_delta_p": round(max(abs(every["fusion"]["probabilities"][label] -
                                                        other["fusion"]["probabilities"][label])
                                                    for label in predictor.labels), 4)}
    found["all"] = {"steps": len(totals["face"]), "face_label_agreement": round(float(np.mean(totals["face"])), 4),
                    "fused_label_agreement": round(float(np.mean(totals["fused"])), 4),
                    "face_mean_abs_delta_p": round(float(np.mean(totals["delta"])), 4),
                    "clip_face_labels_same": sum(len(set(row["clip_face_labels"])) == 1 for row in found.values()),
                    "clip_fused_labels_same": sum(len(set(row["clip_fused_labels"])) == 1 for row in found.values()),
                    "clips": len(found)}
    return found


def decode_all(data, reps, options=None):
    """Median seconds to decode every frame of a video on one thread, and (timestamp, picture type, planes)
    of each frame decoded."""
    durations = []
    for _ in range(reps + 1):  # the first is a warm-up
        start = time.perf_counter()
        with av.open(io.BytesIO(data)) as container:
            stream = container.streams.video[0]
            stream.codec_context.thread_count = 1
            if options:
                stream.codec_context.options = options
            frames = [(frame.pts, PictureType(frame.pict_type).name, frame.to_ndarray())
                      for frame in container.decode(stream)]
        durations.append(time.perf_counter() - start)
    return statistics.median(durations[1:]), frames


def decoder_options(data, reps):
    """For each of DECODER_OPTIONS: decoding time, frames decoded by picture type, and whether the frames'
    timestamps and pixels are the plain decoding's."""
    found, plain = {}, None
    for name, option in DECODER_OPTIONS.items():
        seconds, frames = decode_all(data, reps, **option)
        plain = plain or frames
        found[name] = {"seconds_median": round(seconds, 4), "frames": len(frames),
                       "picture_types": dict(collections.Counter(kind for _, kind, _ in frames)),
                       "same_timestamps": [pts for pts, _, _ in frames] == [pts for pts, _, _ in plain],
                       "same_pixels": len(frames) == len(plain) and all(
                           np.array_equal(a[2], b[2]) for a, b in zip(frames, plain))}
    return found


def with_b_frames(data):
    """The clip re-encoded by libx264's default preset (B-frames, some never referred to), 30 frames/s."""
    buffer = io.BytesIO()
    with av.open(io.BytesIO(data)) as source, av.open(buffer, "w", format="mp4") as output:
        stream = output.add_stream("libx264", rate=30, options={"crf": "20"})
        stream.width, stream.height = source.streams.video[0].width, source.streams.video[0].height
        stream.pix_fmt = "yuv420p"
        for index, frame in enumerate(source.decode(video=0)):
            picture = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
            picture.pts, picture.time_base = index, Fraction(1, 30)
            output.mux(stream.encode(picture))
        output.mux(stream.encode(None))
    return buffer.getvalue()


def skipping_unshown(data, reps):
    """read_frames at 5 frames/s, skipping the non-reference pictures before each sampling instant (as it
    does) and decoding every picture, on the clip and on a copy with B-frames: median seconds, pictures
    decoded by type, and whether the frames and timestamps taken are the same."""
    found, original = {}, media.decoded_frames
    for clip_name, clip in (("sample take", data), ("sample take re-encoded with B-frames", with_b_frames(data))):
        taken = {}
        for skip in (True, False):
            kinds = collections.Counter()

            def counted(container, stream, name, kind="audio", before_decoding=None):
                for frame in original(container, stream, name, kind, before_decoding if skip else None):
                    kinds[PictureType(frame.pict_type).name] += 1
                    yield frame
            media.decoded_frames, durations = counted, []
            try:
                for _ in range(reps + 1):  # the first is a warm-up
                    kinds.clear()
                    start = time.perf_counter()
                    taken[skip] = list(video.read_frames(clip, max_side=timeline.FRAME_MAX_SIDE, threads=1))
                    durations.append(time.perf_counter() - start)
            finally:
                media.decoded_frames = original
            found[f"{clip_name}, {'skipping' if skip else 'every picture decoded'}"] = {
                "seconds_median": round(statistics.median(durations[1:]), 4), "pictures_decoded": dict(kinds),
                "frames_taken": len(taken[skip])}
        found[f"{clip_name}, same frames and timestamps"] = (
            [seconds for seconds, _ in taken[True]] == [seconds for seconds, _ in taken[False]]
            and all(np.array_equal(a, b) for (_, a), (_, b) in zip(taken[True], taken[False])))
    return found


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
    """{seconds: resident MB when ready, peak resident MB, steps, result JSON MB} of fresh processes
    analysing synthetic clips of those lengths."""
    found = {}
    with tempfile.TemporaryDirectory() as folder:
        for seconds in seconds_list:
            path = Path(folder) / f"{seconds}.mp4"
            write_clip(path, seconds)
            output = subprocess.run([sys.executable, "-c", MEMORY_PROBE, str(path), str(HERE)], capture_output=True,
                                    text=True, check=True, env={**os.environ, **common.ONE_THREAD}).stdout
            ready, peak, steps, size = output.split()
            found[seconds] = {"ready_mb": round(float(ready), 1), "peak_mb": round(float(peak), 1),
                              "steps": int(steps), "result_json_mb": round(int(size) / 1e6, 1)}
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
              "sampling_fps": video.DEFAULT_FPS, "threads": 1, "paths": PATHS, "runs": {}}
    runs = [(path, timeline.FRAME_MAX_SIDE) for path in PATHS] + [
        ("default", 1280)]  # the default frame size, and the photo path's detection size
    for (path, max_side), (total, seconds, result) in profile(predictor, data, args.reps, runs).items():
        report["runs"][f"{path}, frames at most {max_side} px"] = {
            "seconds_median": round(total, 4), "real_time_factor": round(info.seconds / total, 2),
            "stage_seconds_median": {stage: round(value, 4) for stage, value in seconds.items()},
            "steps": len(result["timeline"]), "face_label": result["face"]["label"],
            "fused_label": result["fusion"]["label"]}
    report["decoder_options"] = decoder_options(data, args.reps)
    report["skipping_unshown_pictures"] = skipping_unshown(data, args.reps)
    inputs = common.make_inputs()
    predictor.predict(inputs["photo"], inputs["clip5"])
    durations = []
    for _ in range(args.reps * 4):
        start = time.perf_counter()
        predictor.predict(inputs["photo"], inputs["clip5"])
        durations.append(time.perf_counter() - start)
    photo_wav = statistics.median(durations)
    report["photo_and_5s_wav"] = {"seconds_median": round(photo_wav, 4), "real_time_factor": round(5 / photo_wav, 2)}
    report["quality_against_every_frame"] = {path: quality(predictor, path) for path in PATHS if path != "every frame"}
    report["peak_memory"] = peak_memory(args.memory)
    report["load_average_at_end"] = os.getloadavg()
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"load average {report['load_average_at_start'][0]:.1f} at the start, "
          f"{report['load_average_at_end'][0]:.1f} at the end, on 2 cores shared: the machine is loaded")
    for name, run in report["runs"].items():
        print(f"{CLIP.name} ({info.seconds:.2f} s, {info.width}x{info.height}) at {video.DEFAULT_FPS:g} frames/s, "
              f"{name}: {run['seconds_median']:.3f} s, {run['real_time_factor']:.1f}x real time")
        for stage, value in run["stage_seconds_median"].items():
            print(f"    {stage:42s} {value:7.3f} s  {value / run['seconds_median']:6.1%}")
    for name, found in report["decoder_options"].items():
        print(f"decoding every frame, {name}: {found['seconds_median']:.3f} s, {found['frames']} frames "
              f"{found['picture_types']}, same timestamps {found['same_timestamps']}, "
              f"same pixels {found['same_pixels']}")
    for name, found in report["skipping_unshown_pictures"].items():
        print(f"read_frames at 5 frames/s, {name}: {json.dumps(found)}")
    print(f"photo (640x480) + 5 s WAV through Predictor.predict: {photo_wav:.3f} s, "
          f"{report['photo_and_5s_wav']['real_time_factor']:.1f}x real time for its 5 s of sound")
    for path, takes in report["quality_against_every_frame"].items():
        for name, found in takes.items():
            print(f"{path} against every frame, {name}: {json.dumps(found)}")
    for seconds, memory in report["peak_memory"].items():
        print(f"synthetic 720p clip of {seconds:g} s at 10 frames/s: {memory['steps']} steps, resident "
              f"{memory['ready_mb']} MB when ready, {memory['peak_mb']} MB at the peak, "
              f"result JSON {memory['result_json_mb']} MB")


if __name__ == "__main__":
    main()
