"""Speaker cross-validation inside the training speakers: the speech head on Whisper features with three
channel-augmented copies (the cache `emorec train speech --augment channel --variants 3` fills).

    .venv/bin/python scripts/speech_head_cv.py HEAD [speaker] [negative] [FOLD ...]   # HEAD: one of speech_features.HEADS; folds 0-3

Fold k holds out RAVDESS actors 4k+1..4k+4 (of 1-16) and one of nEMO's training speakers (EB0, KS0,
SM0, MK0); the head trains 150 epochs on the rest and its last epoch is scored on the held-out clean
clips (nothing is chosen on them). Validation and test speakers are never used. One JSON line a fold.
With "speaker", every speaker's features are standardised by their own clean clips first (the speaker
head's `--normalise speaker`; a held-out speaker's statistics come from its own clips, labels unused).
With "negative", the classes a corpus lacks are wrong answers for its clips (`--missing-classes negative`).
"""
import json
import sys

import keras
import numpy as np

from emorec import datasets, labels as label_sets, train as T
from emorec.speech_features import WhisperFeatures, decoded, normalise, speech_features

names = label_sets.preset("seven")
clips = [c for f in ("../shared/data/ravdess_speech_16k", "../shared/data/nemo_pl") for c in datasets.speech_clips(f, names)]
train = datasets.speaker_split(clips, "train")
train, variants = decoded(train, speech_features([c.path for c in train], WhisperFeatures(), ".cache/embeddings", 3, 0, progress=False, augment="channel"))
options = sys.argv[2:]
head, normalisation = sys.argv[1], "speaker" if "speaker" in options else "none"
missing_classes = "negative" if "negative" in options else "masked"
variants = normalise(variants, train, normalisation)
folds = [int(k) for k in options if k not in ("speaker", "negative")] or [0, 1, 2, 3]
nemo_out = ["EB0", "KS0", "SM0", "MK0"]
for k in folds:
    out = np.array([(c.corpus == "ravdess" and 4 * k < int(c.speaker) <= 4 * k + 4) or (c.corpus == "nemo" and c.speaker == nemo_out[k]) for c in train])
    tr = [c for c, o in zip(train, out) if not o]
    x = np.concatenate([v[~out] for v in variants])
    y = np.tile(T.masked_targets(tr, names, missing_classes), (4, 1)); w = np.tile(T.corpus_class_weights(tr), 4)
    keras.utils.set_random_seed(0)
    model = T._compiled(T.speech_head(len(names), x, head, 8), 1e-3, T.MaskedCrossEntropy(label_smoothing=0.1))
    T.fit_last_epoch(model, x, y, 150, 64, 1e-3, sample_weight=w)
    held = [c for c, o in zip(train, out) if o]
    pred = np.asarray(model.predict(variants[0][out], verbose=0)).argmax(1)
    r = {"fold": k, "head": head, "normalisation": normalisation, "missing_classes": missing_classes}
    for corpus in ("ravdess", "nemo"):
        m = np.array([c.corpus == corpus for c in held]); r[corpus] = round(float((pred[m] == np.array([c.label for c in held])[m]).mean()), 4)
    print(json.dumps(r), flush=True)
