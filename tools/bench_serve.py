#!/usr/bin/env python
"""Throughput and latency of `ovdet serve` with cross-request batching on and off.

Two servers run in this process on the same model (random weights, full-size architecture by
default): one batching (--max-batch, --batch-wait-ms), one not (max_batch 1). Clients send the
same 640x480 image with a DIFFERENT vocabulary per request (what a shared server sees), at each
concurrency; rounds alternate between the two servers (interleaved) and the medians of the
rounds are reported: requests/s, p50 and p99 latency, mean images per image-tower pass.

    python tools/bench_serve.py                                   # OWL-ViT B/32, CPU
    python tools/bench_serve.py --model owlv2-b16 --device cuda --concurrency 1,4,16,64
    python tools/bench_serve.py --model tiny                      # tiny random model: the HTTP path

The clients are threads of this process (httpx): on a small CPU they take some of its time,
equally for both servers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
sys.path.insert(0, str(ROOT))

VOCABULARIES = ["person,bicycle,car", "cat,dog", "bus,truck,traffic light,stop sign", "bird,horse",
                "backpack,umbrella,handbag", "bottle,cup", "chair,laptop,bench", "motorcycle,person",
                "dog,frisbee", "car,traffic light", "cup,laptop,cat", "umbrella,person,bench",
                "horse,person", "truck", "bicycle,backpack", "bird,bench,dog"]


def build_model(name: str, work: Path) -> Path:
    if name == "tiny":
        import make_tiny_models

        return make_tiny_models.make_owl("owlv2", work / "tiny")
    if name in ("owlvit-b32", "owlv2-b16"):
        import bench

        return bench.save_owl(name, work / name)
    return Path(name)  # a checkpoint folder


def one_round(url: str, payload: bytes, concurrency: int, requests: int) -> dict:
    """`requests` detections by `concurrency` client threads; latencies in seconds."""
    import httpx

    latencies: list[float] = []
    errors: list[str] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def client():
        with httpx.Client(base_url=url, timeout=300) as c:
            while True:
                with lock:
                    i = next(counter, None)
                if i is None:
                    return
                start = time.perf_counter()
                r = c.post("/v1/detect", files={"image": ("bench.jpg", payload, "image/jpeg")},
                           data={"classes": VOCABULARIES[i % len(VOCABULARIES)]})
                took = time.perf_counter() - start
                with lock:
                    (latencies.append(took) if r.status_code == 200 else errors.append(r.text))

    threads = [threading.Thread(target=client) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise SystemExit(f"requests failed: {errors[0]}")
    lat = sorted(latencies)
    return {"rps": len(lat) / wall, "p50": lat[len(lat) // 2],
            "p99": lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]}


def batch_stats(app) -> tuple[float, float]:
    reg = app.state.metrics.registry
    return (reg.get_sample_value("ovdet_batch_size_sum", {"kind": "detect"}) or 0.0,
            reg.get_sample_value("ovdet_batch_size_count", {"kind": "detect"}) or 0.0)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="owlvit-b32", help="owlvit-b32, owlv2-b16 (full size, random weights), tiny, "
                   "or a checkpoint folder")
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--concurrency", default="1,4,16")
    p.add_argument("--requests", type=int, default=0, help="requests per round (default: 4 x concurrency, >= 8)")
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds per setting; medians reported")
    p.add_argument("--max-batch", type=int, default=16)
    p.add_argument("--batch-wait-ms", type=float, default=10.0)
    p.add_argument("--json", help="write the results as JSON here")
    args = p.parse_args(argv)

    import cv2
    import numpy as np
    import torch
    from transformers.utils import logging as hf_logging

    from ovdet import Detector
    from ovdet.serve.app import ServedModels, create_app
    from ovdet.serve.background import serve_in_thread
    from ovdet.serve.limits import ServeSettings

    hf_logging.set_verbosity_error()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    image = cv2.GaussianBlur(rng.integers(0, 256, (480, 640, 3), dtype=np.uint8), (0, 0), 3)
    payload = cv2.imencode(".jpg", image)[1].tobytes()
    levels = [int(c) for c in args.concurrency.split(",")]
    modes = {"batching": ServeSettings(max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, max_queue=1024,
                                       timeout=600),
             "no batching": ServeSettings(max_batch=1, batch_wait_ms=0, max_queue=1024, timeout=600)}
    results: dict = {"model": args.model, "device": args.device, "threads": args.threads,
                     "max_batch": args.max_batch, "batch_wait_ms": args.batch_wait_ms, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = build_model(args.model, Path(tmp))

        def load():
            return ServedModels(Detector.from_pretrained(folder, device=args.device, precision=args.precision,
                                                         threshold=0.1))

        apps = {m: create_app(load, s) for m, s in modes.items()}
        with serve_in_thread(apps["batching"]) as url_on, serve_in_thread(apps["no batching"]) as url_off:
            urls = {"batching": url_on, "no batching": url_off}
            from ovdet.runtime import resolve_precision

            det = apps["batching"].state.service.models.detector
            precision = str(resolve_precision(det.config.precision, det.device)).replace("torch.", "")
            results["precision"] = precision
            for url in urls.values():  # warm up: first passes, text embeddings of every vocabulary
                one_round(url, payload, 4, len(VOCABULARIES))
            print(f"model {args.model} ({precision}), device {args.device}, {torch.get_num_threads()} threads, "
                  f"max_batch {args.max_batch}, batch_wait_ms {args.batch_wait_ms:g}")
            print(f"{'mode':<12} {'conc':>4} {'req/s':>8} {'p50 ms':>9} {'p99 ms':>9} {'img/pass':>9}")
            for conc in levels:
                n = args.requests or max(8, 4 * conc)
                rounds: dict[str, list[dict]] = {m: [] for m in modes}
                before = {m: batch_stats(apps[m]) for m in modes}
                for _ in range(args.rounds):
                    for mode, url in urls.items():  # interleaved: the machine's drift hits both alike
                        rounds[mode].append(one_round(url, payload, conc, n))
                for mode in modes:
                    s, c = batch_stats(apps[mode])
                    per_pass = (s - before[mode][0]) / max(c - before[mode][1], 1)
                    row = {"mode": mode, "concurrency": conc, "requests_per_round": n,
                           **{k: statistics.median(r[k] for r in rounds[mode]) for k in ("rps", "p50", "p99")},
                           "images_per_pass": per_pass}
                    results["runs"].append(row)
                    print(f"{mode:<12} {conc:>4} {row['rps']:>8.2f} {row['p50'] * 1e3:>9.0f} {row['p99'] * 1e3:>9.0f} "
                          f"{per_pass:>9.2f}", flush=True)
                on, off = (next(r for r in results["runs"] if r["mode"] == m and r["concurrency"] == conc)
                           for m in ("batching", "no batching"))
                print(f"{'':<12} {conc:>4} batching/no batching: {on['rps'] / off['rps']:.2f}x req/s", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
