"""Random full-size ultralytics models for tests (imported by test_yolo.py and test_cuda.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch


def save_random(kind: str, cfg_yaml: str, path: Path, seed: int = 0) -> Path:
    """A randomly initialised ultralytics model built from its YAML, saved like ultralytics does."""
    from ovdet.backends.yolo import ultralytics_offline

    ultralytics_offline()
    from ultralytics import YOLO, YOLOWorld

    torch.manual_seed(seed)
    (YOLOWorld if kind == "world" else YOLO)(cfg_yaml).save(str(path))
    return path


def unit_variance_(model, x: torch.Tensor) -> None:
    """Rescale every convolution so its output has unit standard deviation on `x` (one pass,
    in order, like LSUV initialisation). ultralytics' random init shrinks activations ~4x per
    layer (to 1e-10 at the head), so every box and score would be the same constant and a
    precision comparison would be empty; rescaled, the network behaves like a trained one
    numerically (unit-scale features, spread-out box distributions and scores)."""

    def rescale(module, inputs, out):
        s = out.float().std().clamp_min(1e-12)
        module.weight.div_(s)
        if module.bias is not None:
            module.bias.div_(s)
        return out / s

    hooks = [m.register_forward_hook(rescale) for name, m in model.named_modules()
             if isinstance(m, torch.nn.Conv2d) and not name.endswith("dfl.conv")]  # DFL: fixed 0..15 bins
    with torch.no_grad():
        model(x)
        for h in hooks:
            h.remove()
        for contrastive in model.model[-1].cv4:
            contrastive.bias.fill_(-2.0)  # scores spread over (0, 1) instead of sigmoid(-10)


def save_unit_world(world_pt: Path, image: np.ndarray, imgsz: int, path: Path) -> Path:
    """`world_pt` with unit-variance activations on `image`, saved the way ultralytics saves."""
    from ultralytics import YOLOWorld

    from ovdet.backends.yolo import YoloRunner

    ref = YOLOWorld(str(world_pt))
    net = ref.model.float().eval()
    unit_variance_(net, YoloRunner(net, torch.device("cpu"), imgsz).preprocess([image]))
    for p in net.parameters():
        p.requires_grad_(True)  # ultralytics' trainer state: save() stores it as it finds it
    ref.save(str(path))
    return path
