"""The factoryctl-exporter command as a real process: bad input, serving, TLS, auth, SIGTERM."""

from __future__ import annotations

import base64
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import urllib.error
import urllib.request

import bcrypt
import pytest

from factoryctl.errors import ExitStatus
from factoryctl.lab.procs import ManagedProcess, free_port, port_open, wait_until

EXPORTER = [sys.executable, "-m", "factoryctl.exporter.main"]


def run(*args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*EXPORTER, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def one_line_error(proc: subprocess.CompletedProcess[str], status: ExitStatus, text: str) -> None:
    assert proc.returncode == status, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("factoryctl-exporter: error:")
    assert text in lines[0]
    assert "Traceback" not in proc.stderr


@pytest.fixture
def exporter(tmp_path):
    started: list[ManagedProcess] = []

    def start(*args: str, port: int | None = None) -> tuple[ManagedProcess, int]:
        port = port or free_port()
        proc = ManagedProcess(
            "exporter",
            [*EXPORTER, "--listen", f"127.0.0.1:{port}", "--node-name", "n1", *args],
            tmp_path / f"exporter-{port}.log",
        ).start()
        started.append(proc)
        wait_until(lambda: port_open(port) or not proc.alive(), 20, "the exporter's port")
        assert proc.alive(), proc.log_tail()
        return proc, port

    yield start
    for proc in started:
        proc.stop()


def fetch(
    url: str, auth: str | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, str]:
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10, context=context) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""


@pytest.mark.parametrize(
    "args",
    [
        ["--no-such-flag"],
        ["--collect-interval", "0"],
        ["--simulate", "zero"],
        ["--listen", "nonsense", "--simulate", "1"],
    ],
)
def test_bad_flags(args):
    proc = run(*args)
    one_line_error(proc, ExitStatus.USAGE, "")


def test_port_in_use(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        proc = run("--simulate", "1", "--listen", f"127.0.0.1:{port}")
    one_line_error(proc, ExitStatus.ADDRESS_IN_USE, "address already in use")


def test_missing_tls_file(tmp_path):
    config = tmp_path / "web.yml"
    config.write_text("tls_server_config:\n  cert_file: nope.crt\n  key_file: nope.key\n")
    proc = run(
        "--simulate", "1", "--listen", f"127.0.0.1:{free_port()}", "--web-config", str(config)
    )
    one_line_error(proc, ExitStatus.CONFIG, "nope.crt: no such file")
    proc = run("--simulate", "1", "--web-config", str(tmp_path / "absent.yml"))
    one_line_error(proc, ExitStatus.CONFIG, "absent.yml")


def test_garbage_in_a_map_file(tmp_path):
    (tmp_path / "0").write_text("123\nsh: prolog: not found\n")
    proc = run(
        "--simulate", "1", "--job-map-dir", str(tmp_path), "--listen", f"127.0.0.1:{free_port()}"
    )
    one_line_error(proc, ExitStatus.CONFIG, "0:2: not a job id")


def _nvml_works() -> bool:
    try:
        import pynvml

        pynvml.nvmlInit()
        pynvml.nvmlShutdown()
        return True
    except Exception:
        return False


@pytest.mark.skipif(_nvml_works(), reason="this machine has a working NVML")
def test_no_gpu_is_a_clear_error():
    proc = run("--listen", f"127.0.0.1:{free_port()}")
    one_line_error(proc, ExitStatus.NO_GPU, "NVML")


@pytest.mark.skipif(_nvml_works(), reason="this machine has a working NVML")
def test_allow_no_gpu_serves_self_metrics(exporter):
    _, port = exporter("--allow-no-gpu")
    status, body = fetch(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert 'factoryctl_exporter_build_info{backend="none",version="0.1.0"} 1.0' in body
    assert "factoryctl_gpu_up{" not in body


def test_serves_simulated_gpus_and_stops_cleanly_on_sigterm(exporter):
    proc, port = exporter("--simulate", "3", "--collect-interval", "0.2")
    status, body = fetch(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert body.count("factoryctl_gpu_up{") == 3
    assert fetch(f"http://127.0.0.1:{port}/nope")[0] == 404
    assert proc.proc is not None
    proc.proc.send_signal(signal.SIGTERM)
    assert proc.proc.wait(timeout=10) == 0
    assert "shutting down" in proc.log_tail()
    assert not port_open(port)


def test_import_never_pulls_textual_or_httpx():
    code = (
        "import sys, factoryctl.exporter.main, factoryctl.exporter.nvml, "
        "factoryctl.exporter.simulated\n"
        "bad = [m for m in ('textual', 'httpx') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=30)


@pytest.mark.parametrize(
    ("listen", "expected"),
    [(":9835", ("", 9835)), ("127.0.0.1:0", ("127.0.0.1", 0)), ("[::1]:9100", ("::1", 9100))],
)
def test_parse_listen(listen, expected):
    from factoryctl.exporter.server import parse_listen

    assert parse_listen(listen) == expected


def make_cert(tmp_path) -> None:
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=127.0.0.1", "-keyout", str(tmp_path / "tls.key"),
            "-out", str(tmp_path / "tls.crt"),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_client_certificates_when_required(exporter, tmp_path):
    make_cert(tmp_path)
    config = tmp_path / "web.yml"
    config.write_text(
        "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
        "  client_auth_type: RequireAndVerifyClientCert\n  client_ca_file: tls.crt\n"
    )
    _, port = exporter("--simulate", "1", "--web-config", str(config))
    url = f"https://127.0.0.1:{port}/metrics"
    ctx = ssl.create_default_context(cafile=str(tmp_path / "tls.crt"))
    ctx.check_hostname = False
    with pytest.raises((urllib.error.URLError, ConnectionError, ssl.SSLError)):
        fetch(url, context=ctx)  # no client certificate
    ctx.load_cert_chain(str(tmp_path / "tls.crt"), str(tmp_path / "tls.key"))
    assert fetch(url, context=ctx)[0] == 200


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a certificate")
def test_tls_and_basic_auth_from_a_web_config(exporter, tmp_path):
    make_cert(tmp_path)
    hashed = bcrypt.hashpw(b"s3cret", bcrypt.gensalt(rounds=4)).decode()
    config = tmp_path / "web.yml"
    config.write_text(
        "tls_server_config:\n  cert_file: tls.crt\n  key_file: tls.key\n"
        f"basic_auth_users:\n  prometheus: '{hashed}'\n"
    )
    _, port = exporter("--simulate", "1", "--web-config", str(config))
    ctx = ssl.create_default_context(cafile=str(tmp_path / "tls.crt"))
    ctx.check_hostname = False
    url = f"https://127.0.0.1:{port}/metrics"
    assert fetch(url, context=ctx)[0] == 401
    assert fetch(url, "prometheus:wrong", ctx)[0] == 401
    status, body = fetch(url, "prometheus:s3cret", ctx)
    assert status == 200 and "factoryctl_gpu_up{" in body
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        fetch(f"http://127.0.0.1:{port}/metrics")  # plain HTTP on a TLS port
    # A client that connects and never speaks does not block the others.
    with socket.create_connection(("127.0.0.1", port)):
        assert fetch(url, "prometheus:s3cret", ctx)[0] == 200


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("promtool") is None, reason="needs promtool")
def test_promtool_check_metrics_is_clean(exporter, tmp_path):
    maps = tmp_path / "map"
    maps.mkdir()
    (maps / "0").write_text("42\n43\n")
    _, port = exporter(
        "--simulate", "8", "--sim-processes-per-gpu", "8", "--job-map-dir", str(maps)
    )
    status, body = fetch(f"http://127.0.0.1:{port}/metrics")
    assert status == 200
    assert 'job_id="43"' in body
    lint = subprocess.run(
        ["promtool", "check", "metrics"], input=body, capture_output=True, text=True, timeout=30
    )
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert lint.stdout.strip() == "" and lint.stderr.strip() == ""


def test_man_page_documents_every_option():
    from pathlib import Path

    from factoryctl.exporter.main import cli

    page = (Path(__file__).resolve().parents[2] / "man" / "factoryctl-exporter.8").read_text()
    for param in cli.params:
        for opt in param.opts:
            if opt.startswith("--"):
                assert opt.replace("-", "\\-") in page, f"{opt} missing from the man page"
    for status in (
        ExitStatus.USAGE,
        ExitStatus.CONFIG,
        ExitStatus.NO_GPU,
        ExitStatus.ADDRESS_IN_USE,
    ):
        assert f".B {int(status)}\n" in page
