"""`digr drive`'s pieces: the overlay, the explaining actor, the MP4 and web sinks, and the page in a real browser."""

import json
import shutil
import subprocess
import threading
import time
import urllib.request

import numpy as np
import pytest
import torch as th

from digr.cli import main
from digr.live import Mp4Sink, WebSink, display_frame, hud, overlay, side_by_side
from digr.policies import new_student
from digr.running.config import load_config
from digr.running.drive import ExplainingActor, drive
from digr.saliency import gradient_saliency

CONFIG = "experiments/minigrid_fetch.yaml"


@pytest.fixture(scope="module")
def minigrid():
    """The MiniGrid eval env factory and an untrained student of the right shape (its maps are real gradients)."""
    cfg = load_config(CONFIG, ["env.kwargs={max_steps: 12}"])
    env_fn = cfg.env.make_fn(evaluation=True)
    env = env_fn()
    obs, _ = env.reset(seed=0)
    th.manual_seed(0)
    return env_fn, new_student(obs["image"].shape, env.action_space.n, 0, cfg.teacher, 0)


def test_overlay_blends_in_proportion_to_saliency():
    frame = np.full((8, 8, 3), 100, np.uint8)
    sal = np.zeros((8, 8), np.float32)
    sal[2, 3] = 5.0
    assert (overlay(frame, sal, alpha=0.0, scale=1) == frame).all()  # alpha 0: the frame unchanged
    out = overlay(frame, sal, alpha=1.0, percentile=100, cmap="gray", scale=1)
    assert (out[2, 3] == 255).all() and (np.delete(out.reshape(64, 3), 2 * 8 + 3, 0) == 100).all()  # only the peak
    assert overlay(frame, np.ones((4, 4)), scale=3).shape == (24, 24, 3)  # a smaller map is resized to the frame
    assert (overlay(frame, np.zeros((8, 8)), scale=1) == frame).all()  # an all-zero map draws nothing
    with pytest.raises(ValueError, match="alpha"):
        overlay(frame, sal, alpha=2.0)


def test_display_frame_hud_and_side_by_side():
    rgb = np.arange(6 * 4 * 5, dtype=np.uint8).reshape(6, 4, 5)  # two stacked RGB frames
    assert (display_frame(rgb) == rgb[3:].transpose(1, 2, 0)).all()  # the newest
    grey = np.arange(4 * 4 * 5, dtype=np.uint8).reshape(4, 4, 5)  # four stacked grey frames (Atari)
    assert (display_frame(grey)[..., 1] == grey[-1]).all()
    assert hud(np.zeros((10, 40, 3), np.uint8), ["a", "b"]).shape == (46, 40, 3)
    assert side_by_side(np.zeros((10, 5, 3), np.uint8), np.zeros((6, 7, 3), np.uint8), gap=2).shape == (10, 14, 3)


def test_the_explaining_actor_gives_the_greedy_action_and_its_gradient_map(minigrid):
    env_fn, student = minigrid
    obs, _ = env_fn().reset(seed=1)
    image = th.as_tensor(obs["image"][None]).float() / 255
    act = ExplainingActor(student)(image, None)
    action = student(image, None).argmax(1)
    assert act.actions == action.tolist()
    assert np.allclose(act.extras["saliency"], gradient_saliency(student, image, action).numpy(), atol=1e-6)
    assert act.extras["ms"] > 0


def test_the_attending_actor_reads_the_map_off_its_acting_pass(minigrid):
    from digr.running.drive import AttendingActor
    from digr.saliency import AttentionMap

    env_fn, plain = minigrid
    obs, _ = env_fn().reset(seed=1)
    image = th.as_tensor(obs["image"][None]).float() / 255
    cfg = load_config(CONFIG)
    student = new_student(obs["image"].shape, 7, 0, cfg.teacher, 0, attention="region")
    calls = []
    student.register_forward_hook(lambda *_: calls.append(1))
    act = AttendingActor(student)(image, None)
    assert len(calls) == 1 and act.actions == student(image, None).argmax(1).tolist()
    assert np.allclose(act.extras["saliency"], AttentionMap()(student, image, None).numpy(), atol=1e-6)
    with pytest.raises(ValueError, match="attention"):
        AttendingActor(plain)
    summary = drive(env_fn, student, label="rs", episodes=1, seed=0, live_map="attention")
    assert summary["frames"] >= 1 and summary["saliency_ms"] > 0


def test_drive_writes_a_video_that_decodes(tmp_path, minigrid):
    import imageio.v2 as imageio

    env_fn, student = minigrid
    sink = Mp4Sink(tmp_path / "drive.mp4", fps=10)
    summary = drive(env_fn, student, label="digr", episodes=2, seed=0, sinks=[sink])
    sink.close()
    assert 2 <= summary["frames"] <= 24 and len(summary["returns"]) == 2  # two episodes of at most 12 steps
    reader = imageio.get_reader(tmp_path / "drive.mp4")
    first = reader.get_data(0)
    assert reader.count_frames() == summary["frames"] and first.shape == (64 * 4 + 18, 64 * 4, 3)  # 4× frame under a HUD line
    assert first[:18].mean() < first[18:].mean()  # the HUD band is dark, the frame is not
    assert sorted(p.name for p in tmp_path.iterdir()) == ["drive.mp4"]  # no temporary file left


def _get(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read()


def test_web_sink_serves_the_page_the_stream_and_the_stats(minigrid):
    import cv2

    web = WebSink(0, title="digr on MiniGrid")
    try:
        frame = np.zeros((40, 60, 3), np.uint8)
        frame[:, :30] = (255, 0, 0)
        web.push(frame, {"fps": 31.5, "action": 2})
        assert b'<img id="view" src="/stream"' in _get(web.url) and b"digr on MiniGrid" in _get(web.url)
        assert json.loads(_get(web.url + "stats")) == {"fps": 31.5, "action": 2}
        jpeg = cv2.imdecode(np.frombuffer(_get(web.url + "frame.jpg"), np.uint8), cv2.IMREAD_COLOR)
        assert jpeg.shape == (40, 60, 3) and jpeg[20, 10, 2] > 200 and jpeg[20, 50].max() < 30  # red left (BGR), black right
        with urllib.request.urlopen(web.url + "stream", timeout=10) as r:
            assert r.headers["Content-Type"].startswith("multipart/x-mixed-replace")
            assert r.read(40).startswith(b"--frame\r\nContent-Type: image/jpeg")
    finally:
        web.close()


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_the_live_page_shows_overlaid_frames_in_a_real_browser(tmp_path, minigrid):
    """Headless Chromium opens the page while an agent drives into the web sink, and its screenshot shows the frame."""
    import cv2

    env_fn, student = minigrid
    web, stop = WebSink(0, title="browser test"), threading.Event()
    driver = threading.Thread(
        target=lambda: drive(env_fn, student, label="digr", episodes=None, sinks=[web], stop=stop.is_set)
    )
    driver.start()
    try:
        web.wait_frame(0, timeout=30)
        shot = tmp_path / "page.png"
        cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=700,420",
               "--virtual-time-budget=2000", f"--screenshot={shot}", web.url]  # fmt: skip
        subprocess.run(cmd, capture_output=True, timeout=120, check=True)
    finally:
        stop.set()
        driver.join()
        web.close()
    page = cv2.imread(str(shot))[..., ::-1]
    # the stream's frame is drawn at (16, 60)..: a 256-px-wide MiniGrid frame, grey walls (R = G = B ≈ 100)
    region = page[80:330, 20:270].reshape(-1, 3).astype(int)
    walls = (np.ptp(region, axis=1) < 20) & (region[:, 0] > 60) & (region[:, 0] < 160)
    assert walls.mean() > 0.05, "no MiniGrid frame in the screenshot"


def test_drive_command_errors(tmp_path, capsys):
    base = [CONFIG, "-o", f"run_dir={tmp_path}", "-o", "name=none"]
    assert main(["drive", *base, "--agent", "nobody", "--video", str(tmp_path / "x.mp4")]) == 2
    assert "not an agent of this run" in capsys.readouterr().err
    assert main(["drive", *base, "--agent", "digr"]) == 2
    assert "--video" in capsys.readouterr().err
    assert main(["drive", *base, "--agent", "digr", "--video", str(tmp_path / "x.mp4")]) == 2
    assert "not trained" in capsys.readouterr().err
    assert main(["drive", *base, "--episodes", "0", "--video", str(tmp_path / "x.mp4")]) == 2
    assert not (tmp_path / "x.mp4").exists()


def test_bench_drive_reports_every_measurement(minigrid):
    from digr.running.config import PerturbationConfig
    from digr.running.drive import bench_drive

    env_fn, student = minigrid
    rows = bench_drive(env_fn, student, student, PerturbationConfig(stride=16), label="digr", steps=5)
    assert [r["unit"] for r in rows] == ["FPS", "Hz", "ms", "FPS", "FPS"]
    assert all(r["value"] > 0 for r in rows)


CARRACING_TEACHER = "experiments/teachers/carracing/teacher.safetensors"


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
@pytest.mark.skipif(not __import__("os").path.isfile(CARRACING_TEACHER), reason="no committed CarRacing teacher")
def test_digr_drive_serve_shows_the_road_with_its_overlay_in_a_real_browser(tmp_path):
    """`digr drive experiments/carracing.yaml --serve 0` drives the committed teacher; headless Chromium opens the page
    and its screenshot shows a road frame (grey road, green grass) with the saliency overlay's colours on it; Ctrl-C
    (SIGINT) stops the command cleanly."""
    import os
    import signal
    import sys

    import cv2

    base = ["experiments/carracing.yaml", "-o", f"run_dir={tmp_path}", "-o", "name=cr"]
    digr = [sys.executable, "-m", "digr.cli"]
    subprocess.run([*digr, "teacher", *base], check=True, capture_output=True, timeout=300)  # installs the committed one
    cmd = [*digr, "drive", *base, "--agent", "teacher", "--serve", "0", "--episodes", "100"]  # still driving at SIGINT
    env = {**os.environ, "COLUMNS": "300"}  # one log line per message
    log = (tmp_path / "drive.log").open("w")  # a file, not a pipe: an unread pipe that fills up blocks the driver
    # SIGINT at its default in the child: a test run started in the background (`cmd &`) ignores SIGINT, and a Python
    # started with SIGINT ignored keeps ignoring it, so Ctrl-C would never reach the driver
    default_sigint = lambda: signal.signal(signal.SIGINT, signal.SIG_DFL)
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, text=True, env=env, preexec_fn=default_sigint)
    try:
        url, deadline = None, time.monotonic() + 120
        while url is None and proc.poll() is None and time.monotonic() < deadline:
            text = (tmp_path / "drive.log").read_text()
            if "live view on " in text:
                url = text.split("live view on ")[1].split()[0]
            time.sleep(0.2)
        assert url is not None, "digr drive printed no URL"
        time.sleep(3)  # the car is on the road and a few frames are out
        shot = tmp_path / "page.png"
        cmd = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--window-size=820,560",
               "--virtual-time-budget=2000", f"--screenshot={shot}", url]  # fmt: skip
        subprocess.run(cmd, capture_output=True, timeout=120, check=True)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 130, (tmp_path / "drive.log").read_text()[-2000:]
    finally:
        proc.kill()
        log.close()
    page = cv2.imread(str(shot))[..., ::-1].reshape(-1, 3).astype(int)
    grey = (np.ptp(page, axis=1) < 14) & (page[:, 0] > 85) & (page[:, 0] < 130)  # road (with little overlay on it)
    grass = (page[:, 1] > page[:, 0] + 40) & (page[:, 1] > page[:, 2] + 40)  # CarRacing's green grass
    hot = (page[:, 0] > 170) & (page[:, 1] > 80) & (page[:, 0] - page[:, 2] > 90)  # inferno's orange and yellow: not
    # in CarRacing's palette (grey road, green grass, red and white kerbs, red car)
    assert grey.mean() > 0.01 and grass.mean() > 0.02, "no CarRacing frame in the screenshot"
    assert hot.mean() > 0.0005, "no saliency overlay on the frame"
