"""Scrubbing latent space in the Explore widget: latency and frame rate.

Measures, on a run folder (made on the spot from the synthetic hinge data when none is given):

1. the engine: ``run.generate(z)`` and where its time goes (flow generator → voxel positions →
   convect_volume);
2. the app: time from a z change (``ExploreState.set_z``) to new data in the density layer, the
   whole path through the background renderer and the GUI thread;
3. a continuous drag: z changes at a mouse-move rate for a few seconds, volumes that reach the
   layer per second and the lag of the last one;
4. for context, one 3-D draw of the canvas (software OpenGL on a machine without a GPU).

Target: ≤ 100 ms from z change to layer data at box 64 on 2 CPU cores.

Usage::

    xvfb-run -a python bench/scrub.py                       # box 64, CPU, 2 threads
    python bench/scrub.py --box 128 --device cuda           # on a GPU machine
    python bench/scrub.py --run RUN_FOLDER
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def make_run(box: int, folder: Path, device: str) -> Path:
    """A run folder at training box ``box``: synthetic hinge particles, one training iteration."""
    from flexview.synth import make_dataset
    from flexview.train import TrainConfig, TrainingSession

    data = folder / "data"
    n = 200
    make_dataset(data, kind="hinge", n_particles=n, box=box, snr=0.5, seed=0)
    cfg = TrainConfig(particles=str(data / "particles.star"), consensus_map=str(data / "consensus.mrc"),
                      box=box, epochs=1, batch_size=n, device=device)
    TrainingSession.start(cfg, folder / "run").run()
    return folder / "run"


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def sync(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()


def engine_figures(run, repeats: int) -> dict[str, float]:
    """Median seconds of generate(z) and of its parts."""
    import torch

    from flexview.model.convect import convect_volume

    model = run.model
    device = model.canonical.volume.device
    rng = np.random.default_rng(0)
    zs = [rng.normal(size=run.config.latent_dim).astype(np.float32) for _ in range(repeats)]
    run.generate(zs[0])  # warm-up
    it = iter(zs * 4)

    def generate():
        run.generate(next(it))
        sync(device)

    with torch.no_grad():
        zt = torch.as_tensor(zs[0]).reshape(1, -1).to(device)
        values = model.canonical.masked_values()
        positions = model.voxel_positions(zt)[0]

        def flow():
            model.displacements(zt)
            sync(device)

        def positions_fn():
            model.voxel_positions(zt)
            sync(device)

        def convect():
            convect_volume(values, positions, model.box, model.pixel_size, model.kernel)
            sync(device)

        return {"generate": statistics.median(timed(generate, repeats)),
                "flow generator": statistics.median(timed(flow, repeats)),
                "voxel positions (flow + interpolation)": statistics.median(timed(positions_fn, repeats)),
                "convect_volume": statistics.median(timed(convect, repeats)),
                "masked voxels": float(model.canonical.n_masked)}


def app_figures(run_folder: Path, device: str, latencies: int, drag_seconds: float, rate_hz: float) -> dict:
    """Latency from z change to layer data, and a continuous drag, in a real napari viewer."""
    import napari
    from qtpy.QtWidgets import QApplication

    from flexview._napari import _layers
    from flexview._napari.explore import open_run_in_viewer

    viewer = napari.Viewer(show=True)
    viewer.window.resize(1200, 800)
    app = QApplication.instance()
    explore = open_run_in_viewer(viewer, run_folder)
    if device != "auto":
        explore.state.run.to(device)

    def pump_until(cond, timeout=30.0):
        t0 = time.perf_counter()
        while not cond():
            app.processEvents()
            if time.perf_counter() - t0 > timeout:
                raise TimeoutError("no new layer data")
            time.sleep(0.0005)

    pump_until(lambda: explore.shown is not None)
    layer = viewer.layers[_layers.DENSITY]
    arrivals: list[float] = []
    layer.events.data.connect(lambda _: arrivals.append(time.perf_counter()))
    for _ in range(20):
        app.processEvents()
        time.sleep(0.01)

    delivered: list[float] = []
    deliver = explore.renderer._deliver

    def timed_deliver(*args):
        delivered.append(time.perf_counter())
        deliver(*args)

    explore.renderer._deliver = timed_deliver

    def settle(seconds: float) -> None:
        """Let the canvas finish drawing the previous volume."""
        t_end = time.perf_counter() + seconds
        while time.perf_counter() < t_end:
            app.processEvents()
            time.sleep(0.002)

    rng = np.random.default_rng(1)
    lat, render, handover = [], [], []
    for _ in range(latencies):
        settle(0.3)
        z = rng.normal(size=explore.state.run.config.latent_dim).astype(np.float32)
        before = len(arrivals)
        t0 = time.perf_counter()
        explore.state.set_z(z)
        pump_until(lambda: len(arrivals) > before)
        lat.append(arrivals[-1] - t0)
        render.append(explore.last_seconds)
        handover.append(arrivals[-1] - delivered[-1])
        pump_until(lambda: not explore.renderer.busy)

    draw = timed(lambda: viewer.screenshot(canvas_only=True, flash=False), 3)

    # continuous drag: a circle in latent space, one z change per mouse event
    n_events = int(drag_seconds * rate_hz)
    start = len(arrivals)
    rendered0, dropped0 = explore.renderer.rendered, explore.renderer.dropped
    t_start = time.perf_counter()
    last_sent = None
    for i in range(n_events):
        angle = 2 * np.pi * i / n_events
        uv = np.array([np.cos(angle), np.sin(angle)]) * 1.5
        explore.scatter.picked.emit(uv)
        last_sent = time.perf_counter()
        deadline = t_start + (i + 1) / rate_hz
        while time.perf_counter() < deadline:
            app.processEvents()
            time.sleep(0.0005)
    pump_until(lambda: not explore.renderer.busy and np.array_equal(explore.shown.z, explore.state.z))
    app.processEvents()
    t_end = arrivals[-1]
    updates = len(arrivals) - start
    figures = {
        "latency": lat,
        "render": statistics.median(render),
        "handover": statistics.median(handover),
        "canvas draw": statistics.median(draw),
        "canvas size": tuple(viewer.window._qt_viewer.canvas.size),
        "drag events": n_events,
        "drag updates": updates,
        "drag fps": updates / (t_end - t_start),
        "drag lag of last": t_end - last_sent,
        "rendered": explore.renderer.rendered - rendered0,
        "dropped": explore.renderer.dropped - dropped0,
    }
    viewer.close()
    return figures


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, help="run folder (default: make one at --box)")
    p.add_argument("--box", type=int, default=64, help="training box of the run made on the spot (default 64)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or auto (default cpu)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch CPU threads of the engine figures (default 2; the app renders with 1)")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--drag-seconds", type=float, default=4.0)
    p.add_argument("--rate", type=float, default=60.0, help="mouse events per second during the drag")
    p.add_argument("--no-gui", action="store_true", help="engine figures only")
    args = p.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from flexview.run import load_run
    from flexview.device import resolve_device

    device = str(resolve_device(args.device))
    tmp = None
    folder = args.run
    if folder is None:
        tmp = tempfile.TemporaryDirectory(prefix="flexview-scrub-")
        t0 = time.perf_counter()
        folder = make_run(args.box, Path(tmp.name), device)
        print(f"made a run at box {args.box} in {time.perf_counter() - t0:.0f} s")
    run = load_run(folder, device=device)
    print(f"run: box {run.box}, {run.pixel_size:.2f} Å/px, K = {run.config.latent_dim}, "
          f"{run.mesh.n_vertices} mesh vertices; device {device}, {torch.get_num_threads()} torch threads")
    eng = engine_figures(run, args.repeats)
    print(f"engine, median of {args.repeats}:")
    print(f"  masked voxels pushed:                 {eng.pop('masked voxels'):,.0f}")
    for name, seconds in eng.items():
        print(f"  {name:<38s}{seconds * 1e3:8.2f} ms")
    if not args.no_gui:
        app = app_figures(folder, device, args.repeats, args.drag_seconds, args.rate)
        lat = np.array(app["latency"]) * 1e3
        print("app (Explore widget in a napari viewer):")
        print(f"  z change → new layer data:            median {np.median(lat):.1f} ms, "
              f"90th percentile {np.percentile(lat, 90):.1f} ms, max {lat.max():.1f} ms  (target ≤ 100 ms)")
        print(f"    of which rendering off the GUI thread: {app['render'] * 1e3:.1f} ms, "
              f"hand-over to the GUI thread and layer update: {app['handover'] * 1e3:.1f} ms")
        print(f"  one 3-D canvas draw {app['canvas size']}:     {app['canvas draw'] * 1e3:.0f} ms")
        print(f"  drag, {app['drag events']} z changes at {args.rate:.0f} Hz: {app['drag updates']} volumes shown, "
              f"{app['drag fps']:.1f} per s; {app['dropped']} stale requests dropped; "
              f"last shown {app['drag lag of last'] * 1e3:.0f} ms after the last move")
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
