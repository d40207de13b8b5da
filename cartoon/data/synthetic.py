"""SYNTHETIC cel-shaded cartoon frames, drawn by code: the embedded default cartoon set.

No cartoon images ship with the installed packages and none may be downloaded, so the
default pipeline learns the cartoon style from these procedurally drawn scenes. They have
what CartoonGAN's cartoon domain is about: flat colours from a small palette, two or three
hard tone steps per shape from one light direction, and dark outlines. They are simple
and are not a substitute for real cartoon frames when quality matters.
"""

from __future__ import annotations

import colorsys
from collections.abc import Callable

import cv2
import numpy as np

Colour = np.ndarray  # float RGB in 0..255, shape (3,)
Mask = np.ndarray  # HxW uint8, 255 inside the shape

_OUTLINE = np.array([28.0, 22.0, 30.0])


def cel_shaded_scene(rng: np.random.Generator, size: int) -> np.ndarray:
    """A size x size uint8 RGB cartoon landscape (sky, sun, clouds, hills, ground, objects)."""
    scene = _Scene(rng, size)
    scene.sky()
    scene.sun()
    for _ in range(rng.integers(1, 4)):
        scene.cloud()
    for _ in range(rng.integers(1, 3)):
        scene.hill()
    scene.ground()
    objects: list[Callable[[int, float], None]] = [scene.house, scene.tree, scene.bush, scene.rock, scene.sign]
    placements = sorted(rng.uniform(0.0, 1.0, size=rng.integers(3, 7)))  # far (0) to near (1): painter's order
    for depth in placements:
        draw = objects[rng.integers(len(objects))]
        draw(int(rng.integers(0, size)), float(depth))
    return np.clip(scene.canvas, 0, 255).astype(np.uint8)


def _hsv(h: float, s: float, v: float) -> Colour:
    return np.array(colorsys.hsv_to_rgb(h % 1.0, s, v)) * 255.0


class _Scene:
    """One canvas plus the scene-wide choices (light direction, palette, horizon, line width)."""

    def __init__(self, rng: np.random.Generator, size: int) -> None:
        self.rng = rng
        self.size = size
        self.canvas = np.zeros((size, size, 3), np.float64)
        self.line = int(np.clip(round(size / 100), 1, 3))
        # Light from the upper left or upper right; shadows fall on the opposite side.
        angle = np.deg2rad(rng.uniform(20, 60)) * rng.choice([-1.0, 1.0])
        self.light = np.array([np.sin(angle), -np.cos(angle)])  # (x, y), y pointing down
        self.horizon = int(size * rng.uniform(0.45, 0.65))
        base_hue = rng.uniform()
        # Analogous hues plus the complement: a small palette that goes together.
        self.hues = [base_hue + d for d in (0.0, 1 / 12, -1 / 12, 0.5, 0.5 + 1 / 12)]
        ys, xs = np.mgrid[0:size, 0:size]
        self.xs, self.ys = xs.astype(np.float64), ys.astype(np.float64)

    def colour(self) -> Colour:
        return _hsv(self.rng.choice(self.hues), self.rng.uniform(0.55, 0.9), self.rng.uniform(0.75, 1.0))

    def mask(self) -> Mask:
        return np.zeros((self.size, self.size), np.uint8)

    def paint(self, mask: Mask, base: Colour, round_shape: bool, outline: bool = True) -> None:
        """Fill a shape with three flat tones (shadow, base, highlight) and outline it."""
        inside = mask > 0
        if not inside.any():
            return
        x, y, w, h = cv2.boundingRect(mask)
        cx, cy, half = x + w / 2, y + h / 2, max(w, h) / 2
        if round_shape:  # a highlight spot toward the light, a shadow crescent away from it
            hx, hy = cx + self.light[0] * half * 0.45, cy + self.light[1] * half * 0.45
            dist = np.hypot((self.xs - hx) / (w / 2), (self.ys - hy) / (h / 2))
            tone = np.digitize(-dist, [-1.05, -0.45])
        else:  # straight bands across the shape, perpendicular to the light
            along = ((self.xs - cx) * self.light[0] + (self.ys - cy) * self.light[1]) / half
            tone = np.digitize(along, [-0.25, 0.45])
        shades = np.stack([base * 0.68, base, base + (255.0 - base) * 0.4])
        self.canvas[inside] = shades[tone[inside]]
        if outline:
            contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
            cv2.drawContours(self.canvas, contours, -1, _OUTLINE.tolist(), self.line, cv2.LINE_8)

    def sky(self) -> None:
        """Horizontal flat bands getting lighter toward the horizon."""
        dusk = self.rng.uniform() < 0.25
        hue = self.rng.uniform(0.02, 0.1) if dusk else self.rng.uniform(0.53, 0.62)
        sat = self.rng.uniform(0.35, 0.6)
        bands = self.rng.integers(2, 4)
        edges = np.linspace(0, self.horizon, bands + 1).astype(int)
        for i in range(bands):
            self.canvas[edges[i] : edges[i + 1]] = _hsv(hue, sat * (1 - 0.25 * i), 0.85 + 0.05 * i)

    def sun(self) -> None:
        radius = self.size * self.rng.uniform(0.06, 0.1)
        side = 0.5 + 0.35 * np.sign(-self.light[0])  # on the side the light comes from
        centre = (int(self.size * side), int(self.horizon * self.rng.uniform(0.2, 0.45)))
        mask = self.mask()
        cv2.circle(mask, centre, max(2, int(radius)), 255, -1, cv2.LINE_8)
        self.paint(mask, _hsv(self.rng.uniform(0.1, 0.16), 0.75, 1.0), round_shape=True)

    def cloud(self) -> None:
        cx, cy = self.rng.uniform(0, self.size), self.rng.uniform(0.1, 0.6) * self.horizon
        r = self.size * self.rng.uniform(0.04, 0.07)
        mask = self.mask()
        for dx, dy, k in ((-1.2, 0.3, 0.8), (0.0, 0.0, 1.1), (1.2, 0.3, 0.8), (0.6, -0.5, 0.8)):
            cv2.circle(mask, (int(cx + dx * r), int(cy + dy * r)), max(1, int(r * k)), 255, -1, cv2.LINE_8)
        self.paint(mask, _hsv(self.rng.uniform(0.55, 0.65), 0.08, 0.97), round_shape=True)

    def hill(self) -> None:
        mask = self.mask()
        axes = (int(self.size * self.rng.uniform(0.3, 0.6)), int(self.size * self.rng.uniform(0.12, 0.25)))
        centre = (int(self.rng.uniform(0, self.size)), self.horizon + axes[1] // 3)
        cv2.ellipse(mask, centre, axes, 0, 0, 360, 255, -1, cv2.LINE_8)
        self.paint(mask, _hsv(self.rng.uniform(0.22, 0.42), self.rng.uniform(0.4, 0.7), 0.7), round_shape=True)

    def ground(self) -> None:
        """A flat ground band below the horizon, with one darker strip in the foreground."""
        mask = self.mask()
        mask[self.horizon :] = 255
        grass = self.rng.uniform() < 0.7
        base = _hsv(self.rng.uniform(0.22, 0.35) if grass else self.rng.uniform(0.08, 0.12), 0.55, 0.8)
        self.paint(mask, base, round_shape=False, outline=False)
        near = self.horizon + int((self.size - self.horizon) * self.rng.uniform(0.55, 0.8))
        self.canvas[near:] = base * 0.85
        cv2.line(self.canvas, (0, self.horizon), (self.size, self.horizon), _OUTLINE.tolist(), self.line)

    def _footing(self, depth: float) -> tuple[int, float]:
        """Where an object stands and how large it is: nearer objects stand lower and are bigger."""
        base_y = int(self.horizon + (self.size - self.horizon) * (0.1 + 0.85 * depth))
        return base_y, self.size * (0.12 + 0.2 * depth)

    def house(self, x: int, depth: float) -> None:
        base_y, scale = self._footing(depth)
        w, h = int(scale * self.rng.uniform(0.8, 1.2)), int(scale * self.rng.uniform(0.6, 0.9))
        body = self.mask()
        cv2.rectangle(body, (x - w // 2, base_y - h), (x + w // 2, base_y), 255, -1)
        roof = self.mask()
        apex = (x, base_y - h - int(scale * self.rng.uniform(0.35, 0.6)))
        overhang = max(1, w // 8)
        cv2.fillPoly(roof, [np.array([(x - w // 2 - overhang, base_y - h), apex, (x + w // 2 + overhang, base_y - h)])], 255)
        self.paint(body, self.colour(), round_shape=False)
        self.paint(roof, _hsv(self.hues[3], 0.7, 0.75), round_shape=False)
        door = self.mask()
        dw, dh = max(1, w // 5), max(2, h // 2)
        cv2.rectangle(door, (x - dw // 2, base_y - dh), (x + dw // 2, base_y), 255, -1)
        self.paint(door, _hsv(0.07, 0.6, 0.45), round_shape=False)
        window = self.mask()
        side = max(1, w // 6)
        wx = x + w // 4 * (1 if self.rng.uniform() < 0.5 else -1)
        cv2.rectangle(window, (wx - side // 2, base_y - h + h // 4), (wx + side // 2, base_y - h + h // 4 + side), 255, -1)
        self.paint(window, _hsv(0.13, 0.5, 1.0), round_shape=False)

    def tree(self, x: int, depth: float) -> None:
        base_y, scale = self._footing(depth)
        trunk_w, trunk_h = max(1, int(scale * 0.15)), int(scale * self.rng.uniform(0.4, 0.6))
        trunk = self.mask()
        cv2.rectangle(trunk, (x - trunk_w // 2, base_y - trunk_h), (x + trunk_w // 2, base_y), 255, -1)
        self.paint(trunk, _hsv(0.07, 0.65, 0.5), round_shape=False)
        crown = self.mask()
        axes = (max(2, int(scale * self.rng.uniform(0.35, 0.5))), max(2, int(scale * self.rng.uniform(0.4, 0.6))))
        cv2.ellipse(crown, (x, base_y - trunk_h - axes[1] // 2), axes, 0, 0, 360, 255, -1, cv2.LINE_8)
        self.paint(crown, _hsv(self.rng.uniform(0.22, 0.4), 0.7, self.rng.uniform(0.6, 0.85)), round_shape=True)

    def bush(self, x: int, depth: float) -> None:
        base_y, scale = self._footing(depth)
        mask = self.mask()
        axes = (max(2, int(scale * self.rng.uniform(0.3, 0.5))), max(2, int(scale * self.rng.uniform(0.2, 0.35))))
        cv2.ellipse(mask, (x, base_y - axes[1]), axes, 0, 0, 360, 255, -1, cv2.LINE_8)
        self.paint(mask, self.colour(), round_shape=True)

    def rock(self, x: int, depth: float) -> None:
        """A random convex polygon standing on the ground."""
        base_y, scale = self._footing(depth)
        angles = np.sort(self.rng.uniform(0, 2 * np.pi, size=self.rng.integers(5, 8)))
        radii = scale * 0.3 * self.rng.uniform(0.7, 1.0, size=angles.size)
        points = np.stack([x + radii * np.cos(angles), base_y - scale * 0.2 + radii * np.sin(angles) * 0.7], axis=1)
        mask = self.mask()
        cv2.fillPoly(mask, [cv2.convexHull(points.astype(np.int32))], 255)
        self.paint(mask, self.colour(), round_shape=False)

    def sign(self, x: int, depth: float) -> None:
        """A rounded-rectangle board on a post."""
        base_y, scale = self._footing(depth)
        post = self.mask()
        pw = max(1, int(scale * 0.06))
        cv2.rectangle(post, (x - pw, base_y - int(scale * 0.5)), (x + pw, base_y), 255, -1)
        self.paint(post, _hsv(0.08, 0.6, 0.55), round_shape=False)
        w, h = int(scale * self.rng.uniform(0.5, 0.8)), int(scale * self.rng.uniform(0.3, 0.45))
        top = base_y - int(scale * 0.45) - h
        self.paint(_rounded_rect(self.mask(), (x - w // 2, top), (x + w // 2, top + h), max(1, h // 4)), self.colour(), round_shape=False)


def _rounded_rect(mask: Mask, p0: tuple[int, int], p1: tuple[int, int], radius: int) -> Mask:
    """Fill a rectangle with rounded corners (two overlapping rectangles plus corner discs)."""
    (x0, y0), (x1, y1) = p0, p1
    cv2.rectangle(mask, (x0 + radius, y0), (x1 - radius, y1), 255, -1)
    cv2.rectangle(mask, (x0, y0 + radius), (x1, y1 - radius), 255, -1)
    for cx, cy in ((x0 + radius, y0 + radius), (x1 - radius, y0 + radius), (x0 + radius, y1 - radius), (x1 - radius, y1 - radius)):
        cv2.circle(mask, (cx, cy), radius, 255, -1, cv2.LINE_8)
    return mask
