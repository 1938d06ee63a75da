"""Video: files, webcams, network streams and frame folders through detection and tracking.

    from ovdet.video import stream
    for rec in stream(detector, "clip.mp4", ["cat", "dog"], track=True):
        rec.index, rec.timestamp, rec.frame, rec.detections

Modules, one job each: `sources` (what SOURCE names; opening it), `frames` (what the
reader hands out: RGB frames, source info, counters), `reader` (background reading,
bounded queue, drops, reconnection), `tracking` (ByteTrack ids, class smoothing,
boxes between detector runs), `writer` (annotated video, JSONL; drawing is `ovdet.draw`),
`stream` (the pipeline), `command` (`ovdet video`).
"""

from .errors import SourceError, SourceOpenError, StreamLostError, VideoWriteError
from .frames import ReconnectPolicy, SourceInfo
from .reader import FrameReader
from .sources import Source, parse_source
from .stream import FrameRecord, FrameStream, stream
from .tracking import TrackSettings

__all__ = [
    "FrameReader", "FrameRecord", "FrameStream", "ReconnectPolicy", "Source", "SourceError",
    "SourceInfo", "SourceOpenError", "StreamLostError", "TrackSettings", "VideoWriteError",
    "parse_source", "stream",
]
