"""emorec: emotion recognition from face photos, speech recordings, or both.

    from emorec import Predictor
    result = Predictor().predict(image="photo.jpg", audio="speech.wav")
"""

from .errors import InputError
from .labels import LABELS
from .predictor import Predictor

__all__ = ["LABELS", "InputError", "Predictor"]
