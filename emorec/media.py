"""FFmpeg through PyAV: decode the sound of any common audio or video file, and encode it back.

Decoding feeds `mono_waveform`, the one downmix-and-resample step (soxr, streaming, capped) that
audio.load_audio also uses for what libsndfile reads. Encoding gives codec round trips (MP3, AAC,
Opus, telephone band) for evaluation and augmentation.
"""

import contextlib
import errno
import io
import os
from fractions import Fraction

import av
import numpy as np
import soxr

from .errors import InputError

# The demuxers FFmpeg may use (av_match_list names): common audio and video containers only, so
# that no playlist or concatenation demuxer ever opens another file or URL named inside an upload.
CONTAINERS = "wav,w64,aiff,caf,flac,mp3,aac,ogg,mov,matroska,avi,asf,amr"
# codec: (container format, FFmpeg encoder) for encode_audio.
ENCODERS = {
    "mp3": ("mp3", "libmp3lame"),
    "aac": ("ipod", "aac"),  # .m4a
    "opus": ("ogg", "libopus"),
    "flac": ("flac", "flac"),
    "pcm_s16le": ("wav", "pcm_s16le"),
    "pcm_mulaw": ("wav", "pcm_mulaw"),  # G.711, the telephone codec
}
TELEPHONE_RATE = 8000
TELEPHONE_BAND = (300.0, 3400.0)
CORRUPT_SHARE = 0.1  # more unreadable packets than this and the stream is refused as corrupt


class NoAudioTrack(InputError):
    """A readable media file with no audio stream: for a video, the caller's `no_speech` case."""


@contextlib.contextmanager
def open_media(source, name, kind="audio"):
    """The opened PyAV container of a path or bytes; FFmpeg's refusals become InputError."""
    try:
        # "file:" so that a path is never read as another FFmpeg protocol ("concat:", "http:")
        target = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else f"file:{os.fspath(source)}"
        container = av.open(target, options={"format_whitelist": CONTAINERS})
    except av.FFmpegError as error:
        detail = "unsupported format" if error.errno == errno.EINVAL else error.strerror
        raise InputError(f"{name}: not a readable {kind} file ({detail})") from None
    with container:
        yield container


def header_seconds(container, stream):
    """The stream's duration as its container's header states it, or None when it does not say."""
    if stream.duration is not None and stream.time_base:
        return float(stream.duration * stream.time_base)
    return container.duration / av.time_base if container.duration else None


def check_duration(seconds, max_seconds, name, kind="audio"):
    if seconds is not None and seconds > max_seconds:
        raise InputError(f"{name}: {kind} is {seconds:.0f} s long, over the {max_seconds:.0f} s limit")


def audio_chunks(source, name, max_seconds):
    """Yield (float32 [samples, channels], sample rate) blocks of a file's first audio stream.

    The header's duration is checked against `max_seconds` before anything is decoded (mono_waveform
    enforces the cap again while decoding). A file without audio raises NoAudioTrack; packets that
    fail to decode are skipped unless they are more than CORRUPT_SHARE of the stream.
    """
    with open_media(source, name) as container:
        if not container.streams.audio:
            raise NoAudioTrack(f"{name}: no audio track")
        stream = container.streams.audio[0]
        check_duration(header_seconds(container, stream), max_seconds, name)
        to_float = av.AudioResampler(format="flt")  # packed float32, same layout and rate
        packets = failed = 0
        try:
            for packet in container.demux(stream):
                packets += 1
                try:
                    frames = stream.decode(packet)
                except av.FFmpegError:
                    failed += 1
                    continue
                for frame in frames:
                    for block in to_float.resample(frame):
                        yield block.to_ndarray().reshape(block.samples, -1), block.sample_rate
        except (av.FFmpegError, ValueError) as error:  # ValueError: the layout or rate changed mid-stream
            detail = error.strerror if isinstance(error, av.FFmpegError) else str(error)
            raise InputError(f"{name}: audio data is corrupt or truncated ({detail})") from None
        if failed > CORRUPT_SHARE * packets:
            raise InputError(f"{name}: audio data is corrupt ({failed} of {packets} packets unreadable)")


def mono_waveform(chunks, rate, name, max_seconds):
    """Mix (samples [n, channels], rate) blocks to one float32 channel at `rate`, in [-1, 1].

    Channels are averaged and soxr resamples as the blocks arrive, so memory follows the output;
    more than `max_seconds` of input (a header that lied about the length) is refused.
    """
    parts, resampler, source_rate, seen = [], None, None, 0
    for samples, block_rate in chunks:
        if source_rate is None:
            source_rate = block_rate
            if block_rate != rate:
                resampler = soxr.ResampleStream(block_rate, rate, 1, dtype="float32", quality="HQ")
        seen += len(samples)
        if seen > max_seconds * source_rate:
            raise InputError(f"{name}: audio is over the {max_seconds:.0f} s limit (longer than its header says)")
        mono = np.nan_to_num(samples.mean(axis=1, dtype=np.float32))
        parts.append(resampler.resample_chunk(mono) if resampler else mono)
    if not seen:
        raise InputError(f"{name}: audio holds no samples")
    if resampler:
        parts.append(resampler.resample_chunk(np.zeros(0, np.float32), last=True))
    waveform = np.concatenate(parts)
    if len(waveform) == 0:
        raise InputError(f"{name}: audio is too short ({seen} samples at {source_rate} Hz)")
    return np.clip(waveform, -1.0, 1.0).astype(np.float32)


def decode_audio(source, rate, name="audio", max_seconds=float("inf")):
    """Any common audio or video file (path or bytes) as a float32 mono waveform at `rate`, through FFmpeg."""
    return mono_waveform(audio_chunks(source, name, max_seconds), rate, name, max_seconds)


def encode_audio(waveform, rate, codec, bitrate=None, container=None):
    """A mono float waveform at `rate` encoded as a file's bytes: codec one of ENCODERS, bitrate in bit/s.

    The container is the codec's usual one (MP3, M4A, Ogg, FLAC, WAV) unless `container` names
    another FFmpeg format ("webm", "mp4", "matroska", "adts").
    """
    if codec not in ENCODERS:
        raise InputError(f"unknown codec {codec!r}: use one of {', '.join(ENCODERS)}")
    default_container, encoder = ENCODERS[codec]
    samples = np.clip(np.asarray(waveform, dtype=np.float32), -1.0, 1.0)[None, :]
    buffer = io.BytesIO()
    with av.open(buffer, "w", format=container or default_container) as output:
        stream = output.add_stream(encoder, rate=rate, layout="mono")
        if bitrate:
            stream.bit_rate = int(bitrate)
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples), format="flt", layout="mono")
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)  # a start: the muxer records the delay
        output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return buffer.getvalue()


def fit_length(waveform, length):
    """Cut or zero-pad to `length` samples."""
    return np.pad(waveform[:length], (0, max(0, length - len(waveform))))


def codec_round_trip(waveform, rate, codec, bitrate=None, container=None):
    """The waveform after encoding (encode_audio's arguments) and decoding back: same rate and length."""
    decoded = decode_audio(encode_audio(waveform, rate, codec, bitrate, container), rate, f"{codec} round trip")
    return fit_length(decoded, len(waveform))


def telephone_band(waveform, rate):
    """The waveform as a telephone line carries it: 8 kHz, 300-3400 Hz, G.711 mu-law; back at `rate`."""
    narrow = soxr.resample(np.asarray(waveform, dtype=np.float32), rate, TELEPHONE_RATE, quality="HQ")
    spectrum = np.fft.rfft(narrow)
    frequencies = np.fft.rfftfreq(len(narrow), 1 / TELEPHONE_RATE)
    spectrum[(frequencies < TELEPHONE_BAND[0]) | (frequencies > TELEPHONE_BAND[1])] = 0
    band = np.fft.irfft(spectrum, len(narrow)).astype(np.float32)
    line = codec_round_trip(band, TELEPHONE_RATE, "pcm_mulaw")
    return fit_length(soxr.resample(line, TELEPHONE_RATE, rate, quality="HQ"), len(waveform)).astype(np.float32)
