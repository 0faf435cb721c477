"""Data sources: FSDD (local folder, archive, real HTTP download), folder, Speech Commands."""

from __future__ import annotations

import functools
import http.server
import io
import logging
import shutil
import tarfile
import threading
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from kws.data import fetch, fsdd, prepare, scan_labelled_folder, speech_commands
from kws.errors import DataError
from kws.params import Params, PathParams
from tests.helpers import LN_FRONT_END, tone, wav_bytes


def project_params(tmp_path: Path, **data: object) -> Params:
    root = tmp_path / "project"
    paths = PathParams(**{f: str(root / v) for f, v in PathParams().__dict__.items()})
    return Params(paths=paths).replace(data=data)


def fsdd_archive(fsdd_dir: Path, dest: Path) -> Path:
    """A tar.gz in the layout of the GitHub release archive."""
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(fsdd_dir / "recordings", arcname="free-spoken-digit-dataset-1.0.10/recordings")
    return dest


@pytest.fixture(autouse=True)
def _no_env_source(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(fsdd.SOURCE_ENV, raising=False)
    monkeypatch.delenv(speech_commands.SOURCE_ENV, raising=False)


@pytest.fixture(scope="module")
def fsdd_tarball(tmp_path_factory: pytest.TempPathFactory, fsdd_dir: Path) -> Path:
    return fsdd_archive(fsdd_dir, tmp_path_factory.mktemp("archive") / "v1.0.10.tar.gz")


def test_fsdd_from_a_local_folder_is_verified_and_split(tmp_path: Path, fsdd_dir: Path) -> None:
    params = project_params(tmp_path, fsdd_source=str(fsdd_dir), max_per_class=2)
    fetch(params)
    samples, info = prepare(params)
    assert info["labels"][:3] == ["zero", "one", "two"]
    assert {s.split for s in samples} == {"train", "val", "test"}
    assert len(samples) == 2 * 10 * 3
    manifest = Path(params.paths.prepared) / "manifest.csv"
    assert manifest.read_text().startswith("path,label,speaker,split")
    assert len(str(info["data_hash"])) == 64


def test_fsdd_from_a_release_archive(tmp_path: Path, fsdd_tarball: Path) -> None:
    folder = fsdd.fetch(tmp_path / "raw", str(fsdd_tarball))
    assert len(list(folder.glob("*.wav"))) == 2500


def test_fsdd_download_over_http_with_progress_and_verification(
    tmp_path: Path, fsdd_tarball: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with serve_folder(fsdd_tarball.parent) as base_url:
        monkeypatch.setenv(fsdd.URL_ENV, f"{base_url}/{fsdd_tarball.name}")
        folder = fsdd.fetch(tmp_path / "raw")
    assert len(list(folder.glob("*.wav"))) == 2500
    assert (tmp_path / "raw" / "downloads" / "fsdd-v1.0.10.tar.gz").is_file()


def test_unreachable_download_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv(fsdd.URL_ENV, "http://127.0.0.1:9/nothing.tar.gz")
    with pytest.raises(DataError, match="download of .* failed"):
        fsdd.fetch(tmp_path / "raw")
    assert not list((tmp_path / "raw" / "downloads").glob("*"))


def test_a_tampered_recording_fails_verification(tmp_path: Path, fsdd_dir: Path) -> None:
    copy = tmp_path / "fsdd"
    shutil.copytree(fsdd_dir / "recordings", copy / "recordings")
    victim = copy / "recordings" / "3_george_7.wav"
    victim.write_bytes(victim.read_bytes()[:-10] + b"\x00" * 10)
    with pytest.raises(DataError, match="checksum mismatch.*3_george_7"):
        fsdd.fetch(tmp_path / "raw", str(copy))
    assert not (tmp_path / "raw" / "fsdd" / "recordings").exists()


def test_an_incomplete_copy_is_refused(tmp_path: Path, fsdd_dir: Path) -> None:
    copy = tmp_path / "fsdd"
    shutil.copytree(fsdd_dir / "recordings", copy)
    (copy / "0_jackson_0.wav").unlink()
    with pytest.raises(DataError, match="1 recordings missing"):
        fsdd.fetch(tmp_path / "raw", str(copy))


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        fsdd.fetch(tmp_path / "raw", str(tmp_path / "nowhere"))


def test_folder_source_reads_label_subfolders(tmp_path: Path) -> None:
    root = tmp_path / "words"
    for label in ("alpha", "beta"):
        for speaker in ("s1", "s2", "s3", "s4", "s5"):
            path = root / label / f"{speaker}_nohash_0.wav"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(wav_bytes(tone(0.3)))
    samples = scan_labelled_folder(root)
    assert {s.speaker for s in samples} == {"s1", "s2", "s3", "s4", "s5"}
    params = project_params(tmp_path, source="folder", folder=str(root))
    fetch(params)
    samples, info = prepare(params)
    assert info["labels"] == ["alpha", "beta"]
    assert {s.split for s in samples} == {"train", "val", "test"}


def make_speech_commands_archive(dest: Path) -> Path:
    """A tiny archive in the layout of speech_commands_v0.02.tar.gz."""
    rng = np.random.default_rng(0)
    files: dict[str, bytes] = {}
    words = ["yes", "no", "stop", "bed", "wow"]  # bed and wow are _unknown_ words
    for word in words:
        for speaker in ("0a7c2a8d", "1b4c9b89", "2c5dafb5", "3e4a7c1f"):
            for take in range(2):
                files[f"{word}/{speaker}_nohash_{take}.wav"] = wav_bytes(tone(1.0, freq=300 + take))
    noise = (rng.standard_normal(16000 * 20) * 0.1).astype(np.float32)
    files["_background_noise_/white_noise.wav"] = wav_bytes(noise)
    val = [f"{w}/1b4c9b89_nohash_{t}.wav" for w in words for t in range(2)]
    test = [f"{w}/2c5dafb5_nohash_{t}.wav" for w in words for t in range(2)]
    files["validation_list.txt"] = "\n".join(val).encode()
    files["testing_list.txt"] = "\n".join(test).encode()
    with tarfile.open(dest, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(f"./{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


def test_speech_commands_12_class_task_from_an_archive(tmp_path: Path) -> None:
    archive = make_speech_commands_archive(tmp_path / "speech_commands_v0.02.tar.gz")
    params = project_params(
        tmp_path,
        source="speech_commands",
        speech_commands_source=str(archive),
        silence_percent=50,
        unknown_percent=50,
    )
    fetch(params)
    samples, info = prepare(params)
    assert info["labels"] == [*speech_commands.WORDS, "_silence_", "_unknown_"]
    by_split = {
        split: [s for s in samples if s.split == split] for split in ("train", "val", "test")
    }
    # the official lists decide val and test
    assert {s.speaker for s in by_split["val"] if s.label in speech_commands.WORDS} == {"1b4c9b89"}
    assert {s.speaker for s in by_split["test"] if s.label in speech_commands.WORDS} == {"2c5dafb5"}
    for split, rows in by_split.items():
        labels = [s.label for s in rows]
        n_words = sum(label in speech_commands.WORDS for label in labels)
        assert labels.count("_silence_") == round(n_words * 0.5), split
        assert 0 < labels.count("_unknown_") <= round(n_words * 0.5), split
    silence = next(s for s in samples if s.label == "_silence_")
    wave, rate = sf.read(silence.path)
    assert rate == 16000 and len(wave) == 16000


def test_speech_commands_through_tensorflow_datasets(tmp_path: Path) -> None:
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=3):
        samples = speech_commands.materialise_tfds(tmp_path / "tfds")
    assert len(samples) == 9
    assert {s.split for s in samples} == {"train", "val", "test"}
    assert {s.label for s in samples} <= set(speech_commands.LABELS)
    assert all(Path(s.path).is_file() for s in samples)


def test_corrupt_files_are_skipped_with_a_counted_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from kws.data.features import featurize_samples

    good = tmp_path / "good.wav"
    good.write_bytes(wav_bytes(tone(0.5)))
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF....not really")
    empty = tmp_path / "empty.wav"
    empty.touch()
    from kws.data.manifest import Sample

    samples = [Sample(str(p), "yes", "a", "train") for p in (good, bad, empty)]
    with caplog.at_level(logging.WARNING):
        fs = featurize_samples(samples, LN_FRONT_END)
    assert fs.x.shape[0] == 1 and len(fs.skipped) == 2
    assert "skipped 2 unreadable file(s)" in caplog.text


def test_cached_features_name_the_files_of_this_copy_of_the_data(tmp_path: Path) -> None:
    """Two copies of the same data (same content hash) in different folders share a cache
    folder; each gets features that point at its own files."""
    from kws.data.features import featurize_samples
    from kws.data.manifest import Sample, data_hash

    cache = tmp_path / "cache"
    results = []
    for copy in ("first", "second"):
        folder = tmp_path / copy / "yes"
        folder.mkdir(parents=True)
        (folder / "a.wav").write_bytes(wav_bytes(tone(0.5)))
        samples = [Sample(str(folder / "a.wav"), "yes", "a", "train")]
        results.append(featurize_samples(samples, LN_FRONT_END, cache, data_hash(samples)))
    first, second = results
    assert data_hash([Sample(first.paths[0], "yes", "a", "train")]) == data_hash(
        [Sample(second.paths[0], "yes", "a", "train")]
    )
    assert Path(first.paths[0]).parts[-3] == "first"
    assert Path(second.paths[0]).parts[-3] == "second"
    np.testing.assert_array_equal(first.x, second.x)


@functools.cache
def _handler(folder: str) -> type[http.server.SimpleHTTPRequestHandler]:
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=folder, **kwargs)

        def log_message(self, *args) -> None:
            pass

    return Quiet


class serve_folder:
    """A real HTTP server on localhost serving a folder, as a context manager."""

    def __init__(self, folder: Path) -> None:
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(str(folder)))

    def __enter__(self) -> str:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_speech_commands_background_noise_feeds_the_augmenter(tmp_path: Path) -> None:
    from kws.augment import background_noise

    archive = make_speech_commands_archive(tmp_path / "speech_commands_v0.02.tar.gz")
    params = project_params(tmp_path, source="speech_commands", speech_commands_source=str(archive))
    fetch(params)
    prepare(params)
    noises = background_noise(params)
    assert len(noises) == 1 and noises[0].shape == (16000 * 20,)
    assert background_noise(params.replace(data={"source": "fsdd"})) == []
