"""Decoding: any rate, bit depth and channel count in; a clear error for bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from kws.audio import decode, fit_length, load_clip, pcm16_wav
from kws.errors import AudioError
from tests.helpers import tone, wav_bytes

CLIP = 16000


@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"])
def test_every_bit_depth_decodes_to_the_same_waveform(subtype: str) -> None:
    wave = tone(0.5)
    decoded, rate = decode(wav_bytes(wave, 16000, subtype))
    assert rate == 16000
    assert decoded.dtype == np.float32
    tolerance = 1e-2 if subtype == "PCM_U8" else 1e-4
    np.testing.assert_allclose(decoded, wave, atol=tolerance)


@pytest.mark.parametrize("rate", [8000, 11025, 22050, 44100, 48000])
def test_any_sample_rate_becomes_a_one_second_16k_clip(rate: int) -> None:
    clip = load_clip(wav_bytes(tone(0.7, rate), rate), 16000, CLIP)
    assert clip.shape == (CLIP,)
    # a 440 Hz tone survives resampling: its spectral peak stays at 440 Hz
    spectrum = np.abs(np.fft.rfft(clip))
    assert abs(np.argmax(spectrum) * 16000 / CLIP - 440) < 2


def test_stereo_44k_24bit_is_mixed_to_mono() -> None:
    stereo = tone(1.0, 44100, channels=2)
    stereo[:, 1] = 0.0
    wave, rate = decode(wav_bytes(stereo, 44100, "PCM_24"))
    assert rate == 44100 and wave.ndim == 1
    np.testing.assert_allclose(wave, stereo[:, 0] / 2, atol=1e-4)


def test_short_audio_is_padded_centred_and_long_audio_cut_to_its_loudest_second() -> None:
    short = np.ones(4000, dtype=np.float32)
    padded = fit_length(short, CLIP)
    assert padded.shape == (CLIP,) and padded[:6000].sum() == 0 and padded[6000:10000].all()
    long = np.zeros(3 * CLIP, dtype=np.float32)
    long[40000:41000] = 1.0
    window = fit_length(long, CLIP)
    assert window.shape == (CLIP,) and window.sum() == 1000


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "empty file"),
        (b"# README\nthis is not audio at all\n" * 20, "not a readable audio file"),
        (np.random.default_rng(0).bytes(4096), "not a readable audio file"),
    ],
)
def test_bad_input_is_a_clear_audio_error(data: bytes, message: str) -> None:
    with pytest.raises(AudioError, match=message):
        decode(data)


def test_truncated_wav_is_rejected() -> None:
    data = wav_bytes(tone(0.5))
    with pytest.raises(AudioError, match="truncated"):
        decode(data[: len(data) // 2])
    with pytest.raises(AudioError):
        decode(data[:30])


def test_wav_header_claiming_a_huge_data_size_is_rejected() -> None:
    data = bytearray(wav_bytes(tone(0.1)))
    at = data.index(b"data")
    data[at + 4 : at + 8] = (0xFFFFFF00).to_bytes(4, "little")
    with pytest.raises(AudioError, match="truncated"):
        decode(bytes(data))


def test_nan_samples_are_rejected() -> None:
    wave = tone(0.1)
    wave[10] = np.nan
    with pytest.raises(AudioError, match="NaN"):
        decode(wav_bytes(wave, subtype="FLOAT"))


def test_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(AudioError, match="no such file"):
        decode(tmp_path / "nope.wav")


def _libsndfile(data: bytes) -> tuple[np.ndarray, int]:
    import io

    import soundfile as sf

    wave, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    return wave.mean(axis=1).astype(np.float32), int(rate)


def test_16_bit_pcm_is_read_without_libsndfile_and_gives_its_samples(fsdd_dir: Path) -> None:
    import io

    import soundfile as sf

    noise = np.random.default_rng(1).uniform(-1, 1, (4000, 3)).astype(np.float32)
    extensible = io.BytesIO()
    sf.write(extensible, noise, 22050, format="WAV", subtype="PCM_16")
    recordings = sorted((fsdd_dir / "recordings").glob("*.wav"))[::100]
    cases = [path.read_bytes() for path in recordings]
    cases += [wav_bytes(tone(0.3, 44100, channels=2), 44100), extensible.getvalue()]
    for data in cases:
        assert pcm16_wav(data) is not None
        wave, rate = decode(data)
        expected, expected_rate = _libsndfile(data)
        assert rate == expected_rate and np.array_equal(wave, expected)


def test_other_sample_formats_still_go_to_libsndfile() -> None:
    for subtype in ("PCM_24", "FLOAT", "PCM_U8"):
        data = wav_bytes(tone(0.2, 16000), 16000, subtype)
        assert pcm16_wav(data) is None
        wave, rate = decode(data)
        assert rate == 16000 and np.array_equal(wave, _libsndfile(data)[0])
