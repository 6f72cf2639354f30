"""Test-time augmentation for the shipped speech head, on the validation speakers: each clip also heard
at other speeds (resampled: 0.9x and 1.1x), the head's logits averaged over the versions.

    .venv/bin/python scripts/speech_tta_probe.py [FACTOR ...]   # default: 0.9 1.1

Prints the accuracy of the clip alone and with each set of versions on RAVDESS actors 17-20 and nEMO's
validation speakers (IC0, TP0), one JSON line a split.
"""
import json
import sys

import numpy as np
import soxr

from emorec import datasets
from emorec.audio import SAMPLE_RATE, load_audio
from emorec.models import MODELS_DIR, Classifier
from emorec.speech_features import WhisperFeatures

factors = [float(factor) for factor in sys.argv[1:]] or [0.9, 1.1]
head, front_end = Classifier(MODELS_DIR / "speech"), WhisperFeatures()
for data in ("../shared/data/ravdess_speech_16k", "../shared/data/nemo_pl"):
    clips = datasets.speaker_split(datasets.speech_clips(data, head.labels), "validation")
    logits = {factor: [] for factor in [1.0, *factors]}
    for clip in clips:
        waveform = load_audio(clip.path)
        for factor in logits:  # factor 1.1: 10 % faster and higher
            heard = waveform if factor == 1.0 else soxr.resample(waveform, SAMPLE_RATE * factor, SAMPLE_RATE)
            logits[factor].append(head(front_end(heard.astype(np.float32))[None])[0])
    targets = np.array([clip.label for clip in clips])
    alone = np.array(logits[1.0])
    report = {"split": f"{clips[0].corpus} validation", "clips": len(clips),
              "alone": round(float((alone.argmax(1) == targets).mean()), 4)}
    for factor in factors:
        report[f"alone at {factor}"] = round(float((np.array(logits[factor]).argmax(1) == targets).mean()), 4)
        both = alone + np.array(logits[factor])
        report[f"with {factor}"] = round(float((both.argmax(1) == targets).mean()), 4)
    every = sum(np.array(values) for values in logits.values())
    report["with all"] = round(float((every.argmax(1) == targets).mean()), 4)
    print(json.dumps(report), flush=True)
