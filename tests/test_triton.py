"""``export --format triton`` and ``--server``: the repository a tiny model exports, then a REAL Triton
server (the one bundled in the nvidia-pytriton wheel, CPU, 127.0.0.1) serving it, compared with the
local PyTorch Segmenter."""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time

import numpy as np
import pytest
from conftest import save_tiny_bundle
from PIL import Image

from ifseg_deploy.cli.main import main
from ifseg_deploy.errors import IFSegError
from ifseg_deploy.exporter.args import ExportArgs
from ifseg_deploy.exporter.tensorrt.profiles import BUILTIN
from ifseg_deploy.runtime.segmenter import Segmenter
from ifseg_deploy.triton.config import triton_host_config
from ifseg_deploy.triton.repository import MANIFEST, TritonOptions, export_triton

try:
    import pytriton  # noqa: F401
    import tritonclient.grpc  # noqa: F401
    import tritonclient.http  # noqa: F401

    HAVE_SERVER = True
except ImportError:
    HAVE_SERVER = False
needs_server = pytest.mark.skipif(
    not HAVE_SERVER, reason="needs nvidia-pytriton (Linux, Python 3.10-3.12) and tritonclient[all]"
)

CATS = ["sky", "grass", "dog"]
OTHER = ["dog", "sky"]  # the tiny random model labels every pixel 1 with CATS and 0 with OTHER


@pytest.fixture(scope="module")
def model(tmp_path_factory, bpe_dir):
    folder = tmp_path_factory.mktemp("triton")
    return save_tiny_bundle(folder / "tiny.safetensors", categories=CATS, bpe_dir=bpe_dir)


@pytest.fixture(scope="module")
def repo(model, bpe_dir):
    """Exported at the model's own resolution (128) with a long batching window, so concurrent requests meet."""
    out = os.path.join(os.path.dirname(model), "repo")
    return export_triton(
        model,
        ExportArgs(format="triton", out=out, bpe_dir=bpe_dir, imgsz=128),
        TritonOptions(max_queue_delay_us=100_000),
    )


@pytest.fixture(scope="module")
def local(model, bpe_dir):
    return Segmenter.load(model, bpe_dir=bpe_dir, device="cpu")


def images():
    rng = np.random.default_rng(7)
    return [rng.integers(0, 256, shape, dtype=np.uint8) for shape in [(128, 128, 3), (150, 200, 3), (97, 131, 3)]]


# -------------------------------------------------------------------------- the repository


def test_repository_layout_and_validation(repo, bpe_dir):
    root = repo.path
    for rel in [
        "README.md",
        MANIFEST,
        "ifseg/config.pbtxt",
        "ifseg/1/model.py",
        "ifseg/1/model.vocab.safetensors",
        "ifseg_network/config.pbtxt",
        "ifseg_network/1/model.onnx",
        "ifseg_network/1/model.py",
    ]:
        assert os.path.isfile(os.path.join(root, rel)), rel
    for name in ("encoder.json", "vocab.bpe", "dict.txt"):  # the server reads only the repository
        with (
            open(os.path.join(root, "ifseg", "1", "bpe", name), "rb") as a,
            open(os.path.join(bpe_dir, name), "rb") as b,
        ):
            assert a.read() == b.read()
    assert not [f for f in os.listdir(os.path.dirname(root)) if f.startswith(".repo")], "staging folder left behind"
    host = open(os.path.join(root, "ifseg", "config.pbtxt")).read()
    assert 'backend: "python"' in host
    assert "max_batch_size: 4" in host  # desktop-rtx: batch up to 4
    assert "max_queue_delay_microseconds: 100000" in host
    assert 'string_value: "sky, grass, dog"' in host
    net = open(os.path.join(root, "ifseg_network", "config.pbtxt")).read()
    assert "max_batch_size: 0" in net
    assert "kind: KIND_CPU" in net
    assert 'name: "prompt_embeds"' in net
    manifest = json.load(open(os.path.join(root, MANIFEST)))
    assert manifest["network"] == "python"
    assert manifest["categories"] == CATS
    assert "python -m ifseg_deploy.triton.local_server" in open(os.path.join(root, "README.md")).read()
    assert any("identical labels" in line for line in repo.checks)
    if HAVE_SERVER:
        assert any("valid Triton ModelConfig" in line for line in repo.checks)


def test_native_onnx_network_from_an_earlier_export(repo, tmp_path, bpe_dir):
    """--network onnx (Triton's onnxruntime_onnx backend, GPU) from an exported .onnx with its side file."""
    import shutil

    shutil.copyfile(os.path.join(repo.path, "ifseg_network", "1", "model.onnx"), tmp_path / "m.onnx")
    shutil.copyfile(os.path.join(repo.path, "ifseg", "1", "model.vocab.safetensors"), tmp_path / "m.vocab.safetensors")
    out = export_triton(
        str(tmp_path / "m.onnx"),
        ExportArgs(format="triton", out=str(tmp_path / "r"), bpe_dir=bpe_dir, profile="datacenter"),
        TritonOptions(network="onnx"),
    )
    net = open(os.path.join(out.path, "ifseg_network", "config.pbtxt")).read()
    assert 'platform: "onnxruntime_onnx"' in net
    assert "count: 2 kind: KIND_GPU" in net
    assert 'name: "tensorrt"' in net
    assert sorted(os.listdir(os.path.join(out.path, "ifseg_network", "1"))) == ["model.onnx"]
    assert "max_batch_size: 16" in open(os.path.join(out.path, "ifseg", "config.pbtxt")).read()
    assert any("identical labels" in line for line in out.checks)


def test_host_pipeline_answers_each_item(repo, local):
    """The server-side logic without a server: one bad item does not spoil the others of its batch."""
    from ifseg_deploy.runtime.sidecar import read_vocab
    from ifseg_deploy.triton.host import HostItem, HostPipeline, NetworkRunner
    from ifseg_deploy.triton.names import GRAPH_META, REJECTED

    side = read_vocab(os.path.join(repo.path, "ifseg", "1", "model.onnx"))  # the side file is named after the graph
    meta = {"arch": side.meta["arch"], "export": side.meta["export"]}
    network = NetworkRunner(os.path.join(repo.path, "ifseg_network", "1"), {GRAPH_META: json.dumps(meta)})
    calls = []

    def call(feeds, names):
        calls.append(feeds["images"].shape)
        return network.run(feeds)

    pipeline = HostPipeline(
        os.path.join(repo.path, "ifseg", "1"), call, {"categories": ", ".join(CATS), "max_batch": "4"}
    )
    rgb = images()[0]
    out = pipeline.run(
        [
            HostItem(rgb),
            HostItem(b"not an image", "sky"),
            HostItem(rgb, "sky,,dog"),
            HostItem(rgb.copy(), ", ".join(CATS)),
            HostItem(rgb, ", ".join(OTHER)),
        ]
    )
    assert "cannot decode IMAGE as an image" in out[1]
    assert not out[1].startswith(REJECTED)
    assert out[2].startswith(f"{REJECTED}: ")
    assert "empty category name" in out[2]
    local.set_categories(CATS)
    want = local.segment(rgb)
    for res in (out[0], out[3]):  # no list = the stored list
        np.testing.assert_array_equal(res.labels, want.labels)
        assert res.categories == CATS
    assert out[4].categories == OTHER
    assert sorted(c[0] for c in calls) == [1, 2]  # the two CATS images shared one forward pass


def test_host_pipeline_decodes_as_segment_does(repo, local, tmp_path):
    """A bomb among good images fails alone; a phone photo's EXIF orientation is applied, as by `segment`."""
    import io

    from test_output_policy import _png_declaring

    from ifseg_deploy.runtime.sidecar import read_vocab
    from ifseg_deploy.triton.host import HostItem, HostPipeline, NetworkRunner
    from ifseg_deploy.triton.names import GRAPH_META

    side = read_vocab(os.path.join(repo.path, "ifseg", "1", "model.onnx"))
    network = NetworkRunner(
        os.path.join(repo.path, "ifseg_network", "1"),
        {GRAPH_META: json.dumps({"arch": side.meta["arch"], "export": side.meta["export"]})},
    )
    pipeline = HostPipeline(
        os.path.join(repo.path, "ifseg", "1"),
        lambda feeds, names: network.run(feeds),
        {"categories": ", ".join(CATS), "max_batch": "4"},
    )
    rgb = images()[1]
    stored = Image.fromarray(rgb)
    exif = stored.getexif()
    exif[0x0112] = 6  # stored sideways: shown rotated 90 degrees clockwise
    buf = io.BytesIO()
    stored.save(buf, format="PNG", exif=exif.tobytes())
    (tmp_path / "phone.png").write_bytes(buf.getvalue())
    bomb = _png_declaring(tmp_path / "bomb.png", 13500, 13500).read_bytes()
    out = pipeline.run([HostItem(buf.getvalue()), HostItem(bomb), HostItem(rgb)])
    assert isinstance(out[1], str)
    assert "megapixels" in out[1]
    local.set_categories(CATS)
    want = local.segment(str(tmp_path / "phone.png"))
    assert out[0].labels.shape == want.labels.shape == (200, 150)
    np.testing.assert_array_equal(out[0].labels, want.labels)
    np.testing.assert_array_equal(out[2].labels, local.segment(rgb).labels)


def test_server_urls():
    from ifseg_deploy.triton.client import parse_server_url

    assert parse_server_url("grpc://gpu-box") == ("grpc", "gpu-box:8001")
    assert parse_server_url("http://10.0.0.2:9000") == ("http", "10.0.0.2:9000")
    assert parse_server_url("localhost:8001") == ("grpc", "localhost:8001")
    with pytest.raises(IFSegError, match="expected grpc://HOST:8001"):
        parse_server_url("http://host:8000/models/ifseg")


def test_host_config_follows_the_profile():
    text = triton_host_config(BUILTIN["datacenter"], 500, {"role": 'a "quoted" value'})
    assert "max_batch_size: 16" in text
    assert "count: 2 kind: KIND_CPU" in text
    assert "max_queue_delay_microseconds: 500" in text
    assert 'string_value: "a \\"quoted\\" value"' in text


def test_export_refuses_bad_settings(model, tmp_path, bpe_dir):
    cfg = ExportArgs(format="triton", out=str(tmp_path / "r"), bpe_dir=bpe_dir, imgsz=64)
    with pytest.raises(IFSegError, match="network='tflite'"):
        export_triton(model, cfg, TritonOptions(network="tflite"))
    with pytest.raises(IFSegError, match="up-samples"):
        export_triton(model, dataclasses.replace(cfg, upsample="in-graph"))
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "keep.txt").write_text("x")
    with pytest.raises(IFSegError, match="already holds files that are not an ifseg-deploy triton export"):
        export_triton(model, dataclasses.replace(cfg, out=str(tmp_path / "taken")))
    assert (tmp_path / "taken" / "keep.txt").read_text() == "x"


def test_server_flag_errors_need_no_server(capsys, tmp_path):
    Image.fromarray(images()[0]).save(tmp_path / "a.png")
    assert main(["segment", str(tmp_path / "a.png"), "--server", "ftp://host"]) == 2
    assert "expected grpc://HOST:8001" in capsys.readouterr().err
    assert main(["bench", "--checkpoint", "x.pt", "--clients", "4"]) == 2
    assert "--clients needs --server" in capsys.readouterr().err


# -------------------------------------------------------------------------- a real server


@pytest.fixture(scope="module")
def server(repo):
    from ifseg_deploy.triton.local_server import LocalTritonServer

    srv = LocalTritonServer(repo.path)
    srv.start()
    yield srv
    srv.stop()


@contextlib.contextmanager
def silent_server():
    """A TCP port on 127.0.0.1 that accepts connections and never sends a byte."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(8)
    accepted = []

    def accept() -> None:
        while True:
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                return

    threading.Thread(target=accept, daemon=True).start()
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()
        for conn in accepted:
            conn.close()


def connect(server, protocol="grpc", **kwargs):
    from ifseg_deploy.triton.client import connect

    return connect(server.grpc_url if protocol == "grpc" else server.http_url, **kwargs)


@needs_server
def test_server_labels_equal_local_segmenter(server, local):
    client = connect(server)
    for cats in (CATS, OTHER):
        client.set_categories(cats)
        local.set_categories(cats)
        for rgb in images():
            got, want = client.segment(rgb), local.segment(rgb)
            assert got.labels.shape == rgb.shape[:2]
            assert got.categories == cats
            np.testing.assert_array_equal(got.labels, want.labels)
            np.testing.assert_allclose(got.probs, want.probs, atol=1e-4)
    client.close()


@needs_server
def test_http_and_encoded_files(server, local, tmp_path):
    path = str(tmp_path / "photo.png")
    rgb = images()[1]
    Image.fromarray(rgb).save(path)
    client = connect(server, "http", raw=False)
    assert client.categories == CATS  # the stored list is the default
    got = client.segment_batch([path, path, rgb], batch_size=2)
    local.set_categories(CATS)
    want = local.segment(rgb).labels
    for res in got:
        np.testing.assert_array_equal(res.labels, want)
        assert res.probs.shape == (8, 11, 0)  # labels only; 150x200 pre-processes to 128x171: an 8x11 grid
    client.close()


@needs_server
def test_two_category_lists_in_concurrent_requests(server, local):
    rgb = images()[0]
    expected = {}
    for cats in (CATS, OTHER):
        local.set_categories(cats)
        expected[tuple(cats)] = local.segment(rgb).labels
    answers, errors = {}, []

    def ask(cats):
        try:
            client = connect(server, categories=cats, raw=False)
            answers[tuple(cats)] = [client.segment(rgb).labels for _ in range(3)]
            client.close()
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=ask, args=(c,)) for c in (CATS, OTHER)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert not np.array_equal(expected[tuple(CATS)], expected[tuple(OTHER)])  # the check can tell them apart
    for key, labels in answers.items():
        for got in labels:
            np.testing.assert_array_equal(got, expected[key])


@needs_server
def test_four_clients_are_batched(server):
    from ifseg_deploy.bench.triton_load import run_server_benchmark

    report = run_server_benchmark(lambda: connect(server, raw=False), images()[0], clients=4, warmup=1, iterations=4)
    assert len(report.latencies_ms) == 16
    assert report.inference_count == 16
    assert report.average_batch is not None
    assert report.average_batch > 1.0
    assert report.execution_count < 16


@needs_server
def test_one_line_errors(server, capsys, tmp_path):
    from ifseg_deploy.triton.client import TritonBackend
    from ifseg_deploy.triton.local_server import free_port

    with pytest.raises(IFSegError, match="cannot reach a Triton server"):
        TritonBackend(f"grpc://127.0.0.1:{free_port()}")
    with pytest.raises(IFSegError, match="model 'nope' is not ready"):
        connect(server, model="nope")
    with silent_server() as port:  # accepts connections, never answers: a deterministic timeout
        for protocol in ("grpc", "http"):
            with pytest.raises(IFSegError, match="within timeout=0.3 s"):
                TritonBackend(f"{protocol}://127.0.0.1:{port}", timeout=0.3)
    client = connect(server, categories=["sky", "x y " * 600])  # a prompt longer than the model's 1026 positions
    with pytest.raises(IFSegError, match="server rejected the category list: the prompt has"):
        client.segment(images()[0])
    Image.fromarray(images()[0]).save(tmp_path / "a.png")
    assert (
        main(
            [
                "segment",
                str(tmp_path / "a.png"),
                "--server",
                server.grpc_url,
                "--knn-k",
                "5",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    assert (
        main(
            [
                "segment",
                str(tmp_path / "a.png"),
                "--server",
                server.grpc_url,
                "--window",
                "64",
                "--out",
                str(tmp_path / "out"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2
    assert "kNN k=3" in err[0]
    assert "--window do not apply to --server" in err[1]


@needs_server
def test_cli_outputs_match_local(server, model, bpe_dir, tmp_path, capsys):
    paths = []
    for i, rgb in enumerate(images()):
        paths.append(str(tmp_path / f"im{i}.png"))
        Image.fromarray(rgb).save(paths[-1])
    common = ["--categories", "grass, dog", "--save-raw"]
    assert main(["segment", *paths, "--server", server.grpc_url, "--out", str(tmp_path / "srv"), *common]) == 0
    assert (
        main(["segment", *paths, "--checkpoint", model, "--bpe-dir", bpe_dir, "--out", str(tmp_path / "loc"), *common])
        == 0
    )
    for i in range(len(paths)):
        for suffix in ("labels.png", "overlay.png"):
            a, b = (tmp_path / d / f"im{i}_{suffix}" for d in ("srv", "loc"))
            assert a.read_bytes() == b.read_bytes(), a
    assert (
        main(
            [
                "bench",
                "--server",
                server.grpc_url,
                "--source-size",
                "128",
                "--clients",
                "2",
                "--iters",
                "2",
                "--warmup",
                "0",
            ]
        )
        == 0
    )
    assert "Concurrency: 2, throughput:" in capsys.readouterr().out


@needs_server
def test_server_killed_mid_stream_is_one_line(server, tmp_path):
    """Last: it kills the module's server."""
    import cv2

    from ifseg_deploy.stream import OutputOptions, Stream, run_stream

    video = str(tmp_path / "v.avi")
    writer = cv2.VideoWriter(video, cv2.VideoWriter_fourcc(*"MJPG"), 10, (128, 96))
    for i in range(100):
        writer.write(np.full((96, 128, 3), i * 2, np.uint8))
    writer.release()
    client = connect(server, raw=False, timeout=30)
    infer, calls = client.infer, []

    def killing_infer(batch):
        calls.append(len(calls))
        if len(calls) == 3:
            server.kill()
        return infer(batch)

    client.infer = killing_infer
    t0 = time.monotonic()
    with pytest.raises(IFSegError) as info:
        run_stream(Stream(client, video), OutputOptions(save=str(tmp_path / "out.avi"), progress=False))
    assert time.monotonic() - t0 < 20
    msg = str(info.value)
    assert "\n" not in msg
    assert msg.startswith(f"lost the connection to the Triton server at {server.grpc_url}")
    saved = tmp_path / "out.avi"  # what was written before the loss is finalised, never half-written
    if saved.exists():
        cap = cv2.VideoCapture(str(saved))
        assert cap.isOpened()
        assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) >= 1
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".out.avi")]
