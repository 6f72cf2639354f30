"""Face input: decoding photos, face detection, alignment, and the face predictions."""

import io

import av
import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps

from emorec import image as image_module
from emorec.errors import InputError
from emorec.image import FACE_SIZE, FaceDetector, align_crop, face_input, load_image, shrink
from emorec.labels import LABELS
from emorec.models import MODELS_DIR

from conftest import SAMPLES, assert_valid_result, gradient, image_bytes, png_with_header, shared, write


def pil_bgr(data):
    """PIL's decoding of the same bytes, EXIF-transposed, as 8-bit BGR: the reference."""
    with Image.open(io.BytesIO(data)) as decoded:
        return np.asarray(ImageOps.exif_transpose(decoded).convert("RGB"))[..., ::-1]


# ---- faces in the sample photos ---------------------------------------------------------

@pytest.mark.parametrize("sample", ["astronaut", "camera"])
def test_one_face_with_box_inside_image(predictor, request, sample):
    path = request.getfixturevalue(sample)
    height, width = load_image(path).shape[:2]
    result = predictor.predict_face(path)
    assert result["status"] == "ok"
    assert len(result["faces"]) == 1
    face = result["faces"][0]
    box = face["box"]
    assert len(box) == 4 and all(type(v) is int for v in box)
    x, y, w, h = box
    assert w > 20 and h > 20
    assert 0 <= x and 0 <= y and x + w <= width and y + h <= height
    assert_valid_result(result, LABELS)
    assert_valid_result(face, LABELS)
    assert face["probabilities"] == result["probabilities"]  # the top-level result is the largest face


def test_astronaut_face_position(predictor, astronaut):
    x, y, w, h = predictor.predict_face(astronaut)["faces"][0]["box"]
    # Eileen Collins' face is in the upper middle of the 512x512 photo.
    assert 150 < x + w / 2 < 300 and 60 < y + h / 2 < 180


def test_cat_has_no_face(predictor, chelsea):
    result = predictor.predict_face(chelsea)
    assert result == {"status": "no_face", "faces": [], "label": None, "confidence": None,
                      "probabilities": None}


def test_large_photo_is_searched_downscaled_and_boxes_scaled_back(predictor, astronaut):
    original = predictor.predict_face(astronaut)["faces"][0]["box"]
    big = cv2.resize(load_image(astronaut), (1536, 1536), interpolation=cv2.INTER_CUBIC)
    result = predictor.predict_face(image_bytes(big[..., ::-1].copy()))
    assert len(result["faces"]) == 1
    np.testing.assert_allclose(np.array(result["faces"][0]["box"]) / 3, original, atol=6)


def test_bytes_and_path_give_the_same_result(predictor, astronaut):
    assert predictor.predict_face(astronaut.read_bytes()) == predictor.predict_face(astronaut)
    assert predictor.predict_face(str(astronaut)) == predictor.predict_face(astronaut)


@pytest.mark.parametrize("shape", [(1, 1), (1, 5000), (5000, 1), (2, 3000), (3, 3)])
def test_tiny_and_thin_images_have_no_face(predictor, shape):
    result = predictor.predict_face(image_bytes(np.full(shape, 128, np.uint8)))
    assert result["status"] == "no_face" and result["faces"] == []


def test_crops_treat_the_image_as_one_face(predictor, chelsea):
    picture = load_image(chelsea)
    height, width = picture.shape[:2]
    result = predictor.predict_face(chelsea, crops=True)
    assert result["status"] == "ok"
    assert [face["box"] for face in result["faces"]] == [[0, 0, width, height]]
    assert_valid_result(result, LABELS)
    expected = predictor.classify_faces([cv2.cvtColor(picture, cv2.COLOR_BGR2GRAY)])[0]
    np.testing.assert_allclose(list(result["probabilities"].values()), expected, atol=1e-6)


def test_crops_on_a_48x48_face(predictor):
    face = gradient(48, 48, channels=1)
    result = predictor.predict_face(image_bytes(face), crops=True)
    assert result["faces"][0]["box"] == [0, 0, 48, 48]
    assert_valid_result(result, LABELS)


# ---- decoding ---------------------------------------------------------------------------

@pytest.mark.parametrize("orientation, rotate", [(3, 180), (6, 270), (8, 90)])
def test_exif_orientation_is_applied(orientation, rotate):
    stored = np.zeros((20, 40, 3), np.uint8)  # 40 wide, 20 high: left half white
    stored[:, :20] = 255
    exif = Image.Exif()
    exif[0x0112] = orientation
    data = image_bytes(stored, "JPEG", quality=95, exif=exif.tobytes())
    decoded = load_image(data)
    upright = np.asarray(Image.fromarray(stored).rotate(rotate, expand=True))[..., ::-1]
    assert decoded.shape == upright.shape
    assert decoded.shape == ((40, 20, 3) if orientation in (6, 8) else (20, 40, 3))
    assert np.abs(decoded.astype(int) - upright).mean() < 8
    assert np.abs(decoded.astype(int) - pil_bgr(data)).mean() < 8


def rgba():
    pixels = np.zeros((30, 40, 4), np.uint8)
    pixels[..., 0], pixels[..., 3] = 255, 128
    return pixels


@pytest.mark.parametrize("name, make, lossless", [
    ("greyscale png", lambda: image_bytes(gradient(channels=1)), True),
    ("rgba png", lambda: image_bytes(rgba()), True),
    ("la png", lambda: image_bytes(Image.fromarray(gradient(channels=1)).convert("LA")), True),
    ("palette png", lambda: image_bytes(Image.fromarray(gradient()).convert("P")), True),
    ("1-bit png", lambda: image_bytes(Image.fromarray(gradient(channels=1)).convert("1")), True),
    ("cmyk jpeg", lambda: image_bytes(Image.fromarray(gradient()).convert("CMYK"), "JPEG", quality=95), False),
    ("greyscale jpeg", lambda: image_bytes(gradient(channels=1), "JPEG", quality=95), False),
    ("progressive jpeg", lambda: image_bytes(gradient(), "JPEG", quality=95, progressive=True), False),
    ("lossless webp", lambda: image_bytes(gradient(), "WEBP", lossless=True), True),
    ("lossy webp", lambda: image_bytes(gradient(), "WEBP", quality=90), False),
    ("bmp", lambda: image_bytes(gradient(), "BMP"), True),
    ("greyscale bmp", lambda: image_bytes(gradient(channels=1), "BMP"), True),
    ("mpo", lambda: image_bytes(Image.fromarray(gradient()), "MPO", save_all=True,
                                append_images=[Image.fromarray(gradient())], quality=95), False),
    ("1x1 png", lambda: image_bytes(np.array([[[10, 200, 30]]], np.uint8)), True),
    ("1x1 jpeg", lambda: image_bytes(np.array([[[10, 200, 30]]], np.uint8), "JPEG", quality=100), False),
])
def test_image_variants_decode_to_8bit_bgr(name, make, lossless):
    data = make()
    decoded = load_image(data)
    reference = pil_bgr(data)
    assert decoded.dtype == np.uint8 and decoded.ndim == 3 and decoded.shape[2] == 3
    assert decoded.shape == reference.shape
    error = np.abs(decoded.astype(int) - reference).mean()
    assert error <= (0 if lossless and name != "rgba png" else 6), error


def test_rgba_drops_alpha():
    assert load_image(image_bytes(rgba()))[5, 5].tolist() == [0, 0, 255]  # red, in BGR


def test_16bit_png_is_scaled_to_8bit():
    data = image_bytes(np.full((10, 12), 40000, np.uint16))
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    decoded = load_image(data)
    assert decoded.shape == (10, 12, 3) and decoded.dtype == np.uint8
    assert abs(int(decoded[5, 5, 0]) - 40000 // 257) <= 1


def test_file_extension_does_not_matter(tmp_path):
    path = write(tmp_path, "actually-a-png.jpg", image_bytes(gradient()))
    np.testing.assert_array_equal(load_image(path), gradient()[..., ::-1])


@pytest.mark.parametrize("format", ["GIF", "TIFF", "ICO", "PPM", "TGA"])
def test_unsupported_formats_are_refused(format):
    with pytest.raises(InputError, match=f"unsupported image format {format}"):
        load_image(image_bytes(gradient(16, 16), format))


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any pixel is decoded."""
    def refuse(*args, **kwargs):
        raise AssertionError("pixels were decoded")
    monkeypatch.setattr(image_module.cv2, "imdecode", refuse)


@pytest.mark.parametrize("width, height, message", [
    (8000, 8000, "8000x8000, over the 40,000,000-pixel limit"),
    (100_000, 100_000, "too large"),  # past PIL's own decompression-bomb guard too
    (2 ** 31 - 1, 2 ** 31 - 1, "too large"),
    (0, 0, "not a readable image"),
])
def test_decompression_bomb_is_refused_before_decoding(no_decoding, width, height, message):
    with pytest.raises(InputError, match=message):
        load_image(png_with_header(width, height))


def test_pixel_cap_is_a_parameter(no_decoding, astronaut):
    with pytest.raises(InputError, match="512x512, over the 1,000-pixel limit"):
        load_image(astronaut, max_pixels=1000)


def test_pixel_cap_allows_images_at_the_limit(astronaut):
    assert load_image(astronaut, max_pixels=512 * 512).shape == (512, 512, 3)


@pytest.mark.parametrize("source, message", [
    ("/no/such/photo.jpg", "no such file"),
    (b"", "empty"),
    (b"GIF89a", "not a readable image"),
    (b"\x89PNG\r\n\x1a\n", "not a readable image"),
])
def test_load_image_errors(source, message):
    with pytest.raises(InputError, match=message):
        load_image(source)


def test_unreadable_file_is_an_input_error(monkeypatch, astronaut):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(image_module, "open", refuse, raising=False)  # shadows the builtin in emorec.image
    with pytest.raises(InputError, match="cannot read the file \\(Permission denied\\)"):
        load_image(astronaut)


def test_directory_is_not_an_image(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_image(tmp_path)


# ---- crops ------------------------------------------------------------------------------

def test_face_input():
    tensor = face_input(gradient(48, 48, channels=1))
    assert tensor.shape == (48, 48, 1) and tensor.dtype == np.float32
    assert tensor.min() >= 0 and tensor.max() <= 1
    np.testing.assert_allclose(tensor[..., 0], gradient(48, 48, channels=1) / 255)
    assert face_input(gradient(96, 120)).shape == (48, 48, 1)  # colour and other sizes too


def detection(centre=(100.0, 100.0), side=60.0, eye_angle=0.0):
    """A YuNet-style row: box, then right eye, left eye, nose, mouth corners, score."""
    cx, cy = centre
    half = side / 4
    angle = np.radians(eye_angle)
    dx, dy = half * np.cos(angle), half * np.sin(angle)
    return np.array([cx - side / 2, cy - side / 2, side, side, cx - dx, cy - dy - 10, cx + dx, cy + dy - 10,
                     cx, cy, cx - 10, cy + 15, cx + 10, cy + 15, 0.9], np.float32)


@pytest.mark.parametrize("eye_angle", [0, 20, -35])
@pytest.mark.parametrize("side", [30, 60, 150])
def test_align_crop_is_48x48(side, eye_angle):
    grey = gradient(200, 220, channels=1)
    crop = align_crop(grey, detection(side=side, eye_angle=eye_angle))
    assert crop.shape == (FACE_SIZE, FACE_SIZE) and crop.dtype == np.uint8


def test_align_crop_without_tilt_is_the_box_region():
    grey = np.zeros((200, 200), np.uint8)
    grey[70:130, 70:130] = 255  # a bright square filling a 60-pixel box centred at (100, 100)
    crop = align_crop(grey, detection(side=60 / 0.95))  # CROP_SCALE: the crop is 0.95 of the box
    assert crop[4:-4, 4:-4].min() > 200


def test_align_crop_undoes_head_tilt(astronaut, predictor):
    grey = cv2.cvtColor(load_image(astronaut), cv2.COLOR_BGR2GRAY)
    found = predictor.detector.detect(load_image(astronaut))[0]
    upright = align_crop(grey, found)
    # Tilt the whole photo by 25 degrees, moving the landmarks with it.
    matrix = cv2.getRotationMatrix2D((256, 256), 25, 1.0)
    tilted = cv2.warpAffine(grey, matrix, (512, 512), borderMode=cv2.BORDER_REPLICATE)
    moved = found.copy()
    moved[4:14] = (matrix @ np.c_[found[4:14].reshape(5, 2), np.ones(5)].T).T.ravel()
    centre = matrix @ [found[0] + found[2] / 2, found[1] + found[3] / 2, 1]
    moved[:2] = centre - found[2:4] / 2
    realigned = align_crop(tilted, moved)
    assert np.abs(realigned.astype(int) - upright).mean() < 4
    assert np.abs(align_crop(tilted, found).astype(int) - upright).mean() > 30  # without alignment


@pytest.mark.parametrize("sample", ["astronaut.png", "camera.png", "chelsea.png", "video frame", "group"])
def test_yunet_rows_are_cv2_face_detector_yn_rows(sample):
    """FaceDetector runs YuNet with ONNX Runtime and decodes it itself: the rows OpenCV's own detector gives."""
    if sample == "video frame":
        with av.open(str(shared(SAMPLES / "video" / "01-01-03-01-01-02-05.mp4"))) as container:
            picture = next(container.decode(video=0)).to_ndarray(format="bgr24")
    elif sample == "group":  # several faces, some overlapping boxes for the suppression
        face = cv2.imread(str(shared(SAMPLES / "astronaut.png")))[:260, 120:340]
        picture = np.hstack([face, face[:, ::-1], cv2.resize(face, None, fx=0.5, fy=0.5).repeat(2, axis=0)])
    else:
        picture = cv2.imread(str(shared(SAMPLES / sample)))
    model = MODELS_DIR / "face_detection" / "yunet.onnx"
    rows = FaceDetector(model).detect(picture, max_side=640)
    scale = min(1.0, 640 / max(picture.shape[:2]))
    searched = picture if scale == 1 else shrink(picture, (round(picture.shape[1] * scale),
                                                           round(picture.shape[0] * scale)))
    reference = cv2.FaceDetectorYN.create(str(model), "", searched.shape[1::-1], 0.7, 0.3, 5000)
    expected = reference.detect(searched)[1]
    expected = np.zeros((0, 15), np.float32) if expected is None else expected
    expected[:, :14] /= scale
    assert rows.shape == expected.shape and len(rows) == {"chelsea.png": 0, "group": 3}.get(sample, 1)  # a cat
    np.testing.assert_allclose(rows, expected, atol=1e-3)


@pytest.mark.parametrize("shape, size", [((360, 475), (160, 121)), ((720, 1280), (640, 360)), ((90, 120), (80, 60))])
def test_shrink_is_close_to_area_averaging(shape, size):
    picture = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 256, (*shape, 3), np.uint8), (0, 0), 4)
    small = shrink(picture, size)
    assert small.shape == (size[1], size[0], 3)
    assert np.abs(small.astype(int) - cv2.resize(picture, size, interpolation=cv2.INTER_AREA)).mean() < 1.0
