"""Device, numeric precision and CPU threads: "auto" resolved once, in one place."""

from __future__ import annotations

import math
import os
from pathlib import Path

import torch

from .errors import ConfigError

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_budget(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: its affinity mask, capped by a cgroup CPU quota (a container
    started with `--cpus 2` on a 64-core host sees 64 CPUs but is allowed 2)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        cpus = os.cpu_count() or 1
    quota = None
    try:  # cgroup v2: "max 100000" or "<quota> <period>"
        q, period = (cgroup_root / "cpu.max").read_text().split()[:2]
        quota = None if q == "max" else int(q) / int(period)
    except (OSError, ValueError):
        try:  # cgroup v1: quota -1 = none
            q = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
            period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
            quota = q / period if q > 0 and period > 0 else None
        except (OSError, ValueError):
            pass
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def limit_cpu_threads() -> int:
    """Cap torch's intra-op threads at `cpu_budget()` unless OMP_NUM_THREADS says otherwise.
    torch sizes its pool from the host's cores, and more threads than allowed CPUs makes every
    matmul wait on the scheduler. Only ever lowers the count. Returns the count in force."""
    if "OMP_NUM_THREADS" not in os.environ:
        budget = cpu_budget()
        if torch.get_num_threads() > budget:
            torch.set_num_threads(budget)
    return torch.get_num_threads()


def resolve_device(device: str) -> torch.device:
    """"auto" -> cuda when available, else cpu. Unknown or unavailable devices are user errors.
    A CPU device also gets torch's threads capped at the CPUs allowed (`limit_cpu_threads`)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} requested but CUDA is not available here; use --device cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ConfigError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) present")
    if dev.type == "cpu":
        limit_cpu_threads()
    return dev


def cpu_has_fast_bf16() -> bool:
    """True on CPUs with AMX or AVX512-BF16 (bf16 matmuls several times faster than fp32)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "amx_bf16" in flags or "avx512_bf16" in flags


def resolve_precision(precision: str, device: torch.device) -> torch.dtype:
    """Map "fp32"/"bf16"/"fp16"/"auto" to the dtype the heavy tower runs in on `device`."""
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if precision == "fp16" and device.type == "cpu":
        raise ConfigError("precision fp16 is for CUDA; on CPU use bf16 (fast with AMX) or fp32")
    return DTYPES[precision]


def lower_precision(modules, dtype: torch.dtype) -> None:
    """Cast the heavy towers' weights to `dtype` once, in place.

    Cheaper than autocast, which re-casts every weight on every call (on a CPU that is a
    large share of a ViT forward). Heads are the callers' choice (`lower_hidden_layers`);
    callers cast activations at the tower boundaries.
    """
    if dtype == torch.float32:
        return
    for module in modules:
        module.to(dtype)


class ReducedPrecisionLinear(torch.nn.Module):
    """A linear layer run in a lower precision inside an fp32 computation: the input is cast
    down, the product accumulates in fp32 inside the kernel, the output is cast back up."""

    def __init__(self, linear: torch.nn.Linear, dtype: torch.dtype):
        super().__init__()
        self.linear = linear.to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.to(self.linear.weight.dtype)).to(x.dtype)


def lower_hidden_layers(parent: torch.nn.Module | None, names, dtype: torch.dtype) -> None:
    """Swap `parent.<name>` linear layers for `ReducedPrecisionLinear`s in `dtype`, in place
    (nothing for fp32, or when `parent` is None)."""
    if parent is None or dtype == torch.float32:
        return
    for name in names:
        setattr(parent, name, ReducedPrecisionLinear(getattr(parent, name), dtype))


def compile_module(module: torch.nn.Module) -> torch.nn.Module:
    """`torch.compile` a tower; the wrapper is a drop-in module (same call signature)."""
    return torch.compile(module, dynamic=True)


def fuse_on_cpu(tower: torch.nn.Module, device: torch.device, dtype: torch.dtype) -> None:
    """In bf16 on a CPU, swap the fused oneDNN layers of `ovdet.cpu_fused` into a CLIP-style
    tower (image or text), in place, where they apply."""
    if device.type == "cpu" and dtype == torch.bfloat16:
        from .cpu_fused import accelerate_tower

        accelerate_tower(tower)


def fast_vision_tower(vision_model: torch.nn.Module, device: torch.device, dtype: torch.dtype,
                      compile: bool = False) -> torch.nn.Module:
    """The image tower to run: `torch.compile`d when asked, otherwise fused on a CPU in bf16
    (`fuse_on_cpu`)."""
    if compile:
        return compile_module(vision_model)
    fuse_on_cpu(vision_model, device, dtype)
    return vision_model
