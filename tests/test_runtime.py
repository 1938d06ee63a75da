"""CPU threads: the budget a container allows, the cap on torch's pool, and `--threads`."""

import os

import pytest
import torch

from ovdet import runtime
from ovdet.cli import main as cli


@pytest.fixture
def eight_cpus(monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)


@pytest.fixture
def keep_threads():
    """Run without OMP_NUM_THREADS; put torch's thread count and the variable back after."""
    env, before = os.environ.pop("OMP_NUM_THREADS", None), torch.get_num_threads()
    yield
    torch.set_num_threads(before)
    os.environ.pop("OMP_NUM_THREADS", None)
    if env is not None:
        os.environ["OMP_NUM_THREADS"] = env


@pytest.mark.parametrize("files, expected", [
    ({}, 8),                                                          # no cgroup files: the affinity mask
    ({"cpu.max": "max 100000\n"}, 8),                                 # v2, no quota
    ({"cpu.max": "200000 100000\n"}, 2),                              # v2: docker --cpus 2
    ({"cpu.max": "50000 100000\n"}, 1),                               # half a CPU still gets one thread
    ({"cpu/cpu.cfs_quota_us": "150000", "cpu/cpu.cfs_period_us": "100000"}, 2),  # v1, rounded up
    ({"cpu/cpu.cfs_quota_us": "-1", "cpu/cpu.cfs_period_us": "100000"}, 8),      # v1, no quota
    ({"cpu.max": "3200000 100000\n"}, 8),                             # a quota above the mask
])
def test_cpu_budget(tmp_path, eight_cpus, files, expected):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert runtime.cpu_budget(tmp_path) == expected


def test_threads_are_capped_at_the_budget_unless_omp_says_otherwise(keep_threads, monkeypatch):
    torch.set_num_threads(2)
    monkeypatch.setattr(runtime, "cpu_budget", lambda: 1)
    runtime.resolve_device("cpu")
    assert torch.get_num_threads() == 1
    torch.set_num_threads(2)
    monkeypatch.setenv("OMP_NUM_THREADS", "2")
    assert runtime.limit_cpu_threads() == 2  # the user's explicit choice stands


def test_cli_threads_option(tiny_owlv2, chelsea_path, tmp_path, monkeypatch, keep_threads, capsys):
    torch.set_num_threads(2)
    code = cli(["detect", str(chelsea_path), "--classes", "cat", "--model", str(tiny_owlv2), "--device", "cpu",
                "--threads", "1", "--json", str(tmp_path / "out.json")])
    assert code == 0 and torch.get_num_threads() == 1 and os.environ["OMP_NUM_THREADS"] == "1"
    capsys.readouterr()
    assert cli(["detect", str(chelsea_path), "--classes", "cat", "--threads", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["ovdet: error: --threads must be at least 1, got 0"]
