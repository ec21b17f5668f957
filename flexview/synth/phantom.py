"""Pseudo-atomic flexible phantoms: Gaussian pseudo-atoms grouped into domains that move.

A :class:`Phantom` is a set of chains of pseudo-atoms (one per "residue", Cα-like), each an isotropic 3-D
Gaussian of integral ``amplitude`` and standard deviation ``sigma = sqrt(B / 8π²)`` Å. Atoms are
grouped into domains built from right-handed helix-like rods packed into bundles, so the object is
protein-like and chiral (no symmetry, no mirror symmetry).

Motion is a list of rigid *moves*; move ``j`` acts on the atoms of domain ``moves.domain[j]`` and is
driven by motion coordinate ``moves.coord[j]``:

- rotation: ``p' = pivot + R(axis, c · amount_deg) (p − pivot)``
- translation: ``p' = p + c · amount_A · vector``

Moves are applied in list order. Motion coordinates are dimensionless; the generator draws each one
independently and uniformly from [−1, 1] (:func:`draw_motion_coords`), so ``amount`` is the largest
angle (degrees) or displacement (Å) a particle shows.

Kinds (:func:`make_phantom`):

- ``"hinge"``: a core and two domains; c0 bends the arm about an axis through its junction with the
  core (±20°), c1 twists a second domain about its own long axis (±40°). The core never moves.
- ``"rigid"``: the same atoms as ``"hinge"``, no motion (a control).
- ``"shear"``: two slab-like domains touching along a plane slide in opposite directions along it;
  c0 moves each by ±7 Å.

Sizes: hinge / rigid 598 pseudo-atoms, 109 Å across; shear 825 pseudo-atoms, 93 Å across (the
default 160 Å box is 2.5 Å/px at box 64).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.spatial import cKDTree
from scipy.spatial.transform import Rotation

from flexview.errors import FlexviewInputError
from flexview.io._atomic import atomic_path

KINDS = ("hinge", "rigid", "shear")
HELIX_RISE_A, HELIX_RADIUS_A, HELIX_TURN_DEG = 1.5, 2.3, 100.0
HELIX_B, LOOP_B = 200.0, 300.0      # B-factors (Å²) of helix and loop pseudo-atoms
BUNDLE_SPACING_A = 10.0             # distance between neighbouring helix axes
DEFAULT_PHANTOM_SEED = 0
_ROTATION, _TRANSLATION = 0, 1


@dataclass
class Moves:
    """Rigid moves, one row each (M moves).

    coord (M,) int: motion coordinate driving the move; domain (M,) int: domain label moved;
    kind (M,) int: 0 rotation, 1 translation; vector (M, 3): unit rotation axis or direction;
    pivot (M, 3) Å: a point on the rotation axis; amount (M,): degrees (rotation) or Å (translation)
    per unit coordinate; names: one label per motion coordinate.
    """

    coord: np.ndarray
    domain: np.ndarray
    kind: np.ndarray
    vector: np.ndarray
    pivot: np.ndarray
    amount: np.ndarray
    names: tuple[str, ...]

    @classmethod
    def none(cls) -> "Moves":
        return cls(np.zeros(0, int), np.zeros(0, int), np.zeros(0, int), np.zeros((0, 3)),
                   np.zeros((0, 3)), np.zeros(0), ())


@dataclass
class Phantom:
    """Gaussian pseudo-atoms with domain labels and a deformation.

    Attributes
    ----------
    positions : ndarray (n, 3)  canonical (c = 0) atom centres, x y z in Å, centroid at 0.
    amplitudes : ndarray (n,)   integral of each Gaussian (density · Å³).
    bfactors : ndarray (n,)     Å²; Gaussian σ² = B / (8π²) per axis.
    labels : ndarray (n,) int   domain index of each atom.
    domain_names : tuple of str
    moves : Moves
    kind : str
    """

    positions: np.ndarray
    amplitudes: np.ndarray
    bfactors: np.ndarray
    labels: np.ndarray
    domain_names: tuple[str, ...]
    moves: Moves
    kind: str

    @property
    def n_motions(self) -> int:
        return len(self.moves.names)

    @property
    def sigmas(self) -> np.ndarray:
        """Gaussian standard deviation of each atom in Å, shape (n,)."""
        return np.sqrt(self.bfactors / (8.0 * np.pi**2))

    def deform(self, coords) -> np.ndarray:
        """Atom positions (Å) at motion coordinates ``coords``: (K,) → (n, 3) or (B, K) → (B, n, 3)."""
        c = np.asarray(coords, dtype=np.float64)
        single = c.ndim == 1
        c = np.atleast_2d(c)
        if c.shape[1] != self.n_motions:
            raise ValueError(f"expected {self.n_motions} motion coordinates, got {c.shape[1]}")
        pos = np.broadcast_to(self.positions, (len(c),) + self.positions.shape).copy()
        m = self.moves
        for j in range(len(m.coord)):
            sel = self.labels == m.domain[j]
            amount = c[:, m.coord[j]] * m.amount[j]                       # (B,)
            if m.kind[j] == _ROTATION:
                rot = Rotation.from_rotvec(np.deg2rad(amount)[:, None] * m.vector[j]).as_matrix()
                rel = pos[:, sel] - m.pivot[j]
                pos[:, sel] = m.pivot[j] + np.einsum("bij,bnj->bni", rot, rel)
            else:
                pos[:, sel] += amount[:, None, None] * m.vector[j]
        return pos[0] if single else pos

    def displacement(self, coords) -> np.ndarray:
        """Ground-truth per-atom displacement (Å) from the canonical pose, same shapes as :meth:`deform`."""
        return self.deform(coords) - self.positions

    def save(self, path: str | Path) -> None:
        """Write the atom model and its moves to an ``.npz`` (atomically, no pickle)."""
        m = self.moves
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.savez(f, positions=self.positions, amplitudes=self.amplitudes, bfactors=self.bfactors,
                     labels=self.labels, domain_names=np.array(self.domain_names, dtype=str),
                     kind=np.array(self.kind), move_coord=m.coord, move_domain=m.domain,
                     move_kind=m.kind, move_vector=m.vector, move_pivot=m.pivot,
                     move_amount=m.amount, motion_names=np.array(m.names, dtype=str))


def load_phantom(path: str | Path) -> Phantom:
    """Read a phantom written by :meth:`Phantom.save`."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            moves = Moves(z["move_coord"], z["move_domain"], z["move_kind"], z["move_vector"],
                          z["move_pivot"], z["move_amount"], tuple(str(s) for s in z["motion_names"]))
            return Phantom(z["positions"], z["amplitudes"], z["bfactors"], z["labels"],
                           tuple(str(s) for s in z["domain_names"]), moves, str(z["kind"]))
    except (OSError, KeyError, ValueError) as exc:
        raise FlexviewInputError(f"not a flexview phantom ({exc})", path) from exc


def draw_motion_coords(n: int, n_motions: int, rng: np.random.Generator) -> np.ndarray:
    """Per-particle motion coordinates, independent uniform on [−1, 1]: shape (n, n_motions)."""
    return rng.uniform(-1.0, 1.0, size=(n, n_motions))


# ---------------------------------------------------------------- building blocks


def _frame(direction) -> np.ndarray:
    """Right-handed orthonormal frame (3, 3) whose third row is ``direction``."""
    d = np.asarray(direction, float) / np.linalg.norm(direction)
    helper = np.array([1.0, 0, 0]) if abs(d[0]) < 0.9 else np.array([0, 1.0, 0])
    u = np.cross(helper, d)
    u /= np.linalg.norm(u)
    return np.stack([u, np.cross(d, u), d])


def _helix(start, direction, n_res: int, phase_deg: float) -> np.ndarray:
    """Cα-like positions (n_res, 3) of a right-handed α-helix whose axis starts at ``start``."""
    u, v, d = _frame(direction)
    i = np.arange(n_res)
    phi = np.deg2rad(phase_deg + HELIX_TURN_DEG * i)
    return (np.asarray(start) + HELIX_RISE_A * i[:, None] * d
            + HELIX_RADIUS_A * (np.cos(phi)[:, None] * u + np.sin(phi)[:, None] * v))


def _loop(a, b, bulge) -> np.ndarray:
    """Pseudo-atoms (m, 3) spaced ≈3.8 Å on an arc from ``a`` to ``b`` (endpoints excluded)."""
    a, b, bulge = (np.asarray(x, float) for x in (a, b, bulge))
    m = max(int(np.linalg.norm(b - a) / 3.8), 1)
    t = np.arange(1, m + 1)[:, None] / (m + 1)
    return a + t * (b - a) + 4.0 * t * (1 - t) * bulge


def _lattice(semi_axes, spacing, n_max, offset) -> np.ndarray:
    """The ``n_max`` points (k, 2) of a hexagonal lattice nearest the centre in the metric of an ellipse."""
    r = int(np.ceil(2 * np.sqrt(n_max))) + 2
    i, j = np.meshgrid(np.arange(-r, r + 1), np.arange(-r, r + 1), indexing="ij")
    pts = np.stack([(i + 0.5 * j).ravel(), (np.sqrt(3) / 2 * j).ravel()], 1) * spacing + offset
    return pts[np.argsort(((pts / semi_axes) ** 2).sum(1), kind="stable")][:n_max]


def _bundle(rng, centre, orient, semi_axes, n_helices: int, length_res: int):
    """A domain: antiparallel helices on a lattice, joined by loops into one chain.

    ``semi_axes`` (Å) only set the aspect ratio of the helix cross-section; ``orient`` (3, 3)
    rotation: local z (helix axes) → ``orient @ z``. Returns (positions (m, 3), is_helix (m,) bool).
    Helices are shorter towards the rim so the domain is globular.
    """
    axes = _lattice(np.asarray(semi_axes, float), BUNDLE_SPACING_A, n_helices, rng.uniform(-2, 2, 2))
    axes -= axes.mean(0)
    rim = np.sqrt(((axes / semi_axes) ** 2).sum(1))
    rim /= max(rim.max(), 1e-9)
    order = np.argsort(np.arctan2(axes[:, 1], axes[:, 0]), kind="stable")
    chain, helix_flags, prev_end = [], [], None
    for k, idx in enumerate(order):
        n = max(int(length_res * (1.0 - 0.35 * rim[idx] ** 2) + rng.integers(-2, 3)), 6)
        half = 0.5 * HELIX_RISE_A * (n - 1)
        sign = 1.0 if k % 2 == 0 else -1.0
        z0 = -sign * half + rng.uniform(-2.0, 2.0)
        local = _helix([axes[idx, 0], axes[idx, 1], z0], [0, 0, sign], n, rng.uniform(0, 360))
        atoms = centre + local @ orient.T
        if prev_end is not None:
            mid = 0.5 * (prev_end + atoms[0])
            out = mid - centre
            loop = _loop(prev_end, atoms[0], 3.0 * out / (np.linalg.norm(out) + 1e-9))
            chain.append(loop)
            helix_flags.append(np.zeros(len(loop), bool))
        chain.append(atoms)
        helix_flags.append(np.ones(n, bool))
        prev_end = atoms[-1]
    return np.concatenate(chain), np.concatenate(helix_flags)


def _orient_to(direction, spin_deg: float = 0.0) -> np.ndarray:
    """Rotation (3, 3) taking local z to ``direction``, with an extra spin about it."""
    frame = _frame(direction)                    # rows u, v, d
    spin = Rotation.from_euler("z", spin_deg, degrees=True).as_matrix()
    return frame.T @ spin


def _merge(*parts):
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def _dock(part, fixed: np.ndarray, direction, gap_A: float = 5.0):
    """Slide ``part`` along ``direction`` until its closest atom is ``gap_A`` from ``fixed``.

    Returns (moved part, junction point (3,): midpoint of the closest pair of atoms).
    """
    tree, d = cKDTree(fixed), np.asarray(direction, float) / np.linalg.norm(direction)
    lo, hi = 0.0, 150.0
    for _ in range(60):                          # bisection on the closest distance
        t = 0.5 * (lo + hi)
        if tree.query(part[0] + t * d)[0].min() < gap_A:
            lo = t
        else:
            hi = t
    pos = part[0] + hi * d
    dist, idx = tree.query(pos)
    k = int(np.argmin(dist))
    return (pos, part[1]), 0.5 * (pos[k] + fixed[idx[k]])


def _assemble(parts, names, moves: Moves, kind: str) -> Phantom:
    pos = np.concatenate([p for p, _ in parts])
    helix = np.concatenate([h for _, h in parts])
    labels = np.concatenate([np.full(len(p), i) for i, (p, _) in enumerate(parts)])
    centroid = pos.mean(0)
    moves.pivot = moves.pivot - centroid
    return Phantom(positions=pos - centroid, amplitudes=np.ones(len(pos)),
                   bfactors=np.where(helix, HELIX_B, LOOP_B), labels=labels,
                   domain_names=tuple(names), moves=moves, kind=kind)


def _unit(v) -> np.ndarray:
    v = np.asarray(v, float)
    return v / np.linalg.norm(v)


def _hinge_parts(rng):
    core = _merge(_bundle(rng, np.zeros(3), _orient_to([0.3, -0.2, 1.0], 17.0), (16.0, 12.0), 14, 24),
                  _bundle(rng, np.array([-4.0, -17.0, -12.0]), _orient_to([1.0, 0.4, 0.2], 50.0),
                          (9.0, 6.0), 3, 12))
    d_arm, d_tw = _unit([1.0, 0.15, -0.1]), _unit([-0.55, 0.75, 0.35])
    arm, j_arm = _dock(_bundle(rng, np.zeros(3), _orient_to(d_arm, 30.0), (10.0, 8.0), 6, 28),
                       core[0], d_arm)
    tw_centre = np.zeros(3)
    twist = _merge(_bundle(rng, tw_centre, _orient_to(d_tw, -20.0), (8.0, 8.0), 5, 26),
                   _bundle(rng, 9.0 * d_tw + 14.0 * _frame(d_tw)[0], _orient_to(_frame(d_tw)[1]),
                           (5.0, 5.0), 2, 9))
    before = twist[0].mean(0)
    twist, _ = _dock(twist, core[0], d_tw)
    tw_centre = tw_centre + (twist[0].mean(0) - before)      # the twist axis runs through it
    hinge_axis = _unit(np.cross(d_arm, [0.2, 0.3, 1.0]))
    moves = Moves(coord=np.array([0, 1]), domain=np.array([1, 2]),
                  kind=np.array([_ROTATION, _ROTATION]), vector=np.stack([hinge_axis, d_tw]),
                  pivot=np.stack([j_arm, tw_centre]), amount=np.array([20.0, 40.0]),
                  names=("hinge", "twist"))
    return [core, arm, twist], ("core", "arm", "twist"), moves


def _shear_parts(rng):
    n = _unit([0.2, -0.3, 1.0])
    s = _unit(np.cross(n, [1.0, 0.0, 0.0]))
    t = np.cross(n, s)
    # helix axes along t; the lattice spans (s, n), flattened along n: slabs that meet on a plane
    orient_up = np.stack([s, n, t], 1)
    orient_dn = Rotation.from_rotvec(np.deg2rad(20.0) * n).as_matrix() @ orient_up
    upper = _bundle(rng, np.zeros(3), orient_up, (34.0, 7.0), 15, 34)
    lower = _merge(_bundle(rng, -4.0 * s, orient_dn, (30.0, 7.0), 13, 30),
                   _bundle(rng, -12.0 * n + 16.0 * s + 10.0 * t, _orient_to(s + t), (5.0, 5.0), 2, 10))
    lower, _ = _dock(lower, upper[0], -n)
    moves = Moves(coord=np.array([0, 0]), domain=np.array([0, 1]),
                  kind=np.array([_TRANSLATION, _TRANSLATION]), vector=np.stack([s, s]),
                  pivot=np.zeros((2, 3)), amount=np.array([7.0, -7.0]), names=("shear",))
    return [upper, lower], ("upper", "lower"), moves


def make_phantom(kind: str = "hinge", *, seed: int = DEFAULT_PHANTOM_SEED) -> Phantom:
    """Build a phantom of ``kind`` ("hinge", "rigid" or "shear"), about 100 Å across.

    ``seed`` only jitters helix lengths and phases; the layout is fixed, so every dataset of a kind
    shows the same object unless a different ``seed`` is asked for.
    """
    if kind not in KINDS:
        raise FlexviewInputError(f"unknown phantom kind {kind!r}; choose one of {', '.join(KINDS)}",
                                 field="kind")
    rng = np.random.default_rng(seed)
    parts, names, moves = _shear_parts(rng) if kind == "shear" else _hinge_parts(rng)
    if kind == "rigid":
        moves = Moves.none()
    return _assemble(parts, names, moves, kind)
