"""The page in headless Chromium: upload or capture a photo and a clip, analyse, read the result."""

import json
import re
import threading
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from emorec import LABELS
from emorec.models import MODELS_DIR
from emorec.web import create_app

pytestmark = pytest.mark.browser

SHARED = Path(__file__).resolve().parents[2] / "shared"
ASTRONAUT = SHARED / "samples" / "astronaut.png"
CLIP = SHARED / "data" / "ravdess_speech_16k" / "Actor_21" / "03-01-05-02-01-01-21.wav"
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run",
                 # a synthetic camera and microphone, allowed without a prompt
                 "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream"]


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def server(browser):
    """The app on a free loopback port; after the browser, so that a skip loads no models."""
    httpd = make_server("127.0.0.1", 0, create_app(), threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()
    thread.join()


@pytest.fixture
def page(browser, server):
    """A fresh page on the app that fails the test on any script error or CSP violation."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    errors = []

    def console(message):
        # "Failed to load resource" is the browser logging a 4xx answer, which the tests check
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", console)
    page.goto(server)
    yield page
    context.close()
    assert errors == []


def screenshot(page, name):
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=ARTIFACTS / name, full_page=True)


def analyse(page):
    page.click("#analyse")
    page.wait_for_selector("#results:not([hidden])")
    assert page.is_hidden("#error"), page.text_content("#error")


def test_upload_analyse_and_reweigh(page):
    page.set_input_files("#image-input", ASTRONAUT)
    page.set_input_files("#audio-input", CLIP)
    analyse(page)
    assert page.text_content("#fusion-label") in LABELS
    for name in ("face", "speech", "fusion"):
        assert page.locator(f"#{name}-bars .bar").count() == len(LABELS)
        assert page.locator(f"#{name}-bars .bar.best").count() == 1
    assert page.locator("#fusion-bars .bar-value").all_text_contents()[0].endswith("%")
    assert page.text_content("#face-note") == "One face found."
    assert page.locator("#timeline .segment").count() == 4  # 2.4 s windows every 0.96 s over 4.4 s
    note = page.text_content("#fusion-note")
    shipped = json.loads((MODELS_DIR / "fusion" / "fusion.json").read_text())["weights"]
    weighted = f"weighted {shipped['face']:.0%} / {shipped['speech']:.0%}; by their certainty, "
    assert note.startswith(f"Face and voice together, {weighted}") and note.endswith("%.")
    screenshot(page, "browser.png")

    page.fill("#weight", "100")  # all on the face: the page asks again with the new weights
    page.wait_for_selector("#fusion-note:has-text('face only')")
    assert page.text_content("#fusion-note") == "Rests on the face only (voice weighted 0%)."
    assert page.text_content("#fusion-label") == page.text_content("#face-label")


def test_unusable_file_shows_the_server_error(page):
    page.click("#analyse")
    assert page.text_content("#error") == "Choose a photo, a recording, both, or a video first."
    page.set_input_files("#audio-input", {"name": "clip.wav", "mimeType": "audio/wav", "buffer": b"RIFF junk"})
    page.click("#analyse")
    page.wait_for_selector("#error:has-text('not a readable audio file')")
    assert page.is_hidden("#results")


def test_phone_width_does_not_scroll_sideways(page):
    page.set_viewport_size({"width": 375, "height": 800})
    page.set_input_files("#image-input", ASTRONAUT)
    analyse(page)
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    screenshot(page, "browser-phone.png")


def test_webcam_snapshot_and_microphone_recording(page):
    page.click("#camera-button")
    page.wait_for_selector("#snap-button:not([hidden])")  # the camera is playing
    page.click("#snap-button")
    page.wait_for_selector("#image-name:has-text('snapshot.png')")
    page.click("#record-button")
    page.wait_for_selector("#recording:not([hidden])")
    page.wait_for_timeout(1500)
    page.click("#record-button")
    page.wait_for_selector("#audio-name:has-text('recording.wav')")
    analyse(page)
    duration = re.search(r"([\d.]+) s", page.text_content("#speech-note"))
    assert 1.0 <= float(duration.group(1)) <= 3.0  # the page's WAV was decoded by the server
    assert page.text_content("#face-note") in ("No face found in the photo.", "One face found.")


def test_video_timeline_follows_playback(page, tmp_path):
    from conftest import chirp, media_bytes
    from test_timeline import moving_face
    clip = tmp_path / "clip.webm"  # VP9 + Opus, what Chromium plays and MediaRecorder writes
    clip.write_bytes(media_bytes("webm", chirp(2.0, 48000), rate=48000, audio_codec="libopus", frames=moving_face(),
                                 fps=5, video_codec="libvpx-vp9"))
    page.set_input_files("#image-input", ASTRONAUT)
    page.set_input_files("#video-input", clip)
    assert page.text_content("#image-name") == ""  # a video is sent alone: the photo is set aside
    analyse(page)
    assert page.locator("#video-track .segment").count() == 10  # 2 s at 5 frames/s
    assert page.text_content("#face-note") == "The main person, in view 100% of the time (1 tracked)."
    assert page.text_content("#fusion-label") in LABELS
    assert page.text_content("#fusion-note") == "Rests on the face only (no speech detected)."  # a chirp
    total = float(page.text_content("#video-end").split()[0])
    page.evaluate("document.getElementById('video-player').currentTime = 1.0")
    for _ in range(50):  # the marker moves when the player has seeked (wait_for_function would need eval)
        left = page.evaluate("parseFloat(document.getElementById('video-marker').style.left)")
        if abs(left - 100 / total) < 1:
            break
        page.wait_for_timeout(100)
    assert left == pytest.approx(100 / total, abs=1)
    screenshot(page, "browser-video.png")


def test_webcam_and_microphone_video(page):
    page.click("#film-button")
    page.wait_for_selector("#video-player:not([hidden])")  # the live picture while filming
    page.wait_for_timeout(2000)
    page.click("#film-button")
    page.wait_for_selector("#video-name:has-text('recording.webm')")
    analyse(page)
    steps = page.locator("#video-track .segment").count()
    assert 8 <= steps <= 15  # about 2 s at 5 frames/s, decoded by the server from Chromium's WebM
    assert page.text_content("#face-note") == "No face found in the video."  # the fake camera's test pattern
    duration = re.search(r"([\d.]+) s", page.text_content("#speech-note"))
    assert 1.0 <= float(duration.group(1)) <= 4.0
    screenshot(page, "browser-film.png")
