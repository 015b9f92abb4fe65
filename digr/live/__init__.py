"""Live views of a driving agent: saliency overlays (:mod:`digr.live.overlay`) and frame sinks (MP4, web page,
window: :mod:`digr.live.sinks`). The drive loop itself is :mod:`digr.running.drive`."""

from digr.live.overlay import display_frame, hud, overlay, side_by_side
from digr.live.sinks import Mp4Sink, WebSink, WindowSink

__all__ = ["Mp4Sink", "WebSink", "WindowSink", "display_frame", "hud", "overlay", "side_by_side"]
