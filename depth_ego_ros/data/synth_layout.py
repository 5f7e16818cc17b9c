"""Layout of a synthetic world's static content along its road: buildings or corridor walls,
poles, trees, parked cars, crates; then the look (sun direction, ground colours) and the scale.

Placement is at scale 1 from the generator handed in, in a fixed order (each kind of content
draws from the same stream, so the order is part of what a seed means); the finished
:class:`~.synth_scene.Scene` is in world units (``config.scale``).
"""
from __future__ import annotations

import math

import numpy as np

from .synth_config import SynthConfig
from .synth_motion import Drive
from .synth_scene import (
    MAT_BARK,
    MAT_CAR,
    MAT_CONCRETE,
    MAT_CRATE,
    MAT_FOLIAGE,
    MAT_GLASS_CABIN,
    MAT_METAL,
    Road,
    Scene,
)

# wall colours (multiplied by a little noise per building)
PALETTE = np.array([[0.72, 0.62, 0.50], [0.60, 0.35, 0.28], [0.75, 0.72, 0.66],
                    [0.55, 0.58, 0.62], [0.80, 0.70, 0.45], [0.45, 0.50, 0.42],
                    [0.70, 0.50, 0.40], [0.62, 0.60, 0.70]])
# car paints (parked and moving cars)
CAR_COLOURS = np.array([[0.55, 0.05, 0.05], [0.05, 0.15, 0.45], [0.75, 0.75, 0.78],
                        [0.08, 0.08, 0.09], [0.25, 0.35, 0.25], [0.70, 0.55, 0.15]])


def build_scene(config: SynthConfig, drive: Drive, rng) -> Scene:
    """The finalized static scene along ``drive.road``."""
    return _Layout(config, drive, rng).scene()


class _Layout:
    """Places primitives (tuples at scale 1) along the road, then builds the scene."""

    def __init__(self, config: SynthConfig, drive: Drive, rng):
        self.config, self.style, self.rng = config, config.style, rng
        self.road, self.kappa = drive.road, drive.kappa
        self.length = drive.road.s[-1]
        self.boxes, self.cyls, self.sphs = [], [], []

    def frame_at(self, s):
        """Centre-line point, heading and left normal at arc length s."""
        p = self.road.point(s)
        h = float(self.road.heading_at(s))
        return p, h, np.array([-math.sin(h), math.cos(h)])

    def local_radius(self, s0, s1):
        """Smallest turn radius of the road between s0 and s1 (1e9 on a straight)."""
        i0, i1 = int(max(s0, 0) / 0.25), int(min(s1, self.length) / 0.25) + 1
        km = np.abs(self.kappa[i0:i1]).max() if i1 > i0 else 0.0
        return 1.0 / km if km > 1e-6 else 1e9

    def jitter(self, c, amt=0.08):
        return np.clip(c * (1 + self.rng.normal(0, amt, 3)), 0.02, 0.95)

    def scene(self) -> Scene:
        self.buildings()
        self.poles()
        self.trees()
        self.parked_cars()
        self.crates()
        return self.assemble()

    def buildings(self):
        """Buildings (corridor: wall segments) along both sides, with gaps."""
        rng, st, L = self.rng, self.style, self.length
        boxes = self.boxes
        frame_at, jitter, palette, local_radius = self.frame_at, self.jitter, PALETTE, self.local_radius
        for side in (-1.0, 1.0):
            s = rng.uniform(0, 4)
            while s < L:
                length = rng.uniform(*st.building_length)
                R = local_radius(s - 5, s + length + 5)
                length = min(length, max(2.0, 2 * math.sqrt(2 * R * 0.8)))
                depth = rng.uniform(*st.building_depth)
                height = rng.uniform(*st.building_height)
                setback = rng.uniform(*st.setback)
                sc_ = s + length / 2
                p, h, nrm = frame_at(sc_)
                cen = p + side * (setback + depth / 2) * nrm
                mat = int(rng.choice(st.wall_materials))
                col = jitter(palette[rng.integers(len(palette))])
                par = [rng.uniform(2.2, 3.6), rng.uniform(2.8, 3.4), rng.uniform(0, 50), rng.uniform(0, 50)]
                boxes.append(((cen[0], cen[1], height / 2), (length / 2, depth / 2, height / 2), h, mat, col, par))
                s += length
                if rng.random() < st.building_gap_probability:
                    s += rng.uniform(*st.building_gap)

    def poles(self):
        """Street lights / poles at the kerb."""
        rng, st, L = self.rng, self.style, self.length
        cyls = self.cyls
        frame_at, jitter = self.frame_at, self.jitter
        hw = st.road_half_width
        if st.pole_spacing:
            for side in (-1.0, 1.0):
                s = rng.uniform(0, st.pole_spacing[1])
                while s < L:
                    p, h, nrm = frame_at(s)
                    c = p + side * (hw + 0.45) * nrm
                    cyls.append((c, rng.uniform(0.08, 0.14), (0.0, rng.uniform(4.5, 7.0)), MAT_METAL,
                                 jitter(np.array([0.45, 0.47, 0.5]), 0.15)))
                    s += rng.uniform(*st.pole_spacing)

    def trees(self):
        """Trees on the sidewalk: cylinder trunk + sphere crown."""
        rng, st, L = self.rng, self.style, self.length
        cyls, sphs = self.cyls, self.sphs
        frame_at, jitter = self.frame_at, self.jitter
        hw, sw = st.road_half_width, st.sidewalk
        if st.tree_spacing:
            for side in (-1.0, 1.0):
                s = rng.uniform(0, st.tree_spacing[1])
                while s < L:
                    p, h, nrm = frame_at(s)
                    c = p + side * (hw + sw * rng.uniform(0.55, 0.75)) * nrm
                    trunk_h = rng.uniform(2.2, 3.5)
                    cyls.append((c, rng.uniform(0.12, 0.25), (0.0, trunk_h), MAT_BARK,
                                 jitter(np.array([0.35, 0.25, 0.17]))))
                    r = rng.uniform(1.0, 1.9)
                    sphs.append(((c[0], c[1], trunk_h + 0.6 * r), r, MAT_FOLIAGE,
                                 jitter(np.array([0.20, 0.38, 0.12]), 0.2)))
                    s += rng.uniform(*st.tree_spacing)

    def parked_cars(self):
        """Parked cars along the left kerb (the camera drives on the right): body + glass cabin."""
        rng, st, L = self.rng, self.style, self.length
        boxes = self.boxes
        frame_at, jitter, car_cols = self.frame_at, self.jitter, CAR_COLOURS
        hw = st.road_half_width
        if st.car_spacing:
            s = rng.uniform(0, st.car_spacing[1])
            while s < L:
                p, h, nrm = frame_at(s)
                c = p + (hw - 1.0) * nrm
                col = jitter(car_cols[rng.integers(len(car_cols))], 0.05)
                ln = rng.uniform(3.8, 4.8)
                boxes.append(((c[0], c[1], 0.7), (ln / 2, 0.88, 0.45), h, MAT_CAR, col, [0.9, 0, 0, 0]))
                off = rng.uniform(-0.3, 0.1) * ln / 2
                cc = c + off * np.array([math.cos(h), math.sin(h)])
                boxes.append(((cc[0], cc[1], 1.42), (ln * 0.27, 0.78, 0.27), h, MAT_GLASS_CABIN, col, [0, 0, 0, 0]))
                s += ln + rng.uniform(*st.car_spacing)

    def crates(self):
        """Crates, bins, kiosks along the building line."""
        rng, st, L = self.rng, self.style, self.length
        boxes = self.boxes
        frame_at, jitter, palette = self.frame_at, self.jitter, PALETTE
        hw, sw = st.road_half_width, st.sidewalk
        if st.crate_spacing:
            for side in (-1.0, 1.0):
                s = rng.uniform(0, st.crate_spacing[1])
                while s < L:
                    p, h, nrm = frame_at(s)
                    size = rng.uniform(0.4, 1.2) * (0.6 if st.indoor else 1.0)
                    lat = (st.setback[0] - size / 2 - 0.15) if st.indoor else (hw + sw - size / 2 - 0.2)
                    c = p + side * lat * nrm
                    hz = rng.uniform(0.5, 1.6) * size
                    mat = MAT_CRATE if rng.random() < 0.6 else MAT_CONCRETE
                    col = jitter(np.array([0.55, 0.42, 0.28]) if mat == MAT_CRATE else palette[rng.integers(len(palette))])
                    boxes.append(((c[0], c[1], hz / 2), (size / 2, size / 2, hz / 2), h + rng.uniform(-0.3, 0.3),
                                  mat, col, [2.5, 3.0, rng.uniform(0, 50), 0]))
                    s += rng.uniform(*st.crate_spacing)

    def assemble(self) -> Scene:
        """The scene in world units, with its look (sun direction, ground colours) drawn last."""
        rng, st = self.rng, self.style
        cfg, road = self.config, self.road
        boxes, cyls, sphs = self.boxes, self.cyls, self.sphs
        k = cfg.scale
        scene = Scene(road=Road(s=road.s * k, xy=road.xy * k, heading=road.heading,
                                half_width=road.half_width * k, sidewalk=road.sidewalk * k,
                                lane_dash=3.0 * k))
        if boxes:
            scene.box_c = np.array([b[0] for b in boxes], float) * k
            scene.box_h = np.array([b[1] for b in boxes], float) * k
            scene.box_yaw = np.array([b[2] for b in boxes], float)
            scene.box_mat = np.array([b[3] for b in boxes], int)
            scene.box_col = np.array([b[4] for b in boxes], float)
            scene.box_par = np.array([b[5] for b in boxes], float)
            scene.box_par[:, :2] *= k   # window grid spacing is a length
        if cyls:
            scene.cyl_c = np.array([c[0] for c in cyls], float) * k
            scene.cyl_r = np.array([c[1] for c in cyls], float) * k
            scene.cyl_z = np.array([c[2] for c in cyls], float) * k
            scene.cyl_mat = np.array([c[3] for c in cyls], int)
            scene.cyl_col = np.array([c[4] for c in cyls], float)
        if sphs:
            scene.sph_c = np.array([s_[0] for s_ in sphs], float) * k
            scene.sph_r = np.array([s_[1] for s_ in sphs], float) * k
            scene.sph_mat = np.array([s_[2] for s_ in sphs], int)
            scene.sph_col = np.array([s_[3] for s_ in sphs], float)
        scene.ceiling = None if st.ceiling is None else st.ceiling * k
        scene.indoor = st.indoor
        scene.haze_distance = st.haze_distance * k
        scene.texture_scale = k * cfg.texture_scale
        scene.markings = st.road_markings
        az = rng.uniform(0, 2 * np.pi)
        el = math.radians(rng.uniform(30, 60))
        scene.sun_dir = np.array([math.cos(az) * math.cos(el), math.sin(az) * math.cos(el), math.sin(el)])
        g = np.array([[0.20, 0.20, 0.21], [0.50, 0.48, 0.45], [0.30, 0.38, 0.18]])
        if st.indoor:
            g = np.array([[0.45, 0.42, 0.38], [0.52, 0.47, 0.40], [0.45, 0.42, 0.38]])
        scene.ground_colors = np.clip(g * (1 + rng.normal(0, 0.08, g.shape)), 0.02, 0.95)
        return scene.finalize()


__all__ = ['CAR_COLOURS', 'PALETTE', 'build_scene']
