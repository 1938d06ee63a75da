"""onnxruntime sessions of an export folder, its tokenizer, and the identity of its text tower."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ...errors import ConfigError, OvdetError


def _ort():
    try:
        import onnxruntime
    except ImportError as exc:
        raise OvdetError("running an ONNX export needs onnxruntime: pip install 'ovdet[onnx]'") from exc
    return onnxruntime


def providers_for(device: str) -> list:
    """onnxruntime execution providers for a config's `device` ("auto": CUDA when this
    onnxruntime build has it, else the CPU)."""
    available = _ort().get_available_providers()
    if device == "auto":
        return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device.startswith("cuda"):
        if "CUDAExecutionProvider" not in available:
            raise ConfigError(f"device {device!r}: this onnxruntime has no CUDA provider (pip install onnxruntime-gpu)")
        index = int(device.split(":")[1]) if ":" in device else 0
        return [("CUDAExecutionProvider", {"device_id": index}), "CPUExecutionProvider"]
    raise ConfigError(f"unknown device {device!r}: use auto, cpu, cuda or cuda:N")


def cpu_threads() -> int:
    """$OMP_NUM_THREADS (what --threads sets), else the CPUs this process may use."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit():
        return max(1, int(os.environ["OMP_NUM_THREADS"]))
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Runner:
    """The sessions of one export folder (created on first use) and its tokenizer."""

    def __init__(self, folder: Path, manifest: dict, device: str = "auto"):
        self.folder, self.manifest = folder, manifest
        self.providers = providers_for(device)
        first = self.providers[0] if isinstance(self.providers[0], str) else self.providers[0][0]
        self.device = "cuda" if first == "CUDAExecutionProvider" else "cpu"
        self._sessions: dict = {}
        self.tokenizer = PromptTokenizer(folder, manifest["tokenizer"])
        text = folder / manifest["graphs"]["text"]["file"]
        st = text.stat()
        # names the text tower in vocabulary-cache keys: the export, not the torch checkpoint
        # (an fp16 export's embeddings differ from the checkpoint's)
        self.identity = f"onnx:{folder.resolve()}|{text.name}:{st.st_size}:{st.st_mtime_ns}"

    def session(self, name: str):
        if name not in self._sessions:
            ort = _ort()
            options = ort.SessionOptions()
            options.intra_op_num_threads = cpu_threads()
            options.log_severity_level = 3  # warnings about unused initialisers etc. are noise here
            # idle workers sleep instead of spinning: spinning threads steal the CPU from the
            # image-reading thread, from torch in the same process and from other processes
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
            path = self.folder / self.manifest["graphs"][name]["file"]
            if not path.is_file():
                raise ConfigError(f"{path} is missing: the export folder is incomplete (export again)")
            self._sessions[name] = ort.InferenceSession(str(path), options, providers=self.providers)
        return self._sessions[name]

    def run(self, name: str, **inputs: np.ndarray) -> list[np.ndarray]:
        """Outputs of graph `name`, in the manifest's order."""
        return self.session(name).run(None, inputs)


class PromptTokenizer:
    """Prompts -> (input_ids, attention_mask) int64 (N, T), with the exported tokenizer.json
    (the `tokenizers` library: no transformers, no torch). Truncation keeps the end-of-text
    token, as transformers' `truncation=True` does; padding to the context length
    ("max_length", OWL) or to the longest prompt ("longest", CLIP)."""

    def __init__(self, folder: Path, entry: dict):
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_file(str(folder / entry["file"]))
        self.tokenizer.no_padding()
        self.tokenizer.enable_truncation(int(entry["max_length"]))
        self.max_length, self.pad_id, self.pad_to = int(entry["max_length"]), int(entry["pad_id"]), entry["pad_to"]

    def ids(self, texts: list[str]) -> list[list[int]]:
        return [e.ids for e in self.tokenizer.encode_batch(texts)]

    def pad(self, ids: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
        length = self.max_length if self.pad_to == "max_length" else max(len(i) for i in ids)
        input_ids = np.full((len(ids), length), self.pad_id, np.int64)
        mask = np.zeros((len(ids), length), np.int64)
        for row, seq in enumerate(ids):
            input_ids[row, : len(seq)] = seq
            mask[row, : len(seq)] = 1
        return input_ids, mask
