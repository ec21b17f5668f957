"""Hostile and unusual inputs through the command line: a clear error every time, nothing lost.

Each case builds its inputs in a fresh folder (copies of a tiny synthetic data set and of a tiny
trained run, then damaged on purpose), runs ``flexview.cli.main`` in-process (a few in a
subprocess, where a crash could take pytest down) and checks:

- the exit code (2: refused input or a failed read/write; 0: handled correctly);
- no Python traceback on stdout or stderr;
- the error is the last line of stderr and names the file (or folder) and the field or option;
- every file that existed before (the shared data set and run, the case's own inputs) is
  byte-identical afterwards, and a refused command wrote nothing at all.
"""
from __future__ import annotations

import errno
import hashlib
import io
import os
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch

from flexview.cli import main

FAST = ["--box", "16", "--epochs", "1", "--batch-size", "100", "--device", "cpu", "--latent-init", "zeros",
        "--cells-across", "6", "--set", "latent_search=0", "--set", "hidden=16", "--set", "layers=3"]
DATA_FILES = ("particles.star", "particles.cs", "particles.mrcs", "consensus.mrc")


class Payload:
    """A class that a pickled file refers to: loading it would run code."""

    def __reduce__(self):
        return (print, ("this ran while loading",))


# ----------------------------------------------------------------------------------------------
# building damaged inputs
# ----------------------------------------------------------------------------------------------

def edit_loop(text: str, block: str, change: Callable[[list, list], tuple[list, list]]) -> str:
    """A STAR text with the loop of ``data_<block>`` replaced by ``change(headers, rows)``
    (header names without the leading underscore, rows as lists of tokens)."""
    lines = text.splitlines()
    start = lines.index(f"data_{block}")
    first = next(i for i in range(start, len(lines)) if lines[i].startswith("_"))
    end_headers = next(i for i in range(first, len(lines)) if not lines[i].startswith("_"))
    end = next((i for i in range(end_headers, len(lines)) if not lines[i].strip()), len(lines))
    headers = [line.split()[0][1:] for line in lines[first:end_headers]]
    rows = [line.split() for line in lines[end_headers:end]]
    headers, rows = change(headers, rows)
    new = [f"_{h} #{k + 1}" for k, h in enumerate(headers)] + ["\t".join(r) for r in rows]
    return "\n".join(lines[:first] + new + lines[end:]) + "\n"


def drop(name: str, block: str = "particles"):
    def change(headers, rows):
        k = headers.index(name)
        return headers[:k] + headers[k + 1:], [r[:k] + r[k + 1:] for r in rows]
    return lambda text: edit_loop(text, block, change)


def put(name: str, value: Callable[[int, str], str], block: str = "particles"):
    """Set column ``name`` (added when missing) to ``value(row, old)`` in every row."""
    def change(headers, rows):
        if name not in headers:
            headers = headers + [name]
            rows = [r + [""] for r in rows]
        k = headers.index(name)
        return headers, [r[:k] + [value(i, r[k])] + r[k + 1:] for i, r in enumerate(rows)]
    return lambda text: edit_loop(text, block, change)


def duplicate(name: str, block: str = "particles"):
    def change(headers, rows):
        k = headers.index(name)
        return headers + [name], [r + [r[k]] for r in rows]
    return lambda text: edit_loop(text, block, change)


def second_optics_group(pixel_size: str):
    """Half the particles in a second optics group with pixel size ``pixel_size`` Å."""
    def optics(headers, rows):
        row = list(rows[0])
        row[headers.index("rlnOpticsGroup")] = "2"
        row[headers.index("rlnOpticsGroupName")] = "opticsGroup2"
        row[headers.index("rlnImagePixelSize")] = pixel_size
        return headers, rows + [row]
    add = put("rlnOpticsGroup", lambda i, old: "2" if i % 2 else "1")
    return lambda text: add(edit_loop(text, "optics", optics))


def mrc_word(path: Path, word: int, value: int) -> None:
    """Overwrite 32-bit integer ``word`` (0-based) of an MRC header (0 nx, 1 ny, 2 nz, 3 mode)."""
    data = bytearray(path.read_bytes())
    data[4 * word:4 * word + 4] = np.int32(value).tobytes()
    path.write_bytes(bytes(data))


def truncate(path: Path, keep: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])


def edit_cs(path: Path, change: Callable[[np.ndarray], np.ndarray]) -> None:
    table = np.load(path, allow_pickle=False)
    with open(path, "wb") as fh:
        np.save(fh, change(table.copy()), allow_pickle=False)


def cs_without(name: str):
    return lambda t: t[[n for n in t.dtype.names if n != name]]


def cs_set(name: str, values):
    def change(t):
        t[name] = values(t[name])
        return t
    return change


def cs_float_idx(t):
    """``blob/idx`` stored as float64 and off by 0.7."""
    out = np.zeros(len(t), dtype=[(n, "<f8" if n == "blob/idx" else t.dtype[n]) for n in t.dtype.names])
    for n in t.dtype.names:
        out[n] = t[n]
    out["blob/idx"] = out["blob/idx"] + 0.7
    return out


def pickled_array(path: Path) -> None:
    with open(path, "wb") as fh:
        np.save(fh, np.array([Payload(), 1], dtype=object), allow_pickle=True)


def mesh_variant(source: Path, target: Path, **changes) -> Path:
    with np.load(source, allow_pickle=False) as archive:
        data = {k: archive[k] for k in archive.files}
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    with open(target, "wb") as fh:
        np.savez(fh, **data)
    return target


# ----------------------------------------------------------------------------------------------
# the case context
# ----------------------------------------------------------------------------------------------

@dataclass
class Ctx:
    """What a case builds its inputs from and where: ``data`` (the shared data set), ``run`` (the
    shared trained run, K = 2), ``tmp`` (the case's own folder)."""

    data: Path
    run: Path
    tmp: Path
    monkeypatch: pytest.MonkeyPatch

    def data_copy(self, edit_star=None) -> Path:
        folder = self.tmp / "data"
        if not folder.is_dir():
            folder.mkdir()
            for name in DATA_FILES:
                shutil.copy(self.data / name, folder / name)
        if edit_star is not None:
            star = folder / "particles.star"
            star.write_text(edit_star(star.read_text()))
        return folder

    def star(self, edit) -> Path:
        return self.data_copy(edit) / "particles.star"

    def run_copy(self) -> Path:
        target = self.tmp / "run"
        if not target.is_dir():
            shutil.copytree(self.run, target)
        return target

    def user_file(self, name: str, text: str = "mine\n") -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        return path

    def train(self, particles=None, *extra, consensus=None, out=None) -> list[str]:
        particles = particles or self.data / "particles.star"
        consensus = consensus or self.data / "consensus.mrc"
        return ["train", str(particles), "--map", str(consensus), "--out", str(out or self.tmp / "out"),
                *FAST, *map(str, extra)]

    def generate(self, *extra, run=None, out=None) -> list[str]:
        return ["generate", str(run or self.run), *map(str, extra), "--out", str(out or self.tmp / "vol.mrc")]

    def series(self, *extra, run=None, out=None) -> list[str]:
        return ["generate", str(run or self.run), "--axis", "0", "--frames", "2", *map(str, extra), "--out",
                str(out or self.tmp / "series")]

    def reconstruct(self, *extra, run=None, out=None, particles=None) -> list[str]:
        return ["reconstruct", str(run or self.run), *([str(particles)] if particles else []), "--out", str(out or self.tmp / "recon"), "--device", "cpu",
                "--iters", "1", *map(str, extra)]

    def mesh(self, *extra, out=None, consensus=None) -> list[str]:
        return ["mesh", str(consensus or self.data / "consensus.mrc"), "--out", str(out or self.tmp / "m.npz"),
                *map(str, extra)]

    def synth(self, *extra, out=None) -> list[str]:
        return ["synth", "--n", "4", "--box", "16", *map(str, extra), "--out", str(out or self.tmp / "synth")]

    def demo(self, *extra, out=None) -> list[str]:
        return ["demo", "--particles", "4", "--epochs", "1", "--device", "cpu", "--no-gui", *map(str, extra),
                "--out", str(out or self.tmp / "demo")]

    def disk_full(self) -> None:
        """Every atomic rename fails with ENOSPC, as on a full disk."""
        def full(*args, **kwargs):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self.monkeypatch.setattr(os, "replace", full)


@dataclass
class Case:
    """``build(ctx) -> argv``; ``says``: text the error line (stdout for exit 0) must contain."""

    id: str
    build: Callable[[Ctx], list[str]]
    says: tuple[str, ...] = ()
    code: int = 2
    isolated: bool = False        # run in a subprocess
    refusal: bool = True          # nothing at all may be written (a refusal, exit 2)
    changes: tuple[str, ...] = ()  # names of files the command is meant to replace


def C(id, build, *says, code=2, isolated=False, refusal=True, changes=()):
    return Case(id, build, tuple(says), code, isolated, refusal and code == 2, changes)


def _payload_checkpoint(c: Ctx) -> list[str]:
    run = c.run_copy()
    state = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    state["extra"] = Payload()
    torch.save(state, run / "checkpoints" / "latest.pt")
    return ["train", "--resume", "--out", str(run), "--device", "cpu", "--epochs", "2"]


def _payload_flow(c: Ctx) -> list[str]:
    run = c.run_copy()
    torch.save({"weights": Payload()}, run / "flow.pt")
    return c.generate("--z=0,0", run=run)


def _flow_of_other_dim(c: Ctx) -> list[str]:
    run = c.run_copy()
    state = torch.load(run / "flow.pt", weights_only=True)
    first = next(k for k in state if k.endswith("weight"))
    state[first] = torch.zeros(state[first].shape[0], 5)
    torch.save(state, run / "flow.pt")
    return c.generate("--z=0,0", run=run)


def _checkpoint_of_other_dim(c: Ctx) -> list[str]:
    run = c.run_copy()
    path = run / "checkpoints" / "latest.pt"
    state = torch.load(path, weights_only=True)
    state["latents"] = torch.zeros(state["latents"].shape[0], 5)
    torch.save(state, path)
    return ["train", "--resume", "--out", str(run), "--device", "cpu", "--epochs", "2"]


def _run_file(name: str, damage) -> Callable[[Ctx], list[str]]:
    def build(c: Ctx) -> list[str]:
        run = c.run_copy()
        damage(run / name)
        return c.generate("--z=0,0", run=run)
    return build


def _resume(c: Ctx, *extra) -> list[str]:
    return ["train", "--resume", "--out", str(c.run_copy()), "--device", "cpu", *map(str, extra)]


def _mesh_for(c: Ctx, **changes) -> Path:
    return mesh_variant(c.run / "mesh.npz", c.tmp / "user_mesh.npz", **changes)


def _stack(c: Ctx, damage) -> Path:
    folder = c.data_copy()
    damage(folder / "particles.mrcs")
    return folder / "particles.star"


def _map(c: Ctx, damage, name="consensus.mrc") -> Path:
    folder = c.data_copy()
    damage(folder / name)
    return folder / name


def _cs(c: Ctx, change) -> Path:
    folder = c.data_copy()
    edit_cs(folder / "particles.cs", change)
    return folder / "particles.cs"


def _write_map(path: Path, volume, voxel: float) -> Path:
    from flexview.io.mrc import write_map
    write_map(path, np.asarray(volume, np.float32), voxel)
    return path


def _foreign_folder(c: Ctx, name: str) -> Path:
    folder = c.tmp / name
    folder.mkdir()
    (folder / "notes.txt").write_text("mine\n")
    return folder


PX = 160.0 / 24        # pixel size of the shared data set (box 24)


# ----------------------------------------------------------------------------------------------
# the corpus
# ----------------------------------------------------------------------------------------------

OPTIONS = [
    C("train-batch-size-0", lambda c: c.train(None, "--batch-size", 0), "--batch-size"),
    C("train-checkpoint-every-0", lambda c: c.train(None, "--checkpoint-every", 0), "--checkpoint-every"),
    C("train-cells-across-0", lambda c: c.train(None, "--cells-across", 0), "--cells-across"),
    C("train-cells-across-above-twice-the-box", lambda c: c.train(None, "--cells-across", 40), "--cells-across"),
    C("train-latent-dim-0", lambda c: c.train(None, "--latent-dim", 0), "--latent-dim"),
    C("train-set-box-abc", lambda c: c.train(None, "--set", "box=abc"), "--set box"),
    C("train-set-lr-flow-nan", lambda c: c.train(None, "--set", "lr_flow=nan"), "--set lr_flow"),
    C("train-set-lr-map-inf", lambda c: c.train(None, "--set", "lr_map=inf"), "--set lr_map"),
    C("train-device-tpu0", lambda c: c.train(None, "--device", "tpu0"), "--device"),
    C("train-device-cuda-99", lambda c: c.train(None, "--device", "cuda:99"), "--device"),
    C("train-epochs-0", lambda c: c.train(None, "--epochs", 0), "--epochs"),
    C("train-rigidity-negative", lambda c: c.train(None, "--rigidity", -5), "--rigidity"),
    C("train-box-odd", lambda c: c.train(None, "--box", 15), "--box"),
    C("train-box-below-8", lambda c: c.train(None, "--box", 6), "--box"),
    C("train-box-above-the-particle-box", lambda c: c.train(None, "--box", 48), "--box"),
    C("train-batch-size-text", lambda c: c.train(None, "--batch-size", "many"), "--batch-size"),
    C("train-set-unknown-name", lambda c: c.train(None, "--set", "speed=11"), "--set", "speed"),
    C("train-set-without-value", lambda c: c.train(None, "--set", "lr_flow"), "--set"),
    C("train-set-recorded-field", lambda c: c.train(None, "--set", "versions=1"), "--set", "versions"),
    C("train-set-lr-final-above-1", lambda c: c.train(None, "--set", "lr_final=2"), "--set lr_final"),
    C("train-set-march-fraction", lambda c: c.train(None, "--set", "march_fraction=1.5"), "--set march_fraction"),
    C("train-set-search-at-1", lambda c: c.train(None, "--set", "search_at=1"), "--set search_at"),
    C("train-set-latent-steps-negative", lambda c: c.train(None, "--set", "latent_steps=-1"), "--set latent_steps"),
    C("train-kernel-unknown", lambda c: c.train(None, "--kernel", "quintic"), "--kernel"),
    C("train-latent-init-unknown", lambda c: c.train(None, "--latent-init", "random"), "--latent-init"),
    C("train-halves-C", lambda c: c.train(None, "--halves", "C"), "--halves"),
    C("train-cell-size-negative", lambda c: c.train(None, "--cell-size", -1), "--cell-size"),
    C("train-cell-size-below-half-a-pixel", lambda c: c.train(None, "--cell-size", 0.5), "--cell-size"),
    C("train-seed-negative", lambda c: c.train(None, "--seed", -1), "--seed"),
    C("train-no-map", lambda c: ["train", str(c.data / "particles.star"), "--out", str(c.tmp / "out"), *FAST],
      "--map"),
]

TRAIN_INPUTS = [
    C("train-particles-missing", lambda c: c.train(c.tmp / "nope.star"), "nope.star"),
    C("train-map-missing", lambda c: c.train(None, consensus=c.tmp / "nope.mrc"), "nope.mrc"),
    C("train-mask-missing", lambda c: c.train(None, "--mask", c.tmp / "nomask.mrc"), "nomask.mrc"),
    C("train-mask-empty", lambda c: c.train(None, "--mask", _write_map(c.tmp / "zeros.mrc", np.zeros((24,) * 3), PX)),
      "zeros.mrc"),
    C("train-mask-other-extent", lambda c: c.train(None, "--mask", _write_map(c.tmp / "small.mrc", np.ones((24,) * 3),
                                                                             PX / 2)), "small.mrc", "voxel size"),
    C("train-map-other-extent", lambda c: c.train(None, consensus=_write_map(c.tmp / "half.mrc", np.ones((24,) * 3),
                                                                            PX / 2)), "half.mrc", "voxel size"),
    C("train-map-2d", lambda c: c.train(None, consensus=_write_map(c.tmp / "flat.mrc", np.ones((1, 24, 24)), PX)),
      "flat.mrc"),
    C("train-map-not-cubic", lambda c: c.train(None, consensus=_write_map(c.tmp / "brick.mrc", np.ones((24, 24, 20)),
                                                                         PX)), "brick.mrc"),
    C("train-map-nan", lambda c: c.train(None, consensus=_write_map(c.tmp / "nan.mrc", np.full((24,) * 3, np.nan), PX)),
      "nan.mrc", "data"),
    C("train-mesh-other-box", lambda c: c.train(None, "--mesh", _mesh_for(c, box=np.int64(24))), "user_mesh.npz",
      "box"),
    C("train-mesh-other-pixel-size", lambda c: c.train(None, "--mesh", _mesh_for(c, pixel_size=np.float64(7.5))),
      "user_mesh.npz", "pixel_size"),
    C("train-mesh-missing-array", lambda c: c.train(None, "--mesh", _mesh_for(c, cells=None)), "user_mesh.npz",
      "cells"),
    C("train-mesh-text", lambda c: c.train(None, "--mesh", c.user_file("text.npz")), "text.npz"),
    C("train-mesh-missing", lambda c: c.train(None, "--mesh", c.tmp / "nomesh.npz"), "nomesh.npz"),
    C("train-mesh-pickled", lambda c: c.train(None, "--mesh", _mesh_for(c, vertices=np.array([Payload()],
                                                                                            dtype=object))),
      "user_mesh.npz", "vertices"),
    C("train-latent-init-wrong-shape", lambda c: c.train(None, "--latent-init", _npy(c, np.zeros((3, 2)))),
      "init.npy"),
    C("train-latent-init-pickled", lambda c: c.train(None, "--latent-init", _pickled_npy(c)), "init.npy"),
    C("train-latent-init-missing", lambda c: c.train(None, "--latent-init", c.tmp / "none.npy"), "none.npy"),
    C("train-project-dir-missing", lambda c: c.train(None, "--project-dir", c.tmp / "nowhere"), "nowhere"),
]


def _npy(c: Ctx, array) -> Path:
    np.save(c.tmp / "init.npy", array)
    return c.tmp / "init.npy"


def _pickled_npy(c: Ctx) -> Path:
    pickled_array(c.tmp / "init.npy")
    return c.tmp / "init.npy"


STAR = [
    C("star-empty", lambda c: c.train(c.star(lambda t: "")), "particles.star"),
    C("star-garbage", lambda c: c.train(c.star(lambda t: "this is not a star file\n\x00\x01")), "particles.star"),
    C("star-no-image-column", lambda c: c.train(c.star(drop("rlnImageName"))), "particles.star", "rlnImageName"),
    C("star-duplicated-column", lambda c: c.train(c.star(duplicate("rlnDefocusU"))), "particles.star",
      "rlnDefocusU"),
    C("star-defocus-text", lambda c: c.train(c.star(put("rlnDefocusU", lambda i, v: "abc" if i == 3 else v))),
      "particles.star", "rlnDefocusU"),
    C("star-defocus-negative", lambda c: c.train(c.star(put("rlnDefocusU", lambda i, v: "-12000" if i == 3 else v))),
      "particles.star", "rlnDefocusU"),
    C("star-angle-nan", lambda c: c.train(c.star(put("rlnAngleRot", lambda i, v: "nan" if i == 2 else v))),
      "particles.star", "rlnAngleRot"),
    C("star-image-beyond-stack", lambda c: c.train(c.star(put("rlnImageName", lambda i, v: "000099@particles.mrcs"
                                                                if i == 5 else v))), "particles", "rlnImageName"),
    C("star-image-number-0", lambda c: c.train(c.star(put("rlnImageName", lambda i, v: "000000@particles.mrcs"
                                                            if i == 5 else v))), "particles", "rlnImageName"),
    C("star-image-number-text", lambda c: c.train(c.star(put("rlnImageName", lambda i, v: "x@particles.mrcs"
                                                               if i == 5 else v))), "particles", "rlnImageName"),
    C("star-stack-missing", lambda c: c.train(c.star(put("rlnImageName", lambda i, v: v.replace("particles.mrcs",
                                                                                                "gone.mrcs")))),
      "gone.mrcs"),
    C("star-stack-name-300-characters", lambda c: c.train(c.star(put("rlnImageName", lambda i, v: "1@" + "s" * 300
                                                                       + ".mrcs"))), "particles.star", "rlnImageName"),
    C("star-no-pixel-size-takes-the-stack-header", lambda c: c.train(c.star(drop("rlnImagePixelSize", "optics"))),
      "pixel size: 10.000 Å", code=0),
    C("star-pixel-size-0", lambda c: c.train(c.star(put("rlnImagePixelSize", lambda i, v: "0", "optics"))),
      "particles.star", "rlnImagePixelSize"),
    C("star-voltage-0", lambda c: c.train(c.star(put("rlnVoltage", lambda i, v: "0", "optics"))), "particles.star",
      "rlnVoltage"),
    C("star-unknown-optics-group", lambda c: c.train(c.star(put("rlnOpticsGroup", lambda i, v: "3" if i == 4 else v))),
      "particles.star", "rlnOpticsGroup"),
    C("star-origins-disagree", lambda c: c.train(c.star(lambda t: put("rlnOriginY", lambda i, v: "0")(
        put("rlnOriginX", lambda i, v: "7.5")(t)))), "particles.star", "rlnOriginX"),
    C("star-no-poses", lambda c: c.train(c.star(drop("rlnAngleTilt"))), "particles.star", "rlnAngleTilt"),
    C("star-short-row", lambda c: c.train(c.star(lambda t: t.replace("\t0\t0\t1\t1\t1\n", "\t0\t0\n", 1))),
      "particles.star"),
    C("star-half-set-3", lambda c: c.train(c.star(put("rlnRandomSubset", lambda i, v: "3" if i == 1 else v)),
                                           "--halves", "A"), "particles.star", "rlnRandomSubset"),
    C("star-optics-pixel-sizes-too-far-apart", lambda c: c.train(c.star(second_optics_group("13")), "--box", 16),
      "particles.star", "--box"),
]

STACKS = [
    C("stack-float-data-says-mode-1", lambda c: c.train(_stack(c, lambda p: mrc_word(p, 3, 1))), "particles.mrcs",
      "mode"),
    C("stack-truncated", lambda c: c.train(_stack(c, truncate)), "particles.mrcs", isolated=True),
    C("stack-mode-99", lambda c: c.train(_stack(c, lambda p: mrc_word(p, 3, 99))), "particles.mrcs", "mode"),
    C("stack-nx-differs", lambda c: c.train(_stack(c, lambda p: mrc_word(p, 0, 20))), "particles.mrcs"),
    C("stack-more-images-claimed", lambda c: c.train(_stack(c, lambda p: mrc_word(p, 2, 400))), "particles.mrcs"),
    C("stack-empty-file", lambda c: c.train(_stack(c, lambda p: p.write_bytes(b""))), "particles.mrcs"),
    C("stack-text-file", lambda c: c.train(_stack(c, lambda p: p.write_text("not an image\n"))), "particles.mrcs"),
]

CS = [
    C("cs-no-blob-path", lambda c: c.train(_cs(c, cs_without("blob/path"))), "particles.cs", "blob/path"),
    C("cs-float-blob-idx", lambda c: c.train(_cs(c, cs_float_idx)), "particles.cs", "blob/idx"),
    C("cs-blob-idx-beyond-stack", lambda c: c.train(_cs(c, cs_set("blob/idx", lambda v: v + 1000))), "particles",
      "blob/idx"),
    C("cs-pixel-size-0", lambda c: c.train(_cs(c, cs_set("blob/psize_A", lambda v: v * 0))), "particles.cs",
      "blob/psize_A"),
    C("cs-negative-defocus", lambda c: c.train(_cs(c, cs_set("ctf/df1_A", lambda v: -v))), "particles.cs",
      "ctf/df1_A"),
    C("cs-nan-pose", lambda c: c.train(_cs(c, cs_set("alignments3D/pose", lambda v: v * np.nan))), "particles.cs",
      "alignments3D/pose"),
    C("cs-no-poses", lambda c: c.train(_cs(c, cs_without("alignments3D/pose"))), "particles.cs", "alignments3D/pose"),
    C("cs-pickled", lambda c: c.train(_pickled_cs(c)), "particles.cs"),
    C("cs-text", lambda c: c.train(_cs_damaged(c, lambda p: p.write_text("uid,blob\n1,2\n"))), "particles.cs"),
    C("cs-truncated", lambda c: c.train(_cs_damaged(c, truncate)), "particles.cs"),
]


def _pickled_cs(c: Ctx) -> Path:
    folder = c.data_copy()
    pickled_array(folder / "particles.cs")
    return folder / "particles.cs"


def _cs_damaged(c: Ctx, damage) -> Path:
    folder = c.data_copy()
    damage(folder / "particles.cs")
    return folder / "particles.cs"


MAPS = [
    C("map-truncated", lambda c: c.train(None, consensus=_map(c, truncate)), "consensus.mrc"),
    C("map-mode-99", lambda c: c.train(None, consensus=_map(c, lambda p: mrc_word(p, 3, 99))), "consensus.mrc",
      "mode"),
    C("map-text", lambda c: c.train(None, consensus=_map(c, lambda p: p.write_text("density\n"))), "consensus.mrc"),
    C("map-header-box-differs", lambda c: c.train(None, consensus=_map(c, lambda p: mrc_word(p, 0, 30))),
      "consensus.mrc"),
]

RESUME = [
    C("resume-empty-folder", lambda c: ["train", "--resume", "--out", str(_empty(c)), "--device", "cpu"], "empty"),
    C("resume-no-folder", lambda c: ["train", "--resume", "--out", str(c.tmp / "none"), "--device", "cpu"], "none"),
    C("resume-contradicting-box", lambda c: _resume(c, "--box", 24), "config.json", "box"),
    C("resume-checkpoint-pickled", _payload_checkpoint, "latest.pt"),
    C("resume-checkpoint-other-latent-dim", _checkpoint_of_other_dim, "latest.pt", "latents"),
    C("resume-config-garbage", lambda c: _resume_damaged(c, lambda p: p.write_text("{not json")), "config.json"),
    C("resume-config-unknown-key", lambda c: _resume_damaged(c, lambda p: p.write_text(
        p.read_text().replace('{', '{"warp": 9,', 1))), "config.json", "warp"),
    C("resume-config-bad-value", lambda c: _resume_damaged(c, lambda p: p.write_text(
        p.read_text().replace('"batch_size": 20', '"batch_size": 0'))), "config.json", "batch_size"),
    C("train-into-an-existing-run", lambda c: c.train(None, out=c.run_copy()), "run", "--out"),
    C("train-into-a-folder-of-user-files", lambda c: c.train(None, out=_user_run_files(c)), "D", "--out"),
    C("train-out-is-a-file", lambda c: c.train(None, out=c.user_file("out.txt")), "out.txt", "--out"),
    C("train-out-under-a-file", lambda c: c.train(None, out=c.user_file("out.txt") / "run"), "out.txt"),
    C("resume-a-finished-run-changes-nothing", lambda c: _resume(c), code=0),
]


def _empty(c: Ctx) -> Path:
    (c.tmp / "empty").mkdir()
    return c.tmp / "empty"


def _resume_damaged(c: Ctx, damage) -> list[str]:
    run = c.run_copy()
    damage(run / "config.json")
    return ["train", "--resume", "--out", str(run), "--device", "cpu"]


def _user_run_files(c: Ctx) -> Path:
    c.user_file("D/log.csv")
    c.user_file("D/flow.pt", "x\n")
    return c.tmp / "D"


GENERATE = [
    C("generate-z-nan", lambda c: c.generate("--z=nan,0"), "--z", isolated=True),
    C("generate-z-inf", lambda c: c.generate("--z=0,-inf"), "--z"),
    C("generate-z-1e6", lambda c: c.generate("--z=1e6,0"), "--z"),
    C("generate-z-too-many", lambda c: c.generate("--z=0,0,0"), "--z"),
    C("generate-z-too-few", lambda c: c.generate("--z=0"), "--z"),
    C("generate-z-text", lambda c: c.generate("--z=left,right"), "--z"),
    C("generate-z-empty", lambda c: c.generate("--z=,"), "--z"),
    C("generate-axis-5", lambda c: c.series("--axis", 5), "--axis"),
    C("generate-axis-negative", lambda c: c.series("--axis", -1), "--axis"),
    C("generate-frames-negative", lambda c: c.series("--frames", -3), "--frames"),
    C("generate-frames-0", lambda c: c.series("--frames", 0), "--frames"),
    C("generate-frames-1", lambda c: c.series("--frames", 1), "--frames"),
    C("generate-frames-5000", lambda c: c.series("--frames", 5000), "--frames"),
    C("generate-range-nan", lambda c: c.series("--range", "nan"), "--range"),
    C("generate-range-0", lambda c: c.series("--range", 0), "--range"),
    C("generate-range-negative", lambda c: c.series("--range=-1"), "--range"),
    C("generate-range-100", lambda c: c.series("--range", 100), "--range"),
    C("generate-neither-z-nor-axis", lambda c: c.generate(), "--z"),
    C("generate-both-z-and-axis", lambda c: c.generate("--z=0,0", "--axis", 0), "--axis"),
    C("generate-device-tpu0", lambda c: c.generate("--z=0,0", "--device", "tpu0"), "--device"),
    C("generate-device-cuda-99", lambda c: c.generate("--z=0,0", "--device", "cuda:99"), "--device"),
    C("generate-run-missing", lambda c: c.generate("--z=0,0", run=c.tmp / "norun"), "norun"),
    C("generate-run-empty-folder", lambda c: c.generate("--z=0,0", run=_empty(c)), "empty"),
    C("generate-flow-pickled", _payload_flow, "flow.pt"),
    C("generate-flow-of-other-shape", _flow_of_other_dim, "flow.pt"),
    C("generate-latents-pickled", _run_file("latents.npy", pickled_array), "latents.npy"),
    C("generate-latents-other-dim", _run_file("latents.npy", lambda p: np.save(p, np.zeros((40, 3), np.float32))),
      "latents.npy"),
    C("generate-config-garbage", _run_file("config.json", lambda p: p.write_text("[")), "config.json"),
    C("generate-canonical-truncated", _run_file("canonical.mrc", truncate), "canonical.mrc"),
    C("generate-mesh-missing", _run_file("mesh.npz", os.remove), "mesh.npz"),
    C("generate-out-is-a-folder", lambda c: c.generate("--z=0,0", out=_empty(c)), "empty", "--out"),
    C("generate-out-is-a-user-file", lambda c: c.generate("--z=0,0", out=c.user_file("mine.mrc")), "mine.mrc",
      "--out"),
    C("generate-out-is-a-user-map", lambda c: c.generate("--z=0,0", out=_user_map(c)), "user.mrc", "--out"),
    C("generate-series-out-is-a-file", lambda c: c.series(out=c.user_file("series.txt")), "series.txt", "--out"),
    C("generate-series-out-holds-user-files", lambda c: c.series(out=_foreign_folder(c, "movie")), "movie", "--out"),
    C("generate-out-under-a-file", lambda c: c.generate("--z=0,0", out=c.user_file("f.txt") / "v.mrc"), "f.txt",
      "--out"),
    C("generate-out-name-too-long", lambda c: c.generate("--z=0,0", out=c.tmp / ("v" * 300 + ".mrc")), "vvvv",
      "--out"),
    C("generate-out-in-proc", lambda c: c.generate("--z=0,0", out=Path("/proc/flexview_volume.mrc")),
      "flexview_volume.mrc"),
    C("generate-disk-full", lambda c: _disk_full(c, c.generate("--z=0,0", out=_own_map(c))), "own.mrc",
      refusal=False),
    C("generate-series-disk-full", lambda c: _disk_full(c, c.series()), "series", refusal=False),
    C("generate-replaces-its-own-map", lambda c: c.generate("--z=0.5,0", out=_own_map(c)), "own.mrc", code=0,
      changes=("own.mrc",)),
    C("generate-accepts-a-point-within-bounds", lambda c: c.generate("--z", "-3,2"), "z = -3, 2", code=0),
]


def _user_map(c: Ctx) -> Path:
    """An MRC map flexview did not write (no flexview label)."""
    import mrcfile
    with mrcfile.new(c.tmp / "user.mrc") as m:
        m.set_data(np.ones((16,) * 3, np.float32))
    return c.tmp / "user.mrc"


def _own_map(c: Ctx) -> Path:
    return _write_map(c.tmp / "own.mrc", np.ones((16,) * 3), 10.0)


def _disk_full(c: Ctx, argv: list[str]) -> list[str]:
    c.disk_full()
    return argv


RECONSTRUCT = [
    C("reconstruct-iters-0", lambda c: c.reconstruct("--iters", 0), "--iters"),
    C("reconstruct-box-odd", lambda c: c.reconstruct("--box", 7), "--box"),
    C("reconstruct-symmetry-X3", lambda c: c.reconstruct("--symmetry", "X3"), "--symmetry"),
    C("reconstruct-tikhonov-negative", lambda c: c.reconstruct("--tikhonov=-1"), "--tikhonov"),
    C("reconstruct-chunk-0", lambda c: c.reconstruct("--chunk", 0), "--chunk"),
    C("reconstruct-memory-0", lambda c: c.reconstruct("--set", "memory=0"), "--set memory"),
    C("reconstruct-bfactor-nan", lambda c: c.reconstruct("--bfactor", "nan"), "--bfactor"),
    C("reconstruct-device-tpu0", lambda c: c.reconstruct("--device", "tpu0"), "--device"),
    C("reconstruct-device-cuda-99", lambda c: c.reconstruct("--device", "cuda:99"), "--device"),
    C("reconstruct-mask-missing", lambda c: c.reconstruct("--mask", c.tmp / "nomask.mrc"), "nomask.mrc"),
    C("reconstruct-mask-other-extent", lambda c: c.reconstruct("--mask", _write_map(c.tmp / "m.mrc",
                                                                                      np.ones((24,) * 3), PX / 2)),
      "m.mrc", "voxel size"),
    C("reconstruct-particles-missing", lambda c: c.reconstruct(particles=c.tmp / "nope.star"), "nope.star"),
    C("reconstruct-labels-missing", lambda c: c.reconstruct("--labels", c.tmp / "nolabels.mrc"), "nolabels.mrc"),
    C("reconstruct-run-missing", lambda c: c.reconstruct(run=c.tmp / "norun"), "norun"),
    C("reconstruct-out-holds-user-files", lambda c: c.reconstruct(out=_foreign_folder(c, "maps")), "maps", "--out"),
    C("reconstruct-out-is-a-file", lambda c: c.reconstruct(out=c.user_file("maps.txt")), "maps.txt", "--out"),
    C("reconstruct-out-is-the-run", lambda c: c.reconstruct(run=c.run_copy(), out=c.tmp / "run"), "run", "--out"),
]

MESH = [
    C("mesh-cells-0", lambda c: c.mesh("--cells", 0), "--cells"),
    C("mesh-cells-above-twice-the-box", lambda c: c.mesh("--cells", 49), "--cells"),
    C("mesh-cell-size-nan", lambda c: c.mesh("--cell-size", "nan"), "--cell-size"),
    C("mesh-cell-size-below-half-a-voxel", lambda c: c.mesh("--cell-size", 0.1), "--cell-size"),
    C("mesh-dilate-negative", lambda c: c.mesh("--dilate=-3"), "--dilate"),
    C("mesh-threshold-nan", lambda c: c.mesh("--threshold", "nan"), "--threshold"),
    C("mesh-threshold-above-the-map", lambda c: c.mesh("--threshold", 1e9), "--threshold"),
    C("mesh-box-odd", lambda c: c.mesh("--box", 7), "--box"),
    C("mesh-box-above-the-map", lambda c: c.mesh("--box", 48), "consensus.mrc", "--box"),
    C("mesh-rigid-weight-negative", lambda c: c.mesh("--rigid-weight=-1"), "--rigid-weight"),
    C("mesh-rigid-without-segments", lambda c: c.mesh("--rigid", 1), "--segments"),
    C("mesh-segments-missing", lambda c: c.mesh("--segments", c.tmp / "noseg.mrc"), "noseg.mrc"),
    C("mesh-segments-other-extent", lambda c: c.mesh("--segments", _write_map(c.tmp / "seg.mrc", np.ones((16,) * 3),
                                                                            PX)), "seg.mrc", "--segments"),
    C("mesh-rigid-segment-unknown", lambda c: c.mesh("--segments", _segments(c), "--rigid", 7), "--rigid"),
    C("mesh-fuse-garbage", lambda c: c.mesh("--segments", _segments(c), "--fuse", "1-2"), "--fuse"),
    C("mesh-map-missing", lambda c: c.mesh(consensus=c.tmp / "nomap.mrc"), "nomap.mrc"),
    C("mesh-out-is-a-folder", lambda c: c.mesh(out=_empty(c)), "empty", "--out"),
    C("mesh-out-is-a-user-file", lambda c: c.mesh(out=c.user_file("user.npz")), "user.npz", "--out"),
    C("mesh-out-is-not-npz", lambda c: c.mesh(out=c.tmp / "mesh.mrc"), "mesh.mrc", "--out"),
    C("mesh-disk-full", lambda c: _disk_full(c, c.mesh()), "m.npz", refusal=False),
    C("mesh-replaces-its-own-mesh", lambda c: c.mesh(out=mesh_variant(c.run / "mesh.npz", c.tmp / "own.npz")),
      "own.npz", code=0, changes=("own.npz",)),
]


def _segments(c: Ctx) -> Path:
    labels = np.ones((24,) * 3)
    labels[12:] = 2
    return _write_map(c.tmp / "segments.mrc", labels, PX)


SYNTH = [
    C("synth-n-1", lambda c: c.synth("--n", 1), "--n"),
    C("synth-box-odd", lambda c: c.synth("--box", 7), "--box"),
    C("synth-box-0", lambda c: c.synth("--box", 0), "--box"),
    C("synth-box-size-negative", lambda c: c.synth("--box-size=-1"), "--box-size"),
    C("synth-snr-nan", lambda c: c.synth("--snr", "nan"), "--snr"),
    C("synth-snr-0", lambda c: c.synth("--snr", 0), "--snr"),
    C("synth-seed-negative", lambda c: c.synth("--seed=-1"), "--seed"),
    C("synth-kind-unknown", lambda c: c.synth("--kind", "twist"), "--kind"),
    C("synth-out-holds-user-files", lambda c: c.synth(out=_foreign_folder(c, "sim")), "sim", "--out"),
    C("synth-out-is-a-file", lambda c: c.synth(out=c.user_file("sim.txt")), "sim.txt", "--out"),
    C("synth-disk-full", lambda c: _disk_full(c, c.synth()), "synth", refusal=False),
]

DEMO = [
    C("demo-particles-1", lambda c: c.demo("--particles", 1), "--particles"),
    C("demo-epochs-0", lambda c: c.demo("--epochs", 0), "--epochs"),
    C("demo-device-tpu0", lambda c: c.demo("--device", "tpu0"), "--device"),
    C("demo-seed-negative", lambda c: c.demo("--seed=-1"), "--seed"),
    C("demo-out-holds-user-files", lambda c: c.demo(out=_foreign_folder(c, "show")), "show", "--out"),
    C("demo-out-is-a-file", lambda c: c.demo(out=c.user_file("show.txt")), "show.txt", "--out"),
]

INFO = [
    C("info-two-pixel-sizes", lambda c: ["info", str(c.star(second_optics_group("6.7")))], code=0),
    C("info-no-amplitude-contrast", lambda c: ["info", str(c.star(drop("rlnAmplitudeContrast", "optics")))], code=0),
    C("info-no-pixel-size-no-stack", lambda c: ["info", str(c.star(lambda t: drop("rlnImagePixelSize", "optics")(
        t).replace("@particles.mrcs", "@gone.mrcs")))], code=0),
    C("info-garbage", lambda c: ["info", str(c.star(lambda t: "\x00\x01 not a star file\n"))], "particles.star"),
    C("info-missing-file", lambda c: ["info", str(c.tmp / "nope.star")], "nope.star"),
]

MIXED = [
    C("train-two-pixel-sizes-resampled", lambda c: c.train(c.star(second_optics_group("6.7"))),
      "optics groups: 1 of 2 resampled", code=0),
]

SHARED = [       # real RELION and cryoSPARC files (skipped where ../shared/data is absent)
    C("info-relion31", lambda c: ["info", str(_shared(c, "relion31.star"))], "particles: 5", code=0),
    C("info-relion31-pixel-sizes-1.24-and-1.25", lambda c: ["info", str(_relion31_two_groups(c))], code=0),
    C("info-relion30-empiar", lambda c: ["info", str(_shared(c, "empiar_10076_7.star"))], code=0),
    C("info-cryosparc-empiar", lambda c: ["info", str(_shared(c, "empiar_10076_7.cs"))], code=0),
    C("info-cryosparc-export-without-3d-poses", lambda c: ["info", str(_shared(c, "cryosparc_J2_particles_exported.cs"))],
      code=0),
    C("train-cryosparc-export-without-3d-poses", lambda c: c.train(_shared(c, "cryosparc_J2_particles_exported.cs")),
      "cryosparc_J2_particles_exported.cs"),
    C("train-relion30-without-poses", lambda c: c.train(_shared(c, "empiar_10076_7.star")), "empiar_10076_7.star"),
]


def _shared(c: Ctx, name: str) -> Path:
    folder = Path(__file__).resolve().parents[2] / "shared" / "data" / "formats"
    if not (folder / name).is_file():
        pytest.skip(f"shared test data not found at {folder}")
    for path in folder.iterdir():
        if path.name.startswith(Path(name).stem.split("_particles")[0]) or path.suffix == ".mrcs":
            shutil.copy(path, c.tmp / path.name)
    return c.tmp / name


def _relion31_two_groups(c: Ctx) -> Path:
    star = _shared(c, "relion31.star")
    lines = star.read_text().splitlines()
    k = next(i for i, line in enumerate(lines) if line.strip().startswith("1 opticsGroup1"))
    second = lines[k].replace("1 opticsGroup1", "2 opticsGroup2", 1).replace("2.806000", "2.830000")
    lines[k] = lines[k].replace("2.806000", "1.240000")
    second = second.replace("2.830000", "1.250000")
    rows = [i for i, line in enumerate(lines) if "@relion31.mrcs" in line]
    for i in rows[1::2]:
        tokens = lines[i].split()
        tokens[22] = "2"                                 # rlnOpticsGroup, column 23
        lines[i] = " ".join(tokens)
    star.write_text("\n".join(lines[:k + 1] + [second] + lines[k + 1:]) + "\n")
    return star


def _interrupted(c: Ctx) -> list[str]:
    import flexview.run

    def stop(*args, **kwargs):
        raise KeyboardInterrupt
    c.monkeypatch.setattr(flexview.run, "load_run", stop)
    return c.generate("--z=0,0")


def _io_error(c: Ctx) -> list[str]:
    import flexview.run

    def fail(*args, **kwargs):
        raise OSError(errno.EIO, os.strerror(errno.EIO))
    c.monkeypatch.setattr(flexview.run, "write_volume_series", fail)
    return c.series()


FAULTS = [
    C("interrupted-exits-130", _interrupted, "interrupted", code=130),
    C("os-error-without-a-file-name-names-the-output", _io_error, "series", os.strerror(errno.EIO)),
    C("train-disk-full", lambda c: _disk_full(c, c.train(None)), "out"),
    C("train-out-in-proc", lambda c: c.train(None, out=Path("/proc/flexview_run")), "flexview_run"),
    C("train-out-name-too-long", lambda c: c.train(None, out=c.tmp / ("r" * 300)), "rrrr"),
    C("synth-out-name-too-long", lambda c: c.synth(out=c.tmp / ("s" * 300)), "ssss", "--out"),
]

CASES = OPTIONS + TRAIN_INPUTS + STAR + STACKS + CS + MAPS + RESUME + GENERATE + RECONSTRUCT + MESH + SYNTH + DEMO \
    + INFO + MIXED + SHARED + FAULTS


# ----------------------------------------------------------------------------------------------
# running a case
# ----------------------------------------------------------------------------------------------

def snapshot(*roots: Path) -> dict[str, str]:
    """Path → SHA-1 of the bytes (or ``"folder"``) of every entry under ``roots``."""
    out = {}
    for root in roots:
        for path in sorted(root.rglob("*")):
            out[str(path)] = "folder" if path.is_dir() else hashlib.sha1(path.read_bytes()).hexdigest()
    return out


def run_cli(argv: list[str], isolated: bool) -> tuple[int, str, str]:
    """Exit code, stdout and stderr of ``flexview ARGV``."""
    if isolated:
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        done = subprocess.run([sys.executable, "-m", "flexview.cli", *argv], capture_output=True, text=True,
                              timeout=120, env=env)
        return done.returncode, done.stdout, done.stderr
    out, err = io.StringIO(), io.StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:            # argparse's own refusals
            code = exc.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def corpus_inputs(tiny_flex_dataset, tiny_flex_run):
    return tiny_flex_dataset, tiny_flex_run


def test_the_corpus_is_large_and_its_ids_are_unique():
    assert len(CASES) >= 100
    assert len({case.id for case in CASES}) == len(CASES)


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input(case: Case, corpus_inputs, tmp_path, monkeypatch):
    data, run = corpus_inputs
    ctx = Ctx(data, run, tmp_path / "case", monkeypatch)
    ctx.tmp.mkdir()
    argv = case.build(ctx)
    before = snapshot(data, run, ctx.tmp)
    code, out, err = run_cli(argv, case.isolated)
    monkeypatch.undo()
    after = snapshot(data, run, ctx.tmp)
    assert "Traceback" not in out + err, err
    assert code == case.code, (out, err)
    changed = [p for p, h in before.items() if after.get(p) != h and Path(p).name not in case.changes]
    assert not changed, f"changed or removed: {changed}"
    if case.refusal:
        assert sorted(after) == sorted(before), f"written by a refused command: {sorted(set(after) - set(before))}"
    else:
        assert not [p for p in set(after) - set(before) if ".tmp" in Path(p).name], "temporary files left"
    if code == 0:
        assert all(text in out for text in case.says), out
        return
    line = err.strip().splitlines()[-1] if err.strip() else ""
    assert ("error" if code == 2 else "interrupted") in line, err
    for text in case.says:
        assert text in line, f"{text!r} not in {line!r}"
    for advice in ("weights_only", "unsafe", "pickle.load"):      # never advise loading pickled code
        assert advice not in err, line
