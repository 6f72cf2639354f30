"""emorec: emotion recognition from face photos, speech recordings, or both.

    from emorec import Predictor
    result = Predictor().predict(image="photo.jpg", audio="speech.wav")
"""

from .errors import InputError
from .labels import LABELS

__all__ = ["LABELS", "InputError", "Predictor"]


def __getattr__(name):
    """`Predictor` is imported on first use, so that training runs where the serving runtime is absent."""
    if name == "Predictor":
        from .predictor import Predictor
        return Predictor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
