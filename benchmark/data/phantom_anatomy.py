"""One synthetic abdominal CT slab: organ shapes, HU-like intensities, deformation, blur, noise.

The geometry is a handful of implicit shapes (ellipsoids, tubes along curves) placed like the
upper abdomen around the first lumbar vertebra, in patient coordinates (RAS, mm, origin near
the centre of the body). Per case, everything is jittered (body size, organ positions, sizes,
rotations, contrast phase) and the whole anatomy is warped by a smooth random displacement
field; organ surfaces get a lobulation field. What makes it hard on purpose:

* organ contrasts overlap (liver ~60 HU, spleen ~50, pancreas ~40, bowel 20-50, IVC beside the
  aorta, muscle of the diaphragmatic crura beside the adrenals), and vary by case;
* the adrenals are thin (6-8 mm) plates, about two voxels thick at the default spacing;
* unlabelled look-alikes touch labelled organs (SMA leaving the aorta, duodenum wrapping the
  pancreatic head, splenic vein along the pancreas, gallbladder and renal sinus carved out);
* partial volume (soft edges one voxel wide plus a Gaussian point-spread function), organ
  texture and correlated noise of 10-22 HU.

Hand-written rather than taken from a library: no installable package generates labelled
abdominal CT; shapes are evaluated analytically on the voxel grid with vectorised numpy.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

__all__ = ["FOV_MM", "PHANTOM_LABELS", "smooth_random_field", "synthesize_case"]

PHANTOM_LABELS = {
    0: "background",
    1: "liver",
    2: "spleen",
    3: "kidney_right",
    4: "kidney_left",
    5: "pancreas",
    6: "aorta",
    7: "adrenal_right",
    8: "adrenal_left",
}
# Nominal field of view (x, y, z) in mm; the in-plane spacing scatters around FOV / voxels.
FOV_MM = (300.0, 300.0, 150.0)


class _Painter:
    """Layers structures onto an HU volume (soft edges) and a label volume (hard edges).

    Shapes are evaluated inside world-space bounding boxes only (``box``), which keeps the
    generator fast; the margin covers the warp displacement.
    """

    def __init__(self, p, axes_mm, edge_mm: float, textures: np.ndarray):
        self.p = p
        self.axes_mm = axes_mm  # unwarped world coordinate of each voxel index, per axis
        self.edge_mm = edge_mm
        self.textures = textures  # [2, ...] unit-variance fields: fine and coarse grain
        shape = p[0].shape
        self.hu = np.full(shape, -1000.0, dtype=np.float32)
        self.label = np.zeros(shape, dtype=np.uint8)

    def box(self, lo, hi, margin: float = 25.0) -> tuple[slice, ...]:
        """Voxel slices whose unwarped world coordinates lie within ``[lo, hi] +- margin``."""
        out = []
        for ax, a, b in zip(self.axes_mm, lo, hi, strict=True):
            idx = np.flatnonzero((ax >= a - margin) & (ax <= b + margin))
            out.append(slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0))
        return tuple(out)

    def at(self, box: tuple[slice, ...]):
        return tuple(c[box] for c in self.p)

    def paint(self, sd, hu: float, texture: float = 0.0, label: int | None = None, box=None):
        """Fill where the signed distance ``sd`` (mm, < 0 inside) is negative."""
        box = box or (slice(None),) * 3
        occ = np.clip(0.5 - sd / self.edge_mm, 0.0, 1.0)
        value = hu + texture * (0.7 * self.textures[0][box] + 0.7 * self.textures[1][box])
        self.hu[box] += occ * (value - self.hu[box])
        if label is not None:
            self.label[box][sd < 0] = label

    def shape(self, fn, lo, hi, *args, hu: float, texture: float = 0.0, label=None, extra=None):
        """Paint ``fn(p, *args)`` evaluated in the box ``[lo, hi]``; ``extra`` adds a full field."""
        box = self.box(lo, hi)
        sd = fn(self.at(box), *args)
        if extra is not None:
            sd = sd + extra[box]
        self.paint(sd, hu, texture, label, box)


def _rot(rz_deg: float, rx_deg: float = 0.0) -> np.ndarray:
    a, b = np.deg2rad(rz_deg), np.deg2rad(rx_deg)
    rz = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(b), -np.sin(b)], [0, np.sin(b), np.cos(b)]])
    return rz @ rx


def _ellipsoid(p, center, axes, rot: np.ndarray | None = None) -> np.ndarray:
    """Approximate signed distance (mm) to an ellipsoid: ``(r - 1) * min(axes)``."""
    d = [p[i] - center[i] for i in range(3)]
    if rot is not None:  # local coordinates q = R^T d
        d = [rot[0, i] * d[0] + rot[1, i] * d[1] + rot[2, i] * d[2] for i in range(3)]
    r = np.sqrt((d[0] / axes[0]) ** 2 + (d[1] / axes[1]) ** 2 + (d[2] / axes[2]) ** 2)
    return (r - 1.0) * min(axes)


def _cylinder(p, cx, cy, rx, ry) -> np.ndarray:
    """Signed distance to an elliptic cylinder along z (centre may vary with z: arrays)."""
    r = np.sqrt(((p[0] - cx) / rx) ** 2 + ((p[1] - cy) / ry) ** 2)
    return (r - 1.0) * np.minimum(rx, ry)


def _tube(p, points: np.ndarray, radii: np.ndarray) -> np.ndarray:
    """Signed distance to a tube of varying radius around a polyline ``points`` [n, 3]."""
    best = np.full(p[0].shape, np.inf, dtype=np.float32)
    best_r = np.zeros(p[0].shape, dtype=np.float32)
    for a, b, ra, rb in zip(points[:-1], points[1:], radii[:-1], radii[1:], strict=True):
        ab = b - a
        t = ((p[0] - a[0]) * ab[0] + (p[1] - a[1]) * ab[1] + (p[2] - a[2]) * ab[2]) / (ab @ ab)
        t = np.clip(t, 0.0, 1.0)
        dist = np.sqrt(sum((p[i] - (a[i] + t * ab[i])) ** 2 for i in range(3)))
        closer = dist < best
        best = np.where(closer, dist, best)
        best_r = np.where(closer, ra + t * (rb - ra), best_r)
    return best - best_r


def _smooth_curve(points: np.ndarray, n: int = 3) -> np.ndarray:
    """Chaikin corner cutting: a rounder polyline through the control points."""
    for _ in range(n):
        q = 0.75 * points[:-1] + 0.25 * points[1:]
        r = 0.25 * points[:-1] + 0.75 * points[1:]
        points = np.concatenate([points[:1], np.stack([q, r], 1).reshape(-1, 3), points[-1:]])
    return points


def smooth_random_field(rng, coarse: tuple[int, ...], shape: tuple[int, ...]) -> np.ndarray:
    """Unit-variance low-frequency random field: cubic upsampling of a coarse Gaussian grid.

    The cubic spline runs on a quarter-size grid and a linear zoom finishes the job: the field
    is smooth at that scale already, and a full-size cubic zoom costs most of the generator.
    """
    grid = rng.standard_normal(coarse)
    mid = tuple(max(c, s // 4) for s, c in zip(shape, coarse, strict=True))
    field = ndimage.zoom(grid, [m / c for m, c in zip(mid, coarse, strict=True)], order=3)
    field = ndimage.zoom(field, [s / m for s, m in zip(shape, mid, strict=True)], order=1)
    return (field / (field.std() + 1e-6)).astype(np.float32)


def _noise_field(rng, shape, sigma_vox) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma_vox)
    return field / (field.std() + 1e-6)


def synthesize_case(
    rng: np.random.Generator, inplane_voxels: int = 96
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw one case.

    Args:
        rng: the case's generator (all randomness comes from it).
        inplane_voxels: in-plane grid size; the field of view is fixed, so fewer voxels means
            coarser spacing (slice thickness scales the same way).

    Returns:
        ``(hu, label, affine)``: int16 HU ``[i, j, k]``, uint8 labels ``[i, j, k]`` (ids of
        :data:`PHANTOM_LABELS`) and the ``4 x 4`` NIfTI affine. Voxels are stored as
        DICOM-derived CT usually is: ``i`` towards the patient's left, ``j`` posterior, ``k``
        superior (an LPS grid, so readers must reorient).
    """
    u = rng.uniform

    def ru(lo: float, hi: float) -> np.ndarray:
        return rng.uniform(lo, hi, size=3)

    scale = 96.0 / inplane_voxels
    s_xy = FOV_MM[0] / inplane_voxels * u(0.92, 1.1)
    s_z = u(3.2, 4.6) * scale
    nz = int(round(FOV_MM[2] / s_z))
    shape = (inplane_voxels, inplane_voxels, nz)
    origin = np.array(
        [
            s_xy * (shape[0] - 1) / 2 + u(-8, 8),
            s_xy * (shape[1] - 1) / 2 + u(-8, 8),
            -s_z * (nz - 1) / 2 + u(-10, 10),
        ]
    )
    affine = np.diag([-s_xy, -s_xy, s_z, 1.0])
    affine[:3, 3] = origin
    # World coordinates of voxel centres, then a smooth random warp (about 5 mm rms).
    axes_mm = [
        (origin[0] - s_xy * np.arange(shape[0])).astype(np.float32),
        (origin[1] - s_xy * np.arange(shape[1])).astype(np.float32),
        (origin[2] + s_z * np.arange(shape[2])).astype(np.float32),
    ]
    x, y, z = axes_mm[0][:, None, None], axes_mm[1][None, :, None], axes_mm[2][None, None, :]
    warp = [5.0 * smooth_random_field(rng, (4, 4, 3), shape) for _ in range(3)]
    p = (x + warp[0], y + warp[1], z + warp[2])
    lobes = _noise_field(rng, shape, 2.0 / scale)  # surface lobulation, unit variance
    textures = np.stack([_noise_field(rng, shape, 0.8), _noise_field(rng, shape, 2.5 / scale)])
    paint = _Painter(p, axes_mm, edge_mm=0.5 * (2 * s_xy + s_z) / 3, textures=textures)
    big = 1e4  # "infinite" half-axis: an ellipsoid that is a cylinder over the slab

    # Body wall: subcutaneous fat, muscle, visceral fat with mesenteric strands.
    b = u(0.82, 1.0)
    ax, ay = 150 * b, 112 * b
    paint.paint(_cylinder(p, 0.0, -4.0 * b, ax, ay) + 4.0 * lobes, u(-110, -90), texture=8)
    fat, muscle = u(10, 28), u(8, 14)
    paint.paint(_cylinder(p, 0.0, -4.0 * b, ax - fat, ay - fat), u(40, 55), texture=6)
    cavity = _cylinder(p, 0.0, -2.0 * b, ax - fat - muscle, ay - fat - muscle)
    paint.paint(cavity, u(-100, -80), texture=25)
    # Spine, back muscles, psoas, lower ribs.
    vy = -62 * b
    for sx in (-1, 1):
        c = np.array([sx * 38 * b, vy - 32, 0])
        paint.shape(
            _ellipsoid, c - [26, 20, 80], c + [26, 20, 80], c, (26, 20, big), hu=50, texture=5
        )
        psoas = 10 + 8 * np.clip((40 - p[2]) / 110, 0, 1)
        paint.paint(_cylinder(p, sx * 36 * b, vy + 6, psoas, psoas * 1.1), 48, texture=5)
    spine_box = paint.box((-25, vy - 55, -100), (25, vy + 25, 100))
    ps = paint.at(spine_box)
    paint.paint(_cylinder(ps, 0.0, vy, 22, 18), u(600, 800), box=spine_box)  # cortical shell
    body_sd = _cylinder(ps, 0.0, vy, 19, 15)
    paint.paint(body_sd, 220, texture=30, box=spine_box)
    disc = (np.cos(2 * np.pi * (ps[2] - u(0, 30)) / 30.0) > 0.75) & (body_sd < 0)
    paint.hu[spine_box][disc] = 85  # intervertebral discs
    paint.paint(_ellipsoid(ps, (0, vy - 40, 0), (24, 9, big)), 500, texture=40, box=spine_box)
    paint.paint(_cylinder(ps, 0.0, vy - 27, 9, 9), 20, box=spine_box)  # spinal canal
    for ang in np.deg2rad([-150, -125, -55, -30]) + u(-0.1, 0.1):
        cx, cy = np.cos(ang) * (ax - fat - 4), np.sin(ang) * (ay - fat - 4) - 4 * b
        box = paint.box((cx - 6, cy - 6, -20), (cx + 6, cy + 6, 100))
        paint.paint(_cylinder(paint.at(box), cx, cy, 6, 6), 550, texture=40, box=box)
    # Bowel loops and stomach: unlabelled look-alikes in the anterior cavity.
    for _ in range(16):
        c = np.array([u(-90, 90) * b, u(-5, 70) * b, u(-70, 60)])
        r = u(10, 22)
        axes = (r, r * u(0.7, 1.3), r * 1.5)
        hu = u(15, 50) if u() < 0.8 else u(-900, -700)
        box = paint.box(c - 1.5 * r, c + 1.5 * r)
        sd = np.maximum(_ellipsoid(paint.at(box), c, axes), cavity[box])
        paint.paint(sd, hu, 10, box=box)
    c = np.array([-45 * b + u(-8, 8), 38 * b, 50 + u(-10, 10)])
    box = paint.box(c - 45, c + 45)
    stomach = np.maximum(_ellipsoid(paint.at(box), c, (40, 30, 40), _rot(30)), cavity[box])
    paint.paint(stomach, u(20, 40), texture=8, box=box)
    paint.paint(stomach + 10, u(0, 15), texture=3, box=box)  # fluid lumen

    # Organs, from large to small; later structures overwrite earlier ones.
    mu_liver = u(52, 70)
    c1, a1 = np.array([62, 2, 35]) * b + ru(-8, 8), np.array([78, 88, 80]) * b * u(0.9, 1.1)
    c2, a2 = np.array([-15, 42, 55]) * b + ru(-8, 8), np.array([55, 38, 38]) * b * u(0.8, 1.2)
    liver = np.minimum(_ellipsoid(p, c1, a1), _ellipsoid(p, c2, a2, _rot(u(-15, 15))))
    liver = np.maximum(liver + 2.5 * lobes, cavity + 3)
    paint.paint(liver, mu_liver, texture=6, label=1)
    for _ in range(3):  # portal / hepatic veins, brighter, still liver
        a = np.array([u(20, 60), u(-10, 30), u(-10, 50)]) * b
        pts = np.stack([a, a + ru(-40, 40)])
        box = paint.box(pts.min(0) - 5, pts.max(0) + 5)
        vessel = np.maximum(_tube(paint.at(box), pts, np.full(2, u(3, 5))), liver[box])
        paint.paint(vessel, mu_liver + u(25, 50), texture=4, box=box)
    if u() < 0.8:  # gallbladder, carved out of the liver label
        c = np.array([42, 35, -10]) * b + ru(-8, 8)
        rot = _rot(u(-20, 20), u(-15, 15))
        paint.shape(
            _ellipsoid, c - 30, c + 30, c, (14, 15, 28), rot, hu=u(0, 20), texture=3, label=0
        )
    c = np.array([-82, -32, 30]) * b + ru(-8, 8)
    box = paint.box(c - 60, c + 60)
    spleen = _ellipsoid(
        paint.at(box), c, np.array([26, 52, 48]) * u(0.8, 1.15), _rot(35 + u(-10, 10), u(-10, 10))
    )
    spleen = np.maximum(spleen + 2 * lobes[box], cavity[box] + 3)
    paint.paint(spleen, mu_liver + u(-20, 0), texture=6, label=2, box=box)
    for side, lid, zc in ((1, 3, u(-30, -10)), (-1, 4, u(-15, 5))):
        c = np.array([side * 62 * b, -42 * b, zc]) + ru(-6, 6)
        rot = _rot(side * u(-35, -20), u(-12, 12))
        axes = np.array([24, 30, 52]) * u(0.85, 1.15)
        box = paint.box(c - 60, c + 60)
        kid = _ellipsoid(paint.at(box), c, axes, rot) + 1.5 * lobes[box]
        paint.paint(kid, u(90, 120), texture=8, label=lid, box=box)  # medulla
        paint.paint(np.maximum(kid, -(kid + u(4, 6))), u(140, 200), texture=10, box=box)  # cortex
        hilum = c + rot @ np.array([-side * axes[0] * 0.75, axes[1] * 0.25, 0.0])
        sinus = _ellipsoid(paint.at(box), hilum, axes * np.array([0.45, 0.35, 0.45]), rot)
        paint.paint(sinus, u(-60, 10), texture=6, label=0, box=box)
    # IVC and aorta with a superior mesenteric artery that is not labelled.
    paint.paint(
        _cylinder(p, 22 * b + u(-4, 4), -30 * b, u(10, 14), u(7, 10)), u(90, 150), texture=5
    )
    phi, r_ao = u(0, 2 * np.pi), u(9, 13)
    cx = -14 * b + 4 * np.sin(p[2] / 45 + phi) + u(-4, 4)
    cy = -32 * b + u(-4, 4)
    mu_ao = u(150, 260)
    for sx in (-1, 1):  # diaphragmatic crura: muscle beside aorta and adrenals
        crus = _cylinder(p, cx + sx * (r_ao + 6), cy - 4, 5, 8) + np.where(p[2] > -10, 0.0, 1e3)
        paint.paint(crus, 50, texture=5)
    paint.paint(_cylinder(p, cx, cy, r_ao, r_ao * u(0.9, 1.1)) + 0.5 * lobes, mu_ao, 5, label=6)
    sma = np.array([-14 * b, cy + r_ao + 1.0, u(-5, 15)])
    sma = _smooth_curve(np.stack([sma, sma + [4, 25, -10], sma + [8, 40, -50]]), 2)
    paint.shape(
        _tube,
        sma.min(0),
        sma.max(0),
        sma,
        np.full(len(sma), u(3.5, 5)),
        hu=mu_ao,
        texture=5,
        label=0,
    )
    # Duodenum, pancreas, splenic vein.
    mu_panc = mu_liver - u(12, 28)
    duo = np.array([[35, 15, 15], [58, 2, -5], [48, -8, -28], [18, -2, -38]]) * [b, b, 1]
    duo = _smooth_curve(duo + ru(-6, 6))
    paint.shape(
        _tube,
        duo.min(0) - 12,
        duo.max(0) + 12,
        duo,
        np.full(len(duo), u(9, 12)),
        hu=u(25, 45),
        texture=10,
    )
    ctrl = np.array([[32, -4, -15], [8, 10, -5], [-25, 6, 2], [-62, -12, 14]]) * [b, b, 1]
    curve = _smooth_curve(ctrl + rng.uniform(-8, 8, size=(4, 3)))
    radii = np.interp(np.linspace(0, 1, len(curve)), [0, 0.3, 0.6, 1], [15, 9, 10, 8]) * u(
        0.85, 1.15
    )
    paint.shape(
        _tube,
        curve.min(0) - 18,
        curve.max(0) + 18,
        curve,
        radii,
        hu=mu_panc,
        texture=12,
        label=5,
        extra=2.5 * lobes,
    )
    vein = curve[len(curve) // 3 :] + [0, -radii.mean() - 1, 0]
    paint.shape(
        _tube,
        vein.min(0) - 6,
        vein.max(0) + 6,
        vein,
        np.full(len(vein), u(3, 5)),
        hu=u(110, 170),
        texture=5,
        label=0,
    )
    # Adrenals: two thin limbs each (an inverted V), above and medial to the kidneys.
    for side, lid in ((1, 7), (-1, 8)):
        c = np.array([side * 30 * b, -30 * b, u(18, 38)]) + ru(-4, 4)
        thick, mu_ad = u(3.0, 4.0), u(25, 45)
        box = paint.box(c - 25, c + 25)
        pa = paint.at(box)
        limbs = [
            _ellipsoid(pa, c + rot @ [0, 0, -6], (thick, u(9, 13), u(11, 15)), rot)
            for rot in (_rot(side * u(15, 30), u(-25, -10)), _rot(-side * u(15, 30), u(10, 25)))
        ]
        paint.paint(np.minimum(*limbs) + 0.8 * lobes[box], mu_ad, texture=6, label=lid, box=box)

    # Scanner: point-spread function (partial volume across thick slices), then noise.
    hu = ndimage.gaussian_filter(paint.hu, (0.5, 0.5, 0.45))
    noise = _noise_field(rng, shape, 0.6) * u(10, 22)
    hu = np.clip(np.rint(hu + noise + u(-5, 5)), -1024, 3071).astype(np.int16)
    return hu, paint.label, affine
