"""The emotion label set, defined once, and each dataset's mapping onto it."""

LABELS = ("angry", "disgust", "fear", "happy", "neutral", "sad", "surprise")

# Label presets selectable for training; "six" is the original system's set.
PRESETS = {
    "seven": LABELS,
    "six": tuple(label for label in LABELS if label != "surprise"),
}

# fer2013.csv "emotion" column: 0=angry 1=disgust 2=fear 3=happy 4=sad 5=surprise 6=neutral.
FER2013_CSV = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")

# RAVDESS file-name emotion code (third field); "calm" (02) has no place in the label set.
RAVDESS = {"01": "neutral", "02": None, "03": "happy", "04": "sad", "05": "angry",
           "06": "fear", "07": "disgust", "08": "surprise"}

# CREMA-D file-name emotion code (third field), e.g. 1001_DFA_ANG_XX.wav.
CREMA_D = {"ANG": "angry", "DIS": "disgust", "FEA": "fear", "HAP": "happy",
           "NEU": "neutral", "SAD": "sad"}

# TESS file-name emotion suffix, e.g. OAF_back_angry.wav ("ps" is pleasant surprise).
TESS = {"angry": "angry", "disgust": "disgust", "fear": "fear", "happy": "happy",
        "neutral": "neutral", "sad": "sad", "ps": "surprise"}

# EmoDB file-name emotion letter (sixth character, German initials), e.g. 03a01Wa.wav;
# "L" (Langeweile, boredom) has no place in the label set.
EMODB = {"W": "angry", "E": "disgust", "A": "fear", "F": "happy", "N": "neutral",
         "T": "sad", "L": None}


# nEMO's data.tsv "emotion" column (Polish corpus; it has no disgust).
NEMO = {"anger": "angry", "fear": "fear", "happiness": "happy", "neutral": "neutral", "sadness": "sad",
        "surprised": "surprise"}

# Each speech corpus's mapping, by the corpus names the dataset adapters give their clips.
SPEECH_CORPORA = {"ravdess": RAVDESS, "crema-d": CREMA_D, "tess": TESS, "emodb": EMODB, "nemo": NEMO}


def corpus_labels(corpus, labels=LABELS):
    """The labels of `labels` that a speech corpus has clips of (nEMO: all but disgust)."""
    present = set(SPEECH_CORPORA[corpus].values())
    return tuple(label for label in labels if label in present)


def preset(name):
    """Labels of a named preset, raising ValueError for an unknown name."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown label preset {name!r}; choose from {', '.join(PRESETS)}") from None
