"""`ovdet serve` as a user runs it, in a subprocess: graceful SIGTERM / SIGINT with requests in
flight, and one-line errors."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import pytest


def start(*args, env_extra=None) -> tuple[subprocess.Popen, str]:
    """Start `ovdet serve` on a free port; (process, base URL) once its model is loaded."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    proc = subprocess.Popen([sys.executable, "-m", "ovdet", "serve", "--port", "0", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    first = proc.stdout.readline()
    match = re.search(r"serving (http://\S+)", first)
    assert match, first + proc.stdout.read()
    url = match.group(1)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz").status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise AssertionError("server not ready: " + proc.stdout.read())


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_with_requests_in_flight_finishes_them_and_exits_0(tiny_owlv2, chelsea_path, sig):
    # a long batch wait keeps the requests in flight when the signal arrives
    proc, url = start("--model", tiny_owlv2, "--batch-wait-ms", 2000, "--max-batch", 16)
    answers = []

    def ask():
        with httpx.Client(timeout=60) as c:
            answers.append(c.post(f"{url}/v1/detect", files={"image": ("c.jpg", chelsea_path.read_bytes())},
                                  data={"classes": "cat,dog", "threshold": "0"}))

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:  # all four queued for the model
        if "ovdet_queue_depth 4.0" in httpx.get(f"{url}/metrics").text:
            break
        time.sleep(0.02)
    else:
        raise AssertionError("requests never reached the queue")
    proc.send_signal(sig)
    for t in threads:
        t.join(60)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert [a.status_code for a in answers] == [200] * 4
    assert all(len(a.json()["detections"]) > 0 for a in answers)  # threshold 0: real answers
    assert "server stopped" in out
    with pytest.raises(httpx.TransportError):  # and it no longer listens
        httpx.get(f"{url}/healthz", timeout=2)


def run_cli(*args, env_extra=None):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "ovdet", "serve", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=120)


def one_line(proc) -> str:
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert proc.returncode == 2 and len(lines) == 1, (proc.returncode, proc.stderr)
    return lines[0]


def test_usage_errors_are_one_line(tiny_owlv2):
    assert "unknown preset" in one_line(run_cli("--model", "owlv9-b16"))
    assert "max_batch" in one_line(run_cli("--model", tiny_owlv2, "--max-batch", "0"))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert f"cannot listen on 127.0.0.1:{port}" in one_line(run_cli("--model", tiny_owlv2, "--port", port))


def test_model_that_fails_to_load_stops_the_server_with_exit_2(tiny_owlv2, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text((tiny_owlv2 / "config.json").read_text())  # no weights, no processor
    proc = run_cli("--model", broken, "--port", "0")
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("ovdet: ")
