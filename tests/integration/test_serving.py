"""The inference service: the real `kws serve` (KServe ModelServer) spoken to over real HTTP."""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.conftest import hermetic_environment, run_kws
from tests.helpers import tone, wav_bytes
from tests.integration.test_mlflow import free_port, stop, wait_for

pytestmark = pytest.mark.slow
TOKEN = "test-admin-token"


class Server:
    """A running `kws serve` and the project it serves from."""

    def __init__(self, url: str, project: Path, process: subprocess.Popen) -> None:
        self.url, self.project, self.process = url, project, process
        self.client = httpx.Client(base_url=url, timeout=30)

    def alive(self) -> bool:
        return self.process.poll() is None and self.client.get("/v2/health/live").status_code == 200


@contextmanager
def champion_server(
    tiny_project: Path, folder: Path, env: dict[str, str]
) -> Iterator[tuple[str, Path, subprocess.Popen]]:
    """`kws serve --model models:/kws@champion` on a free port in a copy of the project,
    polling the registry every 0.5 s: (its URL, the project copy, the process)."""
    project = folder / "project"
    shutil.copytree(tiny_project, project)  # the hot-swap tests register and promote here
    port = free_port()
    kws = str(Path(sys.executable).with_name("kws"))
    log = (project / "serve.log").open("w")
    process = subprocess.Popen(
        [kws, "serve", "--model", "models:/kws@champion", "--port", str(port), "--poll", "0.5"],
        cwd=project,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**hermetic_environment(), **env},
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for(f"{url}/v2/health/ready", process)
        yield url, project, process
    finally:
        stop(process)
        log.close()


@pytest.fixture(scope="module")
def server(tiny_project: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The champion served by one process, with an admin token."""
    folder = tmp_path_factory.mktemp("serving")
    with champion_server(tiny_project, folder, {"KWS_ADMIN_TOKEN": TOKEN}) as running:
        yield Server(*running)


def test_predict_takes_a_multipart_file_and_names_the_model_version(
    server: Server, sample: bytes
) -> None:
    response = server.client.post("/predict", files={"file": ("digit.wav", sample, "audio/wav")})
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"label", "confidence", "top_k", "model", "latency_ms"}
    assert body["model"] == {"name": "kws", "version": "1", "alias": "champion"}
    assert 0 < body["confidence"] <= 1 and body["top_k"][0]["label"] == body["label"]
    assert body["latency_ms"] > 0


def test_predict_takes_a_raw_wav_body_and_answers_the_same(server: Server, sample: bytes) -> None:
    multipart = server.client.post("/predict", files={"file": ("a.wav", sample)}).json()
    raw = server.client.post(
        "/predict", content=sample, headers={"Content-Type": "audio/wav"}
    ).json()
    assert raw["label"] == multipart["label"]
    assert raw["confidence"] == pytest.approx(multipart["confidence"], abs=1e-6)


def test_any_rate_depth_and_channel_count_is_resampled_and_mixed_down(server: Server) -> None:
    mono = server.client.post(
        "/predict", content=wav_bytes(tone(0.8, 16000)), headers={"Content-Type": "audio/wav"}
    )
    stereo_24bit = server.client.post(
        "/predict",
        content=wav_bytes(tone(0.8, 44100, channels=2), 44100, "PCM_24"),
        headers={"Content-Type": "audio/wav"},
    )
    assert mono.status_code == stereo_24bit.status_code == 200
    assert stereo_24bit.json()["label"] == mono.json()["label"]


def test_kserve_v1_takes_base64_wavs_and_waveforms(server: Server, sample: bytes) -> None:
    wave = tone(0.5, 8000)
    response = server.client.post(
        "/v1/models/kws:predict",
        json={
            "instances": [
                {"b64": base64.b64encode(sample).decode()},
                {"waveform": wave.tolist(), "sample_rate": 8000},
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert len(body["predictions"]) == 2 and body["model"]["version"] == "1"
    single = server.client.post("/predict", files={"file": ("a.wav", sample)}).json()
    assert body["predictions"][0]["label"] == single["label"]


def test_kserve_v2_json_takes_fp32_waveforms_and_base64_bytes(
    server: Server, sample: bytes
) -> None:
    waves = np.stack([tone(1.0, 16000), tone(1.0, 16000, freq=880)])
    response = server.client.post(
        "/v2/models/kws/infer",
        json={
            "inputs": [
                {
                    "name": "waveform",
                    "datatype": "FP32",
                    "shape": list(waves.shape),
                    "data": waves.reshape(-1).tolist(),
                    "parameters": {"sample_rate": 16000},
                }
            ]
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model_version"] == "1"
    outputs = {o["name"]: o for o in body["outputs"]}
    assert outputs["label"]["shape"] == [2] and outputs["probabilities"]["shape"][0] == 2
    as_bytes = server.client.post(
        "/v2/models/kws/infer",
        json={
            "inputs": [
                {
                    "name": "audio",
                    "datatype": "BYTES",
                    "shape": [1],
                    "data": [base64.b64encode(sample).decode()],
                }
            ]
        },
    )
    assert as_bytes.status_code == 200, as_bytes.text


def test_tritonclient_speaks_open_inference_protocol_with_binary_wavs(
    server: Server, sample: bytes
) -> None:
    import tritonclient.http as triton

    client = triton.InferenceServerClient(server.url.removeprefix("http://"))
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("kws")
    metadata = client.get_model_metadata("kws")
    assert {i["name"] for i in metadata["inputs"]} == {"audio", "waveform"}

    audio = triton.InferInput("audio", [2], "BYTES")
    audio.set_data_from_numpy(np.array([sample, sample], dtype=np.object_), binary_data=True)
    result = client.infer("kws", [audio], outputs=[triton.InferRequestedOutput("label")])
    labels = result.as_numpy("label")
    expected = server.client.post("/predict", files={"file": ("a.wav", sample)}).json()["label"]
    assert [x.decode() if isinstance(x, bytes) else x for x in labels] == [expected] * 2

    waveform = triton.InferInput("waveform", [1, 16000], "FP32")
    waveform.set_data_from_numpy(tone(1.0, 16000)[np.newaxis], binary_data=True)
    result = client.infer("kws", [waveform])
    probabilities = result.as_numpy("probabilities")
    assert probabilities.shape == (1, 10)
    assert probabilities.sum() == pytest.approx(1.0, abs=1e-4)  # every class, not only top-k
    assert result.get_response()["model_version"] == "1"


def test_metrics_name_routes_statuses_versions_labels_and_input_shape(
    server: Server, sample: bytes
) -> None:
    server.client.post("/predict", files={"file": ("a.wav", sample)})
    server.client.post("/predict", content=b"junk", headers={"Content-Type": "audio/wav"})
    text = server.client.get("/metrics").text
    assert 'kws_requests_total{model_version="1",route="/predict",status="200"}' in text
    assert 'kws_requests_total{model_version="1",route="/predict",status="422"}' in text
    for name in (
        "kws_request_latency_seconds_bucket",
        "kws_predictions_total",
        "kws_prediction_confidence_bucket",
        "kws_input_duration_seconds_bucket",
        "kws_input_rms_bucket",
    ):
        assert name in text
    assert 'kws_model_info{alias="champion",name="kws"' in text and 'version="1"' in text


def test_openapi_documents_predict_with_a_multipart_file(server: Server) -> None:
    spec = server.client.get("/openapi.json").json()
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]
    assert "multipart/form-data" in body and "audio/wav" in body
    assert server.client.get("/docs").status_code == 200


def _huge_header_wav() -> bytes:
    data = bytearray(wav_bytes(tone(0.2, 16000)))
    at = data.index(b"data") + 4
    data[at : at + 4] = (2**31).to_bytes(4, "little")
    return bytes(data)


BAD_UPLOADS = {
    "random bytes": (os.urandom(4096), 422),
    "truncated WAV": (wav_bytes(tone(1.0))[:600], 422),
    "header claiming a huge data size": (_huge_header_wav(), 422),
    "zero length": (b"", 422),
    "60 s of audio": (wav_bytes(tone(60.0, 8000), 8000, "PCM_U8"), 422),
    "over the 1 MiB limit": (wav_bytes(tone(40.0, 16000)), 413),
}


@pytest.mark.parametrize("case", list(BAD_UPLOADS))
def test_bad_uploads_get_a_4xx_json_error_and_the_server_stays_up(
    server: Server, case: str
) -> None:
    data, status = BAD_UPLOADS[case]
    for response in (
        server.client.post("/predict", content=data, headers={"Content-Type": "audio/wav"}),
        server.client.post("/predict", files={"file": ("x.wav", data)}),
    ):
        assert response.status_code == status, response.text
        assert response.json()["error"]
    assert server.alive()


def test_chunked_uploads_over_the_limit_are_refused(server: Server) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(40):
            yield b"\0" * 65536

    response = server.client.post(
        "/predict", content=chunks(), headers={"Content-Type": "audio/wav"}
    )
    assert response.status_code == 413
    assert server.alive()


@pytest.mark.parametrize(
    ("path", "kwargs", "status"),
    [
        ("/predict", {"content": b"hello", "headers": {"Content-Type": "text/plain"}}, 415),
        ("/predict", {"files": {"other": ("a.wav", b"x")}}, 422),
        ("/v1/models/kws:predict", {"content": b"{not json"}, 400),
        ("/v1/models/kws:predict", {"json": {"instances": [{"b64": "%%%"}]}}, 400),
        ("/v1/models/kws:predict", {"json": {"instances": [{"b64": "aGVsbG8="}]}}, 422),
        ("/v1/models/kws:predict", {"json": {"rows": []}}, 400),
        (
            "/v2/models/kws/infer",
            {"json": {"inputs": [{"name": "x", "datatype": "INT8", "shape": [1], "data": [1]}]}},
            400,
        ),
        (
            "/v2/models/kws/infer",
            {
                "json": {
                    "inputs": [
                        {"name": "audio", "datatype": "BYTES", "shape": [1], "data": ["aGVsbG8="]}
                    ]
                }
            },
            422,
        ),
        ("/v2/models/kws/infer", {"json": {"inputs": "nope"}}, 422),
        ("/v2/models/nothere/infer", {"json": {"inputs": []}}, 404),
    ],
)
def test_protocol_misuse_gets_a_4xx_never_a_5xx(
    server: Server, path: str, kwargs: dict, status: int
) -> None:
    response = server.client.post(path, **kwargs)
    assert response.status_code == status, response.text
    assert "error" in response.json()
    assert server.alive()


def test_admin_reload_needs_the_bearer_token(server: Server) -> None:
    assert server.client.post("/admin/reload").status_code == 401
    wrong = server.client.post("/admin/reload", headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401


def test_a_failed_reload_keeps_the_old_model_serving(server: Server, sample: bytes) -> None:
    response = server.client.post(
        "/admin/reload",
        json={"model": "/no/such/package"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 422 and "still serving" in response.json()["error"]
    after = server.client.post("/predict", files={"file": ("a.wav", sample)})
    assert after.status_code == 200 and after.json()["model"]["version"] == "1"


def test_hot_swap_under_load_fails_no_request_and_never_goes_back(
    server: Server, sample: bytes
) -> None:
    """Register v2, promote it, and keep 4 clients posting while the poller swaps models."""
    run_kws(server.project, "export")  # registers version 2 as challenger
    seen: list[list[str]] = [[] for _ in range(4)]
    failures: list[str] = []
    stop_event = threading.Event()

    def client(index: int) -> None:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            while not stop_event.is_set():
                response = http.post("/predict", files={"file": ("a.wav", sample)})
                if response.status_code != 200:
                    failures.append(f"{response.status_code}: {response.text}")
                else:
                    seen[index].append(response.json()["model"]["version"])

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    time.sleep(1.0)
    run_kws(server.project, "registry", "promote", "2")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not all(s and s[-1] == "2" for s in seen):
        time.sleep(0.2)
    time.sleep(0.5)
    stop_event.set()
    for thread in threads:
        thread.join()

    assert not failures, failures[:3]
    for versions in seen:
        assert versions[0] == "1" and versions[-1] == "2"
        switch = versions.index("2")
        assert set(versions[switch:]) == {"2"}, "a request was answered by v1 after v2"
    assert 'kws_model_info{alias="champion",name="kws"' in server.client.get("/metrics").text
    assert 'version="2"' in server.client.get("/metrics").text


def test_admin_reload_with_the_token_loads_a_given_version(server: Server) -> None:
    response = server.client.post(
        "/admin/reload",
        json={"model": "models:/kws/1"},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert response.status_code == 200, response.text
    assert response.json()["model"] == {"name": "kws", "version": "1", "alias": None}


def test_serve_with_a_missing_model_is_one_error_line(tmp_path: Path) -> None:
    proc = run_kws(tmp_path, "serve", "--model", str(tmp_path / "nothing"), check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[-1].startswith("error:") and "nothing" in lines[-1]
    assert "Traceback" not in proc.stderr


def test_sigterm_stops_the_server(tiny_project: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            str(Path(sys.executable).with_name("kws")),
            "serve",
            "--model",
            "models/package",
            "--port",
            str(port),
        ],
        cwd=tiny_project,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=hermetic_environment(),
        start_new_session=True,
    )
    try:
        wait_for(f"http://127.0.0.1:{port}/v2/health/ready", process)
        os.killpg(process.pid, signal.SIGTERM)
        assert process.wait(timeout=30) is not None
    finally:
        stop(process)


def test_predict_sends_the_answer_before_it_counts_the_clip_for_monitoring(
    tiny_project: Path, sample: bytes, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Input statistics, prediction metrics and the drift window are kept up to date, but
    after the response is sent: the client does not wait for them."""
    import asyncio

    from fastapi import FastAPI

    from kws.serving import model as served_model
    from kws.serving.decode import Limits
    from kws.serving.routes import install

    events: list[str] = []
    statistics_of = served_model.input_statistics

    def counted_statistics(wave: np.ndarray, rate: int) -> dict[str, float]:
        events.append("input statistics")
        return statistics_of(wave, rate)

    monkeypatch.setattr(served_model, "input_statistics", counted_statistics)
    model = served_model.KwsModel("kws", str(tiny_project / "models/package"), Limits(), 1)
    model.load()
    app = FastAPI()
    install(app, model)
    drift = model.snapshot().drift
    assert drift is not None and len(drift) == 0
    messages = iter([{"type": "http.request", "body": sample, "more_body": False}])
    headers = [(b"content-type", b"audio/wav"), (b"content-length", str(len(sample)).encode())]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
        "scheme": "http", "path": "/predict", "raw_path": b"/predict", "query_string": b"",
        "root_path": "", "server": ("test", 80), "client": ("test", 1), "headers": headers,
    }  # fmt: skip

    async def receive() -> dict[str, object]:
        return next(messages)

    async def send(message: dict[str, object]) -> None:
        events.append(f"{message['type']} {message.get('status', '')}".strip())

    asyncio.run(app(scope, receive, send))
    assert events == ["http.response.start 200", "http.response.body", "input statistics"]
    assert len(drift) == 1
