"""Speech input: decode any audio file to 16 kHz mono and cut it into YAMNet frames."""

import io
import os

import numpy as np

from .errors import InputError

SAMPLE_RATE = 16000
FRAME_SAMPLES = 15600  # 0.975 s, YAMNet's input window
HOP_SAMPLES = 7680  # 0.48 s
MAX_SECONDS = float(os.environ.get("EMOREC_MAX_AUDIO_SECONDS", 600))
# The first bytes of the files libsndfile reads (WAV, RF64, Wave64, AIFF, FLAC); FFmpeg reads the rest.
LIBSNDFILE_SIGNATURES = {b"RIFF", b"RIFX", b"RF64", b"BW64", b"riff", b"FORM", b"fLaC"}


def _describe(source):
    return "audio upload" if isinstance(source, (bytes, bytearray)) else str(source)


def load_audio(source, max_seconds=MAX_SECONDS):
    """Decode a path or bytes to a float32 mono waveform at 16 kHz in [-1, 1]: audio_blocks' blocks, joined."""
    return np.concatenate(list(audio_blocks(source, max_seconds)))


def audio_blocks(source, max_seconds=MAX_SECONDS):
    """Decode a path or bytes to float32 mono blocks at 16 kHz in [-1, 1], in order, as they are decoded
    (the file is checked now; its data while the blocks are read).

    libsndfile reads WAV, AIFF and FLAC (many times faster than FFmpeg on a short WAV); FFmpeg
    (emorec.media) reads the rest: MP3, M4A/AAC, Ogg and WebM (Opus, Vorbis), the audio track of
    MP4, MOV, MKV and AVI. A file with no audio stream raises media.NoAudioTrack, an InputError.
    """
    import soundfile  # the decoders load here: training imports this module's framing without them

    from . import media

    name = _describe(source)
    if isinstance(source, (bytes, bytearray)):
        if not source:
            raise InputError(f"{name}: file is empty")
        handle, signature = io.BytesIO(source), bytes(source[:4])
    else:
        if not os.path.isfile(source):
            raise InputError(f"{name}: no such file")
        if os.path.getsize(source) == 0:
            raise InputError(f"{name}: file is empty")
        with open(source, "rb") as file:
            handle, signature = source, file.read(4)
    chunks = None
    if signature in LIBSNDFILE_SIGNATURES:
        try:
            chunks = _libsndfile_chunks(soundfile.SoundFile(handle), name, max_seconds)
        except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError):
            pass  # a header libsndfile refuses (a codec it lacks, a field it rejects): FFmpeg's turn
    return media.mono_blocks(chunks or media.audio_chunks(source, name, max_seconds), SAMPLE_RATE, name, max_seconds)


def _libsndfile_chunks(sound, name, max_seconds):
    """Yield (float32 [samples, channels], rate) blocks of an open SoundFile, its length checked first."""
    import soundfile

    from . import media

    with sound:
        media.check_duration(sound.frames / sound.samplerate, max_seconds, name)
        try:
            while len(block := sound.read(media.BLOCK_SAMPLES, dtype="float32", always_2d=True)):
                yield block, sound.samplerate
        except (soundfile.LibsndfileError, RuntimeError, ValueError, TypeError) as error:
            detail = getattr(error, "error_string", None) or str(error)  # without the stream's repr
            raise InputError(f"{name}: not a readable audio file ({detail})") from None


def speech_frames(waveform):
    """The speech preprocessing shared by training and serving: [n, 15600] YAMNet frames.

    Frames are 0.975 s long every 0.48 s; a clip shorter than one frame, or a tail that
    would otherwise be dropped, is zero-padded so that every sample is covered.
    """
    cutter = FrameCutter()
    return np.concatenate([cutter.add(waveform), cutter.finish()])


class FrameCutter:
    """speech_frames over a waveform that arrives in blocks: `add` gives the frames complete so far,
    `finish` the rest (zero-padded); together they are speech_frames of the whole waveform."""

    def __init__(self):
        self.pending = np.zeros(0, np.float32)  # the samples from the next frame's start on
        self.samples = self.frames = 0

    def add(self, block):
        block = np.asarray(block, np.float32).reshape(-1)
        self.pending = np.concatenate([self.pending, block])
        self.samples += len(block)
        return self._cut(max(0, (len(self.pending) - FRAME_SAMPLES) // HOP_SAMPLES + 1))

    def finish(self):
        count = 1 + max(0, int(np.ceil((self.samples - FRAME_SAMPLES) / HOP_SAMPLES))) - self.frames
        self.pending = np.pad(self.pending, (0, max(0, (count - 1) * HOP_SAMPLES + FRAME_SAMPLES - len(self.pending))))
        return self._cut(count)

    def _cut(self, count):
        frames = np.zeros((count, FRAME_SAMPLES), np.float32)
        for index in range(count):
            frames[index] = self.pending[index * HOP_SAMPLES:index * HOP_SAMPLES + FRAME_SAMPLES]
        self.pending, self.frames = self.pending[count * HOP_SAMPLES:], self.frames + count
        return frames


def frame_times(count):
    """(start, end) seconds of each of `count` frames."""
    starts = np.arange(count) * HOP_SAMPLES / SAMPLE_RATE
    return [(float(start), float(start + FRAME_SAMPLES / SAMPLE_RATE)) for start in starts]


def segment_windows(count, size=4, hop=2):
    """(first, end) frame indices of the speech timeline's windows: 4 frames (2.4 s) every 2 (0.96 s).

    A clip of at most `size` frames is one window; the last window always reaches the last frame.
    """
    if count <= size:
        return [(0, count)]
    starts = list(range(0, count - size + 1, hop))
    if starts[-1] + size < count:
        starts.append(count - size)
    return [(start, start + size) for start in starts]


class WindowCutter:
    """segment_windows(count, size, hop) over frames that arrive in pieces along `axis`, count unknown
    until the end: `add` gives the frames of each window complete so far, `finish` the last one's;
    `spans` lists each given window's (first, end) frame indices. Only the frames a coming window
    may need are kept."""

    def __init__(self, size, hop, axis=0):
        self.size, self.hop, self.axis = size, hop, axis
        self.kept, self.first, self.count, self.spans = None, 0, 0, []

    def add(self, frames):
        self.kept = frames if self.kept is None else np.concatenate([self.kept, frames], axis=self.axis)
        self.count += frames.shape[self.axis]
        windows = []
        start = self.spans[-1][0] + self.hop if self.spans else 0
        while start + self.size <= self.count:
            windows.append(self._window(start, start + self.size))
            start += self.hop
        keep = max(self.first, min(start, self.count - self.size))  # the next window, or the last one's start
        self.kept, self.first = self._slice(keep, self.first + self.kept.shape[self.axis]), keep
        return windows

    def finish(self):
        if not self.spans:
            return [self._window(0, self.count)]
        if self.spans[-1][1] < self.count:
            return [self._window(self.count - self.size, self.count)]
        return []

    def _window(self, start, end):
        self.spans.append((start, end))
        return self._slice(start, end)

    def _slice(self, start, end):
        return self.kept[(slice(None),) * self.axis + (slice(start - self.first, end - self.first),)]


def whole_timeline(stream, waveform):
    """A speech timeline stream's results (see speech_encoder.EncoderTimeline) for a whole waveform: the
    clip's features, the window features [windows, d] and each window's (start, end) seconds."""
    windows = stream.add(waveform)
    clip, last, spans = stream.finish()
    return clip, np.stack(windows + last), spans
