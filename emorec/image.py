"""Face input: decode photos, find faces with YuNet, and make FER2013-style crops."""

import io
import os
import threading
import warnings

import cv2
import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError
from .models import onnx_session

FACE_SIZE = 48
MAX_PIXELS = int(os.environ.get("EMOREC_MAX_IMAGE_PIXELS", 40_000_000))
FORMATS = {"JPEG", "PNG", "BMP", "WEBP", "MPO"}  # MPO: multi-picture JPEG from phone cameras
CROP_SCALE = 0.95  # crop side / YuNet box side: matches the framing of FER2013 crops
# Where a 112x112 aligned face has its eyes, nose tip and mouth corners (the RAF-DB MobileFaceNet's template)
TEMPLATE_112 = np.array([[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366],
                         [41.5493, 92.3655], [70.7299, 92.2041]], np.float32)
DETECT_MAX_SIDE = 1280  # photos are searched for faces at most this large
# A face followed from one video frame to the next is searched for in a window this many times its size,
# at most this large: the face fills about half of it, 80 pixels (YuNet needs about 20).
AROUND_MARGIN, AROUND_MAX_SIDE = 2.0, 160
MAX_SIDE = 1 << 20  # OpenCV's decoders refuse a wider or taller image
_QUIET = threading.Lock()  # one silenced header read at a time, so catch_warnings restores the filters it saved


def _png_chunks_fit(data):
    """Whether every PNG chunk's declared length fits in the data (a lying one makes OpenCV
    reserve gigabytes before it fails)."""
    offset = 8
    while offset + 8 <= len(data):
        length = int.from_bytes(data[offset:offset + 4], "big")
        if offset + 12 + length > len(data):
            return False
        if data[offset + 4:offset + 8] == b"IEND":
            break
        offset += 12 + length
    return True


def load_image(source, max_pixels=MAX_PIXELS):
    """Decode a path or bytes to an 8-bit BGR image, EXIF orientation applied.

    The format and size are read from the header first, so that an unsupported file or a
    decompression bomb is refused before any pixel is decoded.
    """
    if isinstance(source, (bytes, bytearray)):
        name, data = "image upload", bytes(source)
    else:
        name = str(source)
        if not os.path.isfile(source):
            raise InputError(f"{name}: no such file")
        try:
            with open(source, "rb") as handle:
                data = handle.read()
        except OSError as error:
            raise InputError(f"{name}: cannot read the file ({error.strerror})") from None
    if not data:
        raise InputError(f"{name}: file is empty")
    try:  # Pillow's warnings about a damaged header (e.g. "Corrupt EXIF data") would only be noise here
        with _QUIET, warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as header:
                kind, (width, height) = header.format, header.size
    except Image.DecompressionBombError:
        raise InputError(f"{name}: image is too large, over the {max_pixels:,}-pixel limit") from None
    except (UnidentifiedImageError, OSError, ValueError):
        raise InputError(f"{name}: not a readable image (JPEG, PNG, BMP or WebP)") from None
    if kind not in FORMATS:
        raise InputError(f"{name}: unsupported image format {kind}; use JPEG, PNG, BMP or WebP")
    if width * height > max_pixels:
        raise InputError(f"{name}: image is {width}x{height}, over the {max_pixels:,}-pixel limit")
    if max(width, height) > MAX_SIDE:
        raise InputError(f"{name}: image is {width}x{height}; sides over {MAX_SIDE:,} pixels are not supported")
    if kind == "PNG" and not _png_chunks_fit(data):
        raise InputError(f"{name}: image data is corrupt or truncated (a PNG chunk runs past the end)")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:  # OpenCV's own limits, e.g. a header that lies about the width
        image = None
    if image is None or image.size == 0:
        raise InputError(f"{name}: image data is corrupt or truncated")
    return image


def face_input(grey_face):
    """The face preprocessing shared by training and serving: float32 [48, 48, 1] in [0, 1]."""
    face = np.asarray(grey_face)
    if face.ndim == 3:
        face = cv2.cvtColor(face, cv2.COLOR_BGR2GRAY)
    if face.shape != (FACE_SIZE, FACE_SIZE):
        face = cv2.resize(face, (FACE_SIZE, FACE_SIZE), interpolation=cv2.INTER_AREA)
    return (face.astype(np.float32) / 255.0)[..., None]


def align_crop(grey, detection, size=FACE_SIZE, scale=CROP_SCALE):
    """Rotate a face upright on its eye landmarks and crop it square, FER2013-style.

    `detection` is a YuNet row: box x, y, w, h, then right eye, left eye, nose and mouth
    corners as (x, y) pairs, then the score. The crop's side is `scale` times the box's.
    """
    x, y, w, h = detection[:4]
    eye_a, eye_b = detection[4:6], detection[6:8]
    angle = np.degrees(np.arctan2(eye_b[1] - eye_a[1], eye_b[0] - eye_a[0]))
    centre = (float(x + w / 2), float(y + h / 2))
    side = scale * max(w, h)
    matrix = cv2.getRotationMatrix2D(centre, angle, size / side)
    matrix[:, 2] += (size / 2 - centre[0], size / 2 - centre[1])
    return cv2.warpAffine(grey, matrix, (size, size), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


def landmark_transform(detection, template=TEMPLATE_112):
    """The similarity transform (2x3) taking a YuNet row's 5 landmarks onto the template."""
    landmarks = np.asarray(detection[4:14], np.float32).reshape(5, 2)
    matrix, _ = cv2.estimateAffinePartial2D(landmarks, template, method=cv2.LMEDS)
    return matrix


def aligned_face_input(image, detection, template=TEMPLATE_112):
    """The aligned-face preprocessing: a BGR photo's face warped by its 5 landmarks onto the
    112x112 template, RGB, scaled to [-1, 1], channels first: float32 [3, 112, 112]."""
    face = cv2.warpAffine(image, landmark_transform(detection, template), (112, 112))
    return (cv2.cvtColor(face, cv2.COLOR_BGR2RGB).astype(np.float32) / 127.5 - 1.0).transpose(2, 0, 1)


def shrink(image, size):
    """An image scaled down to size (width, height): averaged over whole blocks of pixels by the largest
    integer factor that stays above it (OpenCV's fast INTER_AREA path; the last rows and columns that
    do not fill a block, under `factor` pixels, are left out), then bilinear for the rest, a factor under 2.
    About six times as fast as INTER_AREA on a non-integer ratio, within a grey level of it on average."""
    height, width = image.shape[:2]
    factor = min(width // size[0], height // size[1])
    if factor > 1:
        image = cv2.resize(image[:height - height % factor, :width - width % factor],
                           (width // factor, height // factor), interpolation=cv2.INTER_AREA)
    return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)


def face_boxes(detections):
    """The (x, y, w, h) boxes of YuNet rows, in whole pixels."""
    return [[int(round(value)) for value in detection[:4]] for detection in detections]


class FaceDetector:
    """YuNet run by ONNX Runtime and decoded as cv2.FaceDetectorYN decodes it (the same rows, in less than half
    its time on one thread: benchmarks/detector.py); safe to share between threads,
    which take turns: each run at once would hold its own buffers for the frame (about 20 MB at 640x480)."""

    STRIDES = (8, 16, 32)  # the model's three output scales, in input pixels per grid cell

    def __init__(self, model_path, score_threshold=0.7, nms_threshold=0.3, threads=1):
        self._session = onnx_session(model_path, threads)
        self._outputs = [f"{kind}_{stride}" for kind in ("cls", "obj", "bbox", "kps") for stride in self.STRIDES]
        self.score_threshold, self.nms_threshold = score_threshold, nms_threshold
        self._lock = threading.Lock()

    def detect(self, image, max_side=DETECT_MAX_SIDE):
        """YuNet rows (see align_crop) for every face in a BGR image, in its coordinates, best first; the image is
        searched at most `max_side` pixels large."""
        height, width = image.shape[:2]
        scale = min(1.0, max_side / max(height, width))
        if scale < 1.0:
            image = shrink(image, (max(1, round(width * scale)), max(1, round(height * scale))))
        faces = self._faces(image)
        faces[:, :14] /= scale
        return faces

    def _faces(self, image):
        """YuNet's rows for a BGR image: the model on it zero-padded to whole 32-pixel cells, each cell's face
        decoded where its score (the geometric mean of class and objectness) reaches the threshold, then
        non-maximum suppression on the boxes in whole pixels."""
        height, width = image.shape[:2]
        blob = np.zeros((1, 3, -(-height // 32) * 32, -(-width // 32) * 32), np.float32)
        blob[0, :, :height, :width] = image.transpose(2, 0, 1)
        with self._lock:
            outputs = dict(zip(self._outputs, self._session.run(self._outputs, {"input": blob})))
        faces = []
        for stride in self.STRIDES:
            classes, objects = (np.clip(outputs[f"{kind}_{stride}"][0, :, 0], 0, 1) for kind in ("cls", "obj"))
            score = np.sqrt(classes * objects)
            cells = np.flatnonzero(score >= self.score_threshold)
            columns = blob.shape[3] // stride
            corner = np.column_stack([cells % columns, cells // columns]).astype(np.float32)  # float32 as OpenCV
            box, points = outputs[f"bbox_{stride}"][0, cells], outputs[f"kps_{stride}"][0, cells].reshape(-1, 5, 2)
            size = np.exp(box[:, 2:]) * stride
            faces.append(np.column_stack([(corner + box[:, :2]) * stride - size / 2, size,
                                          ((points + corner[:, None]) * stride).reshape(-1, 10), score[cells]]))
        faces = np.concatenate(faces).astype(np.float32)
        if len(faces) > 1:
            kept = cv2.dnn.NMSBoxes(faces[:, :4].astype(int).tolist(), faces[:, 14].tolist(), self.score_threshold,
                                    self.nms_threshold)
            faces = faces[np.asarray(kept, int).reshape(-1)]
        return faces

    def detect_around(self, image, box, margin=AROUND_MARGIN, max_side=AROUND_MAX_SIDE):
        """YuNet rows for the faces in a square window around a box (x, y, w, h) of a BGR image: centred on it,
        `margin` times its longer side, searched at most `max_side` pixels large; in the image's coordinates."""
        half = margin * max(box[2], box[3]) / 2
        centre_x, centre_y = box[0] + box[2] / 2, box[1] + box[3] / 2
        left, top = max(0, int(centre_x - half)), max(0, int(centre_y - half))
        window = image[top:max(top + 1, int(centre_y + half)), left:max(left + 1, int(centre_x + half))]
        faces = self.detect(window, max_side)
        faces[:, [0, *range(4, 14, 2)]] += left  # the box's corner and the landmarks; not its size
        faces[:, [1, *range(5, 14, 2)]] += top
        return faces
