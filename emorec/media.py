"""FFmpeg through PyAV: decode the sound of any common audio or video file, and encode it back.

Decoding feeds `mono_blocks`, the one downmix-and-resample step (soxr, streaming, capped) that
audio.audio_blocks also uses for what libsndfile reads. Encoding gives codec round trips (MP3, AAC,
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
CAP_SLACK_SECONDS = 1.0  # decoded audio may outrun its header's duration by this much (encoder padding)
BLOCK_SAMPLES = 1 << 16  # decoded samples are mixed and resampled in blocks of about this many
# FFmpeg's stream probe cut short (open_media's `probe`): the streams' parameters are taken from the header
# instead of from decoding the first packets, which costs about 10 ms a 720p video.
QUICK_PROBE = {"probesize": "32", "analyzeduration": "0"}


class NoAudioTrack(InputError):
    """A readable media file with no audio stream: for a video, the caller's `no_speech` case."""


@contextlib.contextmanager
def open_media(source, name, kind="audio", probe=None):
    """The opened PyAV container of a path or bytes; FFmpeg's refusals become InputError. `probe`: FFmpeg
    format options (QUICK_PROBE) that replace its full probe of the streams."""
    try:
        # "file:" so that a path is never read as another FFmpeg protocol ("concat:", "http:")
        target = io.BytesIO(source) if isinstance(source, (bytes, bytearray)) else f"file:{os.fspath(source)}"
        # metadata_errors: a tag that is not UTF-8 (an encoder's name, a title) must not refuse the file
        container = av.open(target, options={"format_whitelist": CONTAINERS, **(probe or {})},
                            metadata_errors="replace")
    except av.FFmpegError as error:
        detail = ("unsupported format" if error.errno == errno.EINVAL
                  else "the file ends too early" if isinstance(error, av.EOFError) else error.strerror)
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


def audio_chunks(source, name, max_seconds, probe=None):
    """container_audio_chunks of a file (path or bytes), opened for them alone; `probe` as for open_media."""
    with open_media(source, name, probe=probe) as container:
        yield from container_audio_chunks(container, name, max_seconds)


def container_audio_chunks(container, name, max_seconds):
    """Yield (float32 [samples, channels], sample rate) blocks of an opened container's first audio stream,
    from where the container stands.

    The header's duration is checked against `max_seconds` before anything is decoded (mono_blocks
    enforces the cap again while decoding). A container without audio raises NoAudioTrack.
    """
    if not container.streams.audio:
        raise NoAudioTrack(f"{name}: no audio track")
    stream = container.streams.audio[0]
    check_duration(header_seconds(container, stream), max_seconds, name)
    pending, count, rate = [], 0, None
    for frame in decoded_frames(container, stream, name):
        if rate not in (None, frame.sample_rate):
            raise InputError(f"{name}: the audio's sample rate changes mid-stream")
        rate, samples = frame.sample_rate, float_samples(frame)
        if pending and (count >= BLOCK_SAMPLES or samples.shape[1] != pending[-1].shape[1]):
            yield np.concatenate(pending), rate
            pending, count = [], 0
        pending.append(samples)
        count += len(samples)
    if pending:
        yield np.concatenate(pending), rate


def decoded_frames(container, stream, name, kind="audio", before_decoding=None):
    """The stream's decoded frames. Packets that fail to decode are skipped, unless they are more than
    CORRUPT_SHARE of the stream; an error reading the container stops with InputError. `before_decoding`,
    if given, is called with each packet before it is decoded (to set decoder options for it)."""
    packets = failed = 0
    try:
        for packet in container.demux(stream):
            packets += 1
            if before_decoding:
                before_decoding(packet)
            try:
                frames = stream.decode(packet)
            except av.FFmpegError:
                failed += 1
                continue
            yield from frames
    except av.FFmpegError as error:
        raise InputError(f"{name}: {kind} data is corrupt or truncated ({error.strerror})") from None
    if failed > CORRUPT_SHARE * packets:
        raise InputError(f"{name}: {kind} data is corrupt ({failed} of {packets} packets unreadable)")


def float_samples(frame):
    """A decoded audio frame as float32 [samples, channels] in [-1, 1]."""
    array = frame.to_ndarray()  # planar: [channels, samples]; packed: [1, samples * channels]
    array = array.T if frame.format.is_planar else array.reshape(-1, frame.layout.nb_channels)
    if array.dtype.kind == "f":
        return array.astype(np.float32, copy=False)
    offset = 128 if array.dtype == np.uint8 else 0  # unsigned 8-bit is centred on 128
    return (array.astype(np.float32) - offset) / np.float32(2 ** (8 * array.dtype.itemsize - 1))


def mono_blocks(chunks, rate, name, max_seconds):
    """Mix (samples [n, channels], rate) blocks to one float32 channel at `rate`, in [-1, 1], block by block.

    Channels are averaged and soxr resamples as the blocks arrive, so memory follows one block;
    more than `max_seconds` of input (a header that lied about the length; CAP_SLACK_SECONDS allowed
    for an encoder's padding) is refused.
    """
    resampler, source_rate, seen, given = None, None, 0, 0
    for samples, block_rate in chunks:
        if source_rate is None:
            source_rate = block_rate
            if block_rate != rate:
                resampler = soxr.ResampleStream(block_rate, rate, 1, dtype="float32", quality="HQ")
        seen += len(samples)
        if seen > (max_seconds + CAP_SLACK_SECONDS) * source_rate:
            raise InputError(f"{name}: audio is over the {max_seconds:.0f} s limit "
                             "(longer than its header says)")
        mono = np.nan_to_num(samples.mean(axis=1, dtype=np.float32))
        if len(block := resampler.resample_chunk(mono) if resampler else mono):
            given += len(block)
            yield np.clip(block, -1.0, 1.0).astype(np.float32, copy=False)
    if not seen:
        raise InputError(f"{name}: audio holds no samples")
    if resampler and len(block := resampler.resample_chunk(np.zeros(0, np.float32), last=True)):
        given += len(block)
        yield np.clip(block, -1.0, 1.0).astype(np.float32, copy=False)
    if not given:
        raise InputError(f"{name}: audio is too short ({seen} samples at {source_rate} Hz)")


def mono_waveform(chunks, rate, name, max_seconds):
    """mono_blocks' blocks as one waveform."""
    return np.concatenate(list(mono_blocks(chunks, rate, name, max_seconds)))


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
        # A start time, so that the muxer records the encoder's delay for the decoder to remove
        frame.sample_rate, frame.pts, frame.time_base = rate, 0, Fraction(1, rate)
        output.mux(stream.encode(frame))
        output.mux(stream.encode(None))
    return buffer.getvalue()


def fit_length(waveform, length):
    """Cut or zero-pad to `length` samples."""
    return np.pad(waveform[:length], (0, max(0, length - len(waveform))))


def codec_round_trip(waveform, rate, codec, bitrate=None, container=None):
    """The waveform after encoding (encode_audio's arguments) and decoding back: same rate and length."""
    data = encode_audio(waveform, rate, codec, bitrate, container)
    decoded = decode_audio(data, rate, f"{codec} round trip")
    return fit_length(decoded, len(waveform))


def telephone_band(waveform, rate):
    """The waveform as a telephone line carries it: 8 kHz, 300-3400 Hz, G.711 mu-law; back at `rate`."""
    narrow = soxr.resample(np.asarray(waveform, dtype=np.float32), rate, TELEPHONE_RATE, quality="HQ")
    spectrum = np.fft.rfft(narrow)
    frequencies = np.fft.rfftfreq(len(narrow), 1 / TELEPHONE_RATE)
    spectrum[(frequencies < TELEPHONE_BAND[0]) | (frequencies > TELEPHONE_BAND[1])] = 0
    band = np.fft.irfft(spectrum, len(narrow)).astype(np.float32)
    line = codec_round_trip(band, TELEPHONE_RATE, "pcm_mulaw")
    back = soxr.resample(line, TELEPHONE_RATE, rate, quality="HQ")
    return fit_length(back, len(waveform)).astype(np.float32)
