"""The audio task's preprocessor: WAV -> waveform -> log-mel spectrogram -> image for an ImageNet backbone."""

from __future__ import annotations

import dataclasses
import math

from transferkit.config import check
from transferkit.preprocessing import Preprocessor

# Taps on each side of the windowed-sinc resampling filter: enough to keep speech bands clean.
RESAMPLE_HALF_TAPS = 16
# What a clip may be, in the serving graph and in the file reader (`data.read_wav`): sample rates from
# telephone speech to studio recordings, and clips up to ten minutes (an hour would hold gigabytes).
MIN_RATE, MAX_RATE = 1000, 384000
MAX_CLIP_SECONDS = 600
# Decibels below the clip's loudest bin that the image's darkest value stands for.
DYNAMIC_RANGE_DB = 80.0
# YAMNet's own features (its published params): 16 kHz, 25 ms periodic-Hann frames every 10 ms, FFT 512,
# magnitude, 64 mel bands over 125-7500 Hz, log(mel + 0.001); patches of 96 frames every 48.
YAMNET = dict(sample_rate=16000, window=400, hop=160, fft=512, mels=64, min_hz=125.0, max_hz=7500.0,
              log_offset=0.001, patch_frames=96, patch_hop=48)
FRONT_ENDS = ("auto", "spectrogram", "yamnet")


@dataclasses.dataclass(frozen=True)
class AudioPreprocessor(Preprocessor):
    """Everything that turns a clip into the model's input, typed and saved with the run.

    Clips are mixed to mono, resampled to `sample_rate` (windowed sinc, the same
    TensorFlow ops in training, `predict` and the serving graph), cut or
    zero-padded to `clip_seconds` around their centre, turned into a log-mel
    spectrogram (`tf.signal`) scaled to 0..255 against the clip's loudest bin
    (so gain does not matter), and resized to `image_size` with three equal
    channels: an image that ImageNet backbones take as it is.

    Example:

    ```python
    pre = AudioPreprocessor(sample_rate=16000, clip_seconds=1.0, image_size=(96, 96))
    image = pre.image(pre.fit_length(pre.resample(waveform, 22050)))   # (96, 96, 3) float32
    AudioPreprocessor.from_config(pre.get_config()) == pre             # True: saved with the run
    ```
    """

    raw_input = "audio"
    edge_steps = ("decode the WAV clip to mono float samples and resample them to sample_rate",
                  "cut or pad it to the clip length and compute the log-mel spectrogram as the settings say "
                  "(frame and hop lengths, mel bins, frequency range), in decibels",
                  "scale each clip against its own loudest bin over 80 dB to 0..255, low frequencies at the "
                  "bottom, time left to right, resized (bilinear) to image_size",
                  "feed it as NHWC pixels, the spectrogram repeated on 3 channels")

    matched_on_transfer = ("front_end", "sample_rate", "frame_ms", "hop_ms", "num_mels", "min_hz", "max_hz")

    sample_rate: int = 16000
    clip_seconds: float = 1.0
    frame_ms: float = 25.0
    hop_ms: float = 10.0
    num_mels: int = 64
    min_hz: float = 20.0
    max_hz: float | None = None  # None: half the sample rate
    image_size: tuple[int, int] = (96, 96)
    # "spectrogram": the image above, for image backbones; "yamnet": YAMNet's own log-mel, [64, frames, 1]
    # (the spectrogram settings and image_size are then YAMNet's, not these); "auto": the backbone
    # preset's choice, resolved by the task before any clip is read.
    front_end: str = "auto"

    def __post_init__(self):
        check(self.front_end in FRONT_ENDS, "data.front_end", self.front_end, f"one of {', '.join(FRONT_ENDS)}")
        if self.front_end == "yamnet":
            check(self.sample_rate == YAMNET["sample_rate"], "data.sample_rate", self.sample_rate,
                  "16000 with data.front_end: yamnet (YAMNet was trained on 16 kHz audio)")
        check(8000 <= self.sample_rate <= 96000, "data.sample_rate", self.sample_rate, "an integer in [8000, 96000]")
        check(math.isfinite(self.clip_seconds) and 0.1 <= self.clip_seconds <= 60, "data.clip_seconds",
              self.clip_seconds, "a number of seconds in [0.1, 60]")
        check(math.isfinite(self.frame_ms) and 5 <= self.frame_ms <= 200, "data.frame_ms", self.frame_ms,
              "a number in [5, 200]")
        check(math.isfinite(self.hop_ms) and 1 <= self.hop_ms <= self.frame_ms, "data.hop_ms", self.hop_ms,
              "a number in [1, data.frame_ms]")
        check(8 <= self.num_mels <= 256, "data.num_mels", self.num_mels, "an integer in [8, 256]")
        top = self.max_hz if self.max_hz is not None else self.sample_rate / 2
        check(math.isfinite(self.min_hz) and 0 <= self.min_hz < top <= self.sample_rate / 2, "data.min_hz",
              [self.min_hz, self.max_hz], "0 <= min_hz < max_hz <= sample_rate / 2")
        check(len(self.image_size) == 2 and all(32 <= int(s) <= 1024 for s in self.image_size), "data.image_size",
              list(self.image_size), "two integers in [32, 1024], [height, width]")
        check(self.frames >= 2, "data.clip_seconds", self.clip_seconds, "a clip of at least two frames")

    @property
    def model_input_shape(self) -> tuple[int, int, int]:
        if self.front_end == "yamnet":
            return (YAMNET["mels"], self.yamnet_frames, 1)
        return (*self.image_size, 3)

    @property
    def yamnet_samples(self) -> int:
        """The clip padded at its end as YAMNet pads: to one patch plus whole patch hops (15600 + k * 7680)."""
        patch = YAMNET["window"] + (YAMNET["patch_frames"] - 1) * YAMNET["hop"]
        step = YAMNET["patch_hop"] * YAMNET["hop"]
        return patch + -(-max(self.clip_samples - patch, 0) // step) * step

    @property
    def yamnet_frames(self) -> int:
        return 1 + (self.yamnet_samples - YAMNET["window"]) // YAMNET["hop"]

    # -- sizes -------------------------------------------------------------------------

    @property
    def clip_samples(self) -> int:
        return int(round(self.sample_rate * self.clip_seconds))

    @property
    def frame_length(self) -> int:
        return int(round(self.sample_rate * self.frame_ms / 1000))

    @property
    def hop_length(self) -> int:
        return int(round(self.sample_rate * self.hop_ms / 1000))

    @property
    def frames(self) -> int:
        return 1 + max(0, (self.clip_samples - self.frame_length) // self.hop_length)

    # -- TensorFlow ops ----------------------------------------------------------------

    def decode_wav(self, encoded):
        """WAV bytes (16-bit PCM, any channels and rate) -> (mono float32 waveform, its sample rate)."""
        import tensorflow as tf

        audio, rate = tf.audio.decode_wav(encoded)
        return tf.reduce_mean(audio, axis=-1), rate

    def resample(self, waveform, rate):
        """A mono waveform at `rate` Hz -> the same sound at `sample_rate` (windowed-sinc interpolation).

        When shrinking the rate, the filter's cut-off falls to the new Nyquist frequency, so nothing
        above it folds back into the band the spectrogram reads.
        """
        import tensorflow as tf

        waveform = tf.convert_to_tensor(waveform, tf.float32)
        rate = tf.cast(rate, tf.float64)
        target = tf.constant(float(self.sample_rate), tf.float64)

        def convert():
            # Rates are whole numbers, so the filter's phases repeat every `period` outputs
            # (target / gcd): weights are computed for one period and tiled.
            source_rate = tf.cast(tf.round(rate), tf.int64)
            target_rate = tf.constant(self.sample_rate, tf.int64)
            divisor = tf.while_loop(lambda a, b: b > 0, lambda a, b: (b, a % b), (source_rate, target_rate))[0]
            period = target_rate // divisor
            length = tf.shape(waveform, out_type=tf.int64)[0]
            count = tf.maximum((length * target_rate + source_rate - 1) // source_rate, 1)
            offsets = tf.range(-RESAMPLE_HALF_TAPS + 1, RESAMPLE_HALF_TAPS + 1, dtype=tf.int64)
            phase = tf.range(tf.minimum(period, count))
            exact = tf.cast(phase * source_rate, tf.float64) / tf.cast(target_rate, tf.float64)
            distance = (exact - tf.floor(exact))[:, None] - tf.cast(offsets, tf.float64)[None, :]
            cutoff = tf.minimum(tf.constant(1.0, tf.float64), target / rate)
            window = 0.5 + 0.5 * tf.cos(math.pi * distance / RESAMPLE_HALF_TAPS)  # Hann
            argument = math.pi * cutoff * distance
            sinc = tf.where(tf.abs(argument) < 1e-9, tf.ones_like(argument), tf.sin(argument) / argument)
            table = tf.cast(cutoff * sinc * window, tf.float32)
            outputs = tf.range(count)
            weights = tf.gather(table, outputs % tf.shape(table, out_type=tf.int64)[0])
            taps = ((outputs * source_rate) // target_rate)[:, None] + offsets[None, :]
            inside = tf.logical_and(taps >= 0, taps < length)
            values = tf.where(inside, tf.gather(waveform, tf.clip_by_value(taps, 0, length - 1)), 0.0)
            return tf.reduce_sum(values * weights, axis=1)

        return tf.cond(tf.equal(rate, target), lambda: tf.identity(waveform), convert)

    def fit_length(self, waveform, offset=None):
        """Exactly `clip_samples` samples: a longer clip cut around its centre (or at `offset`), a shorter one padded.

        Padding puts the clip in the middle, so a short word sits where a centred cut of a long one would.
        """
        import tensorflow as tf

        size = self.clip_samples
        length = tf.shape(waveform)[0]
        start = (length - size) // 2 if offset is None else tf.clip_by_value(offset, 0, tf.maximum(length - size, 0))
        cut = waveform[tf.maximum(start, 0):tf.maximum(start, 0) + size]
        missing = size - tf.shape(cut)[0]
        padded = tf.pad(cut, [[missing // 2, missing - missing // 2]])
        return tf.ensure_shape(padded, [size])

    def prepare(self, samples, rate):
        """A decoded clip (mono samples at `rate` Hz) -> the model's waveform: resampled, cut or padded.

        The clip is cut around its centre to what the output needs (plus the filter's reach) before it is
        resampled, so the work and memory are bounded by the clip length, not by the file's length or rate.
        An InvalidArgumentError for a rate outside [MIN_RATE, MAX_RATE] or a clip beyond MAX_CLIP_SECONDS.
        """
        import tensorflow as tf

        samples = tf.convert_to_tensor(samples, tf.float32)
        rate = tf.cast(rate, tf.int64)
        length = tf.shape(samples, out_type=tf.int64)[0]
        checks = [
            tf.debugging.assert_greater_equal(rate, tf.constant(MIN_RATE, tf.int64),
                                              message=f"WAV sample rate below {MIN_RATE} Hz"),
            tf.debugging.assert_less_equal(rate, tf.constant(MAX_RATE, tf.int64),
                                           message=f"WAV sample rate above {MAX_RATE} Hz"),
            tf.debugging.assert_less_equal(length, tf.cast(MAX_CLIP_SECONDS, tf.int64) * rate,
                                           message=f"WAV clip longer than {MAX_CLIP_SECONDS:.0f} s"),
        ]
        with tf.control_dependencies(checks):
            # Source samples the centred output reads: its span at `rate`, and the filter's taps on both sides.
            needed = (tf.constant(self.clip_samples, tf.int64) * rate + self.sample_rate - 1) // self.sample_rate \
                + 2 * (RESAMPLE_HALF_TAPS + 1)
            start = tf.maximum((length - needed) // 2, 0)
            window = samples[start:start + needed]
        return self.fit_length(self.resample(window, tf.cast(rate, tf.int32)))

    def log_mel(self, waveforms):
        """(batch, clip_samples) -> (batch, frames, num_mels) log-mel power, in decibels."""
        import tensorflow as tf

        stft = tf.signal.stft(waveforms, self.frame_length, self.hop_length,
                              fft_length=_next_power_of_two(self.frame_length), pad_end=False)
        power = tf.square(tf.abs(stft))
        matrix = tf.signal.linear_to_mel_weight_matrix(
            self.num_mels, power.shape[-1], self.sample_rate, self.min_hz,
            self.max_hz if self.max_hz is not None else self.sample_rate / 2)
        mel = tf.tensordot(power, matrix, 1)
        return 10.0 * tf.math.log(mel + 1e-10) / math.log(10.0)

    def images(self, waveforms):
        """(batch, clip_samples) waveforms -> (batch, height, width, 3) float32 images in 0..255.

        Height is frequency (low at the bottom), width is time; each clip is scaled against its own
        loudest bin over `DYNAMIC_RANGE_DB`, so a quiet and a loud recording of a word look alike.
        With the YAMNet front end: (batch, 64, frames, 1), YAMNet's log-mel (mel bands up, time across).
        """
        import tensorflow as tf

        if self.front_end == "yamnet":
            return self.yamnet_log_mel(waveforms)

        decibels = self.log_mel(waveforms)
        loudest = tf.reduce_max(decibels, axis=[1, 2], keepdims=True)
        scaled = tf.clip_by_value((decibels - loudest + DYNAMIC_RANGE_DB) / DYNAMIC_RANGE_DB, 0.0, 1.0) * 255.0
        picture = tf.reverse(tf.transpose(scaled, [0, 2, 1]), axis=[1])[..., None]  # (batch, mels, frames, 1)
        resized = tf.image.resize(picture, self.image_size, method="bilinear")
        return tf.tile(tf.clip_by_value(resized, 0.0, 255.0), [1, 1, 1, 3])

    def yamnet_log_mel(self, waveforms):
        """(batch, clip_samples) -> (batch, 64, frames, 1): YAMNet's features of the clip padded as YAMNet pads."""
        import tensorflow as tf

        padded = tf.pad(waveforms, [[0, 0], [0, self.yamnet_samples - self.clip_samples]])
        stft = tf.signal.stft(padded, YAMNET["window"], YAMNET["hop"], YAMNET["fft"], window_fn=tf.signal.hann_window,
                              pad_end=False)
        matrix = tf.signal.linear_to_mel_weight_matrix(YAMNET["mels"], YAMNET["fft"] // 2 + 1, YAMNET["sample_rate"],
                                                       YAMNET["min_hz"], YAMNET["max_hz"])
        log_mel = tf.math.log(tf.matmul(tf.abs(stft), matrix) + YAMNET["log_offset"])
        return tf.transpose(log_mel, [0, 2, 1])[..., None]

    def image(self, waveform):
        """One (clip_samples,) waveform -> its (height, width, 3) image."""
        return self.images(waveform[None])[0]

    def preprocess(self, raw):
        """WAV bytes -> the model's input image, as the serving graph computes it."""
        return self.image(self.prepare(*self.decode_wav(raw)))


def _next_power_of_two(value: int) -> int:
    return 1 << max(0, int(value - 1).bit_length())
