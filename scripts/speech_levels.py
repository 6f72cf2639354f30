"""Each speaker's mean active speech level (`emorec.speech_encoder.active_level_db`, dB below full scale)
in RAVDESS and nEMO, with the split the speaker is in: how far apart the corpora's recording levels lie.

    python scripts/speech_levels.py ../shared/data/ravdess_speech_16k ../shared/data/nemo_pl
"""

import sys
from collections import defaultdict

import numpy as np

from emorec.audio import load_audio
from emorec.datasets import SPEAKER_SPLITS, speech_clips
from emorec.speech_encoder import active_level_db

levels = defaultdict(list)
for folder in sys.argv[1:]:
    for clip in speech_clips(folder):
        levels[clip.corpus, clip.speaker].append(active_level_db(load_audio(clip.path)))
for (corpus, speaker), values in sorted(levels.items()):
    split = next(name for name, speakers in SPEAKER_SPLITS[corpus].items() if speaker in speakers)
    print(f"{corpus:8} {speaker!s:4} {split:10} {len(values):4} clips  {np.mean(values):6.1f} dB "
          f"(clips {np.min(values):.1f} to {np.max(values):.1f})")
