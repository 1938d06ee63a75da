"""`ovdet video`: detect (and track) in a video file, webcam, network stream or frame folder.

    ovdet video street.mp4 --classes "bus,person" --out annotated.mp4 --jsonl results.jsonl --track

Writes an annotated video (input size and frame rate) and/or one JSON line per frame:
{"frame": i, "time": seconds, "detections": [...]} with the detections in the schema of
`ovdet detect` (plus "track_id" with --track, from an object's first frame on; -1 = a low-score
box that matches no track; "mask" with --masks MODEL, carried with its track between detector
frames, see `ovdet.video.tracking`).

Ctrl-C or SIGTERM stops reading, processes what is queued, closes the video so it plays,
flushes the JSONL and prints a summary (exit 130); a second Ctrl-C aborts at once, still
closing both files. Exit codes otherwise as in `ovdet.cli`: 0 ok, 1 corrupt frames were
skipped, 2 user error (one line on stderr).
"""

from __future__ import annotations

import argparse
import re
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from ..errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PARTIAL, OvdetError



def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {text}")
    return value


def _rate(text: str) -> float:
    value = _seconds(text)
    if value == 0:
        raise argparse.ArgumentTypeError("must be more than 0")
    return value


def add_parser(subparsers: Any, common: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Add the `video` subcommand to `subparsers`; `common` is the parent parser (--debug)."""
    from ..kit.options import add_mask_format_option, add_model_options, add_progress_option, add_vocabulary_options
    from ..kit.runs import add_run_options
    from ..kit.parser import whole_number

    p = subparsers.add_parser(
        "video", parents=[common], help="detect (and track) in videos, webcams and streams",
        description="Detect the named classes in every frame of a video file, webcam, rtsp/http "
                    "stream or frame folder; write an annotated video and/or per-frame JSON lines.",
    )
    p.add_argument("source", metavar="SOURCE",
                   help="video file, webcam index (0), rtsp:// or http(s):// URL, or a folder/glob of frames")
    add_vocabulary_options(p)  # --classes or --classes-from
    add_model_options(p)
    p.add_argument("--out", type=Path, help="annotated video (.mp4, .avi, .mkv, .mov, .m4v) at the input's size and fps; "
                   "only .avi stays readable if the process is killed hard (kill -9, power loss). "
                   "Without --out and --jsonl both go to the run folder runs/video/exp<N>")
    p.add_argument("--jsonl", help="one JSON line per frame to this file ('-' = stdout)")
    add_mask_format_option(p)
    p.add_argument("--no-save", action="store_true", help="write no files; print the summary only")
    p.add_argument("--track", action="store_true", help="ByteTrack ids that persist across frames")
    p.add_argument("--smooth", type=whole_number(0), default=0, metavar="K",
                   help="with --track: average class scores over a track's last K detector runs (0 = off)")
    p.add_argument("--every", type=whole_number(1), default=1, metavar="N",
                   help="run the detector on every Nth frame; the tracker carries boxes in between")
    p.add_argument("--max-frames", type=whole_number(1), metavar="N", help="stop after N frames")
    p.add_argument("--fps", type=_rate, help="frame rate to use instead of the source's (frame folders: 30)")
    p.add_argument("--reconnect", type=whole_number(0), default=5, metavar="N",
                   help="attempts to reopen a stream that drops, with doubling waits (default 5; 0 = none)")
    p.add_argument("--reconnect-delay", type=_seconds, default=1.0, metavar="S",
                   help="seconds before the first reconnection attempt (default 1)")
    p.add_argument("--queue", type=whole_number(1), metavar="N",
                   help="frames buffered between reading and detection (default: the batch size, at least 2); "
                        "a stop finishes these, a live source drops beyond them")
    add_progress_option(p)
    add_run_options(p, "video")
    return p


def output_stem(source: str) -> str:
    """File name stem for a run folder's outputs: the video's own name, webcam<N>, or stream."""
    text = str(source).strip()
    if text.isdigit():
        return f"webcam{text}"
    if "://" in text:
        return "stream"
    stem = re.sub(r"[^\w.-]+", "_", Path(text.rstrip("/\\")).stem).strip("_.")
    return stem or "video"


class _StopOnSignal:
    """First SIGINT/SIGTERM: stop the stream gracefully. Second: abort (KeyboardInterrupt)."""

    def __init__(self, frames: Any):
        self.frames = frames
        self.received: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "_StopOnSignal":
        if threading.current_thread() is threading.main_thread():  # signals only go there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received is not None:
            raise KeyboardInterrupt
        self.received = signum
        self.frames.stop()  # only sets a flag: safe inside a handler

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def run(args: argparse.Namespace) -> int:
    """Run `ovdet video` with parsed `args`; returns the exit code. User errors raise
    `OvdetError` (the CLI prints them in one line)."""
    from ..kit.options import config_overrides, read_vocabulary
    from ..kit.runs import run_dir_for, saved_to
    from ..detector import Detector, resolve_config
    from .reader import FrameReader, ReconnectPolicy
    from .stream import default_queue_size, stream
    from ..files import JsonlWriter
    from .writer import check_video_path

    names = read_vocabulary(args)  # cheap checks first, before opening or loading
    if args.smooth and not args.track:
        raise OvdetError("ovdet video: --smooth averages classes over tracks: add --track")
    if args.out is not None:
        check_video_path(args.out)
    cfg = resolve_config(args.model, device=args.device, **config_overrides(args))
    reader = FrameReader(
        args.source,
        queue_size=args.queue or default_queue_size(cfg.batch_size),
        reconnect=ReconnectPolicy(attempts=args.reconnect, delay=args.reconnect_delay),
        max_frames=args.max_frames,
        fps=args.fps,
    )
    jsonl = None
    out, jsonl_path, save_dir = args.out, args.jsonl, None
    try:
        detector = Detector.from_config(cfg)
        if out is None and jsonl_path is None and not args.no_save:
            save_dir = run_dir_for(args)  # made once the model has loaded
            out = save_dir / f"{output_stem(args.source)}.mp4"
            jsonl_path = str(save_dir / f"{output_stem(args.source)}.jsonl")
        # opened only once the model has loaded: a failed start must not truncate old results
        jsonl = JsonlWriter(jsonl_path) if jsonl_path else None
        warmup = getattr(detector, "warmup", None)  # stream() takes any detector with detect_batch
        # before the clock and before reading starts: the first pass's one-time kernel set-up
        # would otherwise count against the frame rate (and make a live source drop frames)
        warmup_s = warmup(names, (reader.info.height or 720, reader.info.width or 1280)) if warmup else None
        frames = stream(detector, reader, names, track=args.track, every=args.every,
                        batch_size=cfg.batch_size, smooth=args.smooth, max_frames=args.max_frames)
    except BaseException:
        reader.close()
        if jsonl is not None:
            jsonl.close()
        raise
    code = _consume(frames, out, jsonl, progress=not args.no_progress, warmup_s=warmup_s, mask_format=args.mask_format)
    if save_dir is not None:
        print(saved_to(save_dir), file=sys.stderr)
    return code


def _consume(frames: Any, out: Path | None, jsonl: Any, progress: bool, warmup_s: float | None = None,
             mask_format: str = "rle") -> int:
    """Write every record to the outputs; close them whatever happens; print the summary (its
    frame rate counts from the first frame read; `warmup_s`, the model's warm-up, is reported
    beside it)."""
    from ..progress import progress_bar, write_line
    from ..records import frame_record
    from .errors import StreamLostError
    from ..draw import draw_bgr, draw_on_bgr
    from .pipeline import OutputThread
    from .writer import VideoFileWriter

    info = frames.info
    outputs = {"video": None}  # created by the writer thread on the first frame
    n_frames = n_dets = 0
    lost: StreamLostError | None = None
    bar = progress_bar(total=info.frame_count or None, desc="video", unit="frame", enabled=progress, mininterval=0.5)

    def write(rec: Any) -> None:  # on the writer thread: drawing and encoding overlap detection
        if out is not None:
            if outputs["video"] is None:  # the first frame fixes the size (sources may not report it)
                h, w = rec.frame.shape[:2]
                outputs["video"] = VideoFileWriter(out, info.fps, (w, h))
            # the decoded BGR frame is drawn on as it is: no conversion back from RGB
            drawn = draw_on_bgr(rec.frame_bgr, rec.detections) if rec.frame_bgr is not None else \
                draw_bgr(rec.frame, rec.detections)
            outputs["video"].write_bgr(drawn)
        if jsonl is not None:
            jsonl.write(frame_record(rec.index, rec.timestamp, rec.detections, mask_format))

    writer = OutputThread(write, queue_size=8) if (out is not None or jsonl is not None) else None
    start = time.monotonic()
    stopper = _StopOnSignal(frames)
    try:
        with stopper:
            announced = False
            for rec in frames:
                if writer is not None:
                    writer.put(rec)
                n_frames += 1
                n_dets += len(rec.detections)
                bar.update(1)
                if info.live and n_frames % 10 == 0:
                    bar.set_postfix(dropped=frames.stats.dropped, refresh=False)
                if stopper.received is not None and not announced:
                    announced = True
                    write_line("ovdet: stopping: finishing queued frames (again to abort)")
            if writer is not None:
                writer.close()  # every queued frame written; an output error surfaces here
    except StreamLostError as exc:
        lost = exc  # reported after the outputs are closed and the summary is printed
    finally:
        bar.close()
        frames.close()
        try:
            if writer is not None:
                writer.close()  # after an error or interrupt: still write what was queued
        finally:
            video = outputs["video"]
            if video is not None:
                video.close()
            if jsonl is not None:
                jsonl.close()
        elapsed = max(time.monotonic() - start, 1e-9)
        stats = frames.stats
        where = []
        if video is not None:
            where.append(f"video in {out}")
        if jsonl is not None and jsonl.path != "-":
            where.append(f"results in {jsonl.path}")
        print(
            f"ovdet: {'stopped: ' if stopper.received is not None else ''}{n_frames} frames, "
            f"{n_dets} detections in {elapsed:.1f} s ({n_frames / elapsed:.1f} fps); "
            f"dropped {stats.dropped}, corrupt {stats.corrupt}, reconnects {stats.reconnects}"
            + (f"; {', '.join(where)}" if where else "")
            + (f"; model warm-up {warmup_s:.1f} s" if warmup_s is not None else ""),
            file=sys.stderr,
        )
    if lost is not None:
        raise lost
    if stopper.received is not None:
        return EXIT_INTERRUPTED
    return EXIT_PARTIAL if stats.corrupt else EXIT_OK
