"""Regenerate the README pictures: screenshots of each flexview widget and a movie from the Movie
widget, from a data set and a run folder (for instance those of ``flexview demo --out DEMO``).

    xvfb-run -a -s "-screen 0 1920x1200x24" python resources/make_media.py DEMO/data DEMO/run --out media

writes ``media/<widget>.png`` for Data, Train, Explore, Movie and Select and ``media/movie.gif``;
``--resources`` also copies the Explore screenshot (reduced) and the movie into ``resources/``.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np


def pump(app, seconds: float = 0.5) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        app.processEvents()
        time.sleep(0.01)


def wait(app, cond, timeout: float = 600.0) -> None:
    end = time.perf_counter() + timeout
    while not cond():
        if time.perf_counter() > end:
            raise TimeoutError
        app.processEvents()
        time.sleep(0.01)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", type=Path, help="data set folder (particles.star, consensus.mrc)")
    p.add_argument("run", type=Path, help="run folder")
    p.add_argument("--out", type=Path, default=Path("media"))
    p.add_argument("--train-epochs", type=int, default=1, help="epochs of the live training shown (default 1)")
    p.add_argument("--resources", action="store_true", help="also update resources/screenshot.png and movie.gif")
    args = p.parse_args()
    warnings.filterwarnings("ignore")

    import napari
    import napari._qt.qt_main_window as main_window
    from PIL import Image
    from qtpy.QtWidgets import QApplication

    main_window.SHOW_QT_WARNING = False  # no start-up toast about the Qt binding in the pictures
    args.out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="flexview")
    viewer.window.resize(1500, 950)
    app = QApplication.instance()

    def shoot(name: str) -> Path:
        pump(app, 1.0)
        path = args.out / f"{name.lower()}.png"
        viewer.screenshot(str(path), canvas_only=False, flash=False)
        return path

    def dock(name: str):
        dock_widget, widget = viewer.window.add_plugin_dock_widget("flexview", name, tabify=True)
        dock_widget.raise_()
        return widget

    data = dock("Data")
    data.particles.set_text(args.data / "particles.star")
    data.map.set_text(args.data / "consensus.mrc")
    data.load()
    data.box.setValue(32)
    shoot("Data")

    train = dock("Train")
    scratch = Path(tempfile.mkdtemp(prefix="flexview-media-"))
    train.out.set_text(scratch / "run")
    train.form.set_values({"epochs": args.train_epochs, "batch_size": 250, "cells_across": 10})
    train.refresh.setValue(2)
    train.start()
    wait(app, lambda: train.state.status in ("finished", "failed", "stopped"))
    shoot("Train")
    for layer in list(viewer.layers):
        viewer.layers.remove(layer)

    explore = dock("Explore")
    explore.open_folder(args.run)
    wait(app, lambda: explore.shown is not None)
    explore.arrows.setChecked(True)
    latents = explore.state.run.latents
    z = latents[np.argsort(latents[:, 0])[int(0.9 * len(latents))]]   # a particle far out on axis 1
    explore.state.set_z(z)
    wait(app, lambda: explore.shown is not None and explore.shown.vectors is not None
         and np.array_equal(explore.shown.z, explore.state.z))
    viewer.camera.angles = (10.0, 35.0, 60.0)
    shot = shoot("Explore")

    movie = dock("Movie")
    movie.n_frames.setValue(16)
    movie.extent.setValue(2.0)
    movie.bounce.setChecked(True)
    movie.rotate.setValue(0.0)
    movie.frame_width.setValue(288)
    movie.fps.setValue(12.0)
    movie.gif.setChecked(True)
    movie.output.set_text(args.out / "movie.gif")
    explore.arrows.setChecked(False)
    viewer.camera.zoom *= 1.4
    pump(app)
    movie.record()
    wait(app, lambda: not movie.recording)
    shoot("Movie")

    select = dock("Select")
    view = select.state.view
    u0, u1, v0, v1 = view.extent()
    select.scatter.polygon_drawn.emit(np.array([[u0, v0], [(u0 + u1) / 2, v0], [(u0 + u1) / 2, v1], [u0, v1]]))
    shoot("Select")

    if args.resources:
        here = Path(__file__).resolve().parent
        image = Image.open(shot).convert("RGB")
        image.thumbnail((1200, 800))
        image.save(here / "screenshot.png", optimize=True)
        shutil.copyfile(args.out / "movie.gif", here / "movie.gif")
    viewer.close()
    shutil.rmtree(scratch, ignore_errors=True)
    print(f"wrote {sorted(str(p) for p in args.out.iterdir())}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
