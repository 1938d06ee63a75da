"""`ovdet train` as processes: a run killed with SIGKILL and resumed ends with exactly the
weights of an uninterrupted run; two gloo processes under torchrun equal one process on the
same global batch."""

from __future__ import annotations

import json
import os
import signal
import time

import pytest
import torch
from safetensors.torch import load_file

from cli_process import finish, start
from train_data import make_split


def _argv(data, model, out, *extra):
    return ["-m", "ovdet", "train", data, "--model", model, "--out", out, "--mode", "heads", "--batch-size", "4",
            "--lr", "5e-3", "--device", "cpu", "--num-negatives", "4", "--no-report", "--no-progress", "--threads", "1",
            *extra]


def _env():
    return {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _weights(out):
    return load_file(str(out / "model" / "model.safetensors"))


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path, tiny_owlv2):
    data = make_split(tmp_path / "data", "train", ["red square", "blue circle"], 8, seed=3)
    steps = ["--steps", "30", "--save-every", "3"]
    whole = start(_argv(data, tiny_owlv2, tmp_path / "whole", *steps), env=_env())
    killed = start(_argv(data, tiny_owlv2, tmp_path / "cut", *steps), env=_env())
    checkpoint = tmp_path / "cut" / "checkpoint" / "last.pt"
    deadline = time.monotonic() + 120
    while not checkpoint.is_file() and killed.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    os.kill(killed.pid, signal.SIGKILL)
    killed.communicate()
    assert killed.returncode == -signal.SIGKILL and not (tmp_path / "cut" / "model").exists()
    cut_at = torch.load(checkpoint, weights_only=False)["step"]
    assert 3 <= cut_at < 30
    resumed = finish(start(_argv(data, tiny_owlv2, tmp_path / "cut", *steps, "--resume"), env=_env()))
    assert resumed.returncode == 0, resumed.stderr
    done = finish(whole)
    assert done.returncode == 0, done.stderr
    a, b = _weights(tmp_path / "whole"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["box_head.dense0.weight"], load_file(str(tiny_owlv2 / "model.safetensors"))["box_head.dense0.weight"])
    la = json.loads((tmp_path / "whole" / "metrics.json").read_text())["losses"]
    lb = json.loads((tmp_path / "cut" / "metrics.json").read_text())["losses"]
    assert la == lb


def test_ddp_two_gloo_processes_equal_one_process(tmp_path, tiny_owlv2):
    data = make_split(tmp_path / "data", "train", ["red square", "blue circle"], 8, seed=4)
    steps = ["--steps", "4", "--save-every", "0"]
    one = start(_argv(data, tiny_owlv2, tmp_path / "one", *steps), env=_env())
    two = start(["-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port", "29533",
                 *_argv(data, tiny_owlv2, tmp_path / "two", *steps)], env=_env())
    for proc in (one, two):
        done = finish(proc)
        assert done.returncode == 0, done.stderr[-2000:]
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert all(torch.allclose(a[k], b[k], rtol=1e-4, atol=1e-6) for k in a)
    base = load_file(str(tiny_owlv2 / "model.safetensors"))
    assert not torch.allclose(a["class_head.dense0.weight"], base["class_head.dense0.weight"], atol=1e-4)
    la = [e["loss"] for e in json.loads((tmp_path / "one" / "metrics.json").read_text())["losses"]]
    lb = [e["loss"] for e in json.loads((tmp_path / "two" / "metrics.json").read_text())["losses"]]
    assert la == pytest.approx(lb, rel=1e-4)
