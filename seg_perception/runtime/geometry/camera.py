"""Camera intrinsics, lens distortion and mounting: the pinhole maths behind the ground grid.

Conventions (CONTRACT.md, REP 103): ``grid_frame`` is x forward, y left, z up. The camera
*body* frame has the same axes and is placed in ``grid_frame`` by ``camera.x/y/z`` and
URDF-style fixed-axis ``roll/pitch/yaw`` (R = Rz(yaw) Ry(pitch) Rx(roll)); a camera looking
down at the road has positive pitch. The *optical* frame is z forward, x right, y down, with
``z_opt = x_body, x_opt = -y_body, y_opt = -z_body``. Pixel (0, 0) is the *centre* of the
top-left pixel (OpenCV / ROS CameraInfo convention), so pixel ``(u, v)`` covers
``[u - 0.5, u + 0.5) x [v - 0.5, v + 0.5)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import cv2
import numpy as np

#: Distortion models of sensor_msgs/CameraInfo that are honoured, with their coefficient counts.
SUPPORTED_DISTORTION: dict[str, tuple[int, ...]] = {
    "plumb_bob": (4, 5),
    "rational_polynomial": (5, 8),
    "equidistant": (4,),
}

#: Bounds beyond which CameraInfo values describe no real camera and the projection maths
#: would overflow: pixels per focal length, principal point and skew (pixels), distortion
#: coefficients, and image sides (pixels).
MAX_FOCAL = 1e7
MIN_FOCAL = 1e-3
MAX_PIXEL_COORD = 1e7
MAX_DISTORTION = 1e6
MAX_IMAGE_SIDE = 1 << 17

# Floating-point states that extreme but accepted intrinsics produce far outside the lens
# model's valid range (overflow to inf, inf - inf): those points come out NaN, not visible.
_QUIET = {"over": "ignore", "invalid": "ignore", "divide": "ignore", "under": "ignore"}

# Rotation from the optical frame to the body frame (columns: optical x, y, z in body axes).
BODY_FROM_OPTICAL = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def rotate(points: np.ndarray, rot: np.ndarray) -> np.ndarray:
    """``points @ rot.T`` for (N, 3) points, written out: numpy's matmul with an inner
    dimension of 3 is several times slower than three fused multiply-adds per column."""
    p = np.asarray(points, dtype=np.float64)
    x, y, z = p[:, 0], p[:, 1], p[:, 2]
    out = np.empty_like(p)
    for i in range(3):
        out[:, i] = rot[i, 0] * x + rot[i, 1] * y + rot[i, 2] * z
    return out


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """URDF fixed-axis roll-pitch-yaw: rotate about x, then the fixed y, then the fixed z."""
    return rot_z(yaw) @ rot_y(pitch) @ rot_x(roll)


@dataclass(frozen=True)
class CameraMounting:
    """Pose of the camera *body* frame (x fwd, y left, z up) in ``grid_frame``; metres, radians."""

    x: float = 0.0
    y: float = 0.0
    z: float = 1.5
    roll: float = 0.0
    pitch: float = 0.0
    yaw: float = 0.0

    def validate(self) -> CameraMounting:
        """Refuse poses the flat-ground projection cannot use; returns ``self`` for chaining."""
        values = (self.x, self.y, self.z, self.roll, self.pitch, self.yaw)
        if not all(math.isfinite(v) for v in values):
            raise ValueError(f"camera mounting has a non-finite value: {self}")
        if self.z <= 0.0:
            raise ValueError(
                f"camera.z = {self.z} m puts the camera at or below the ground plane z = 0 of "
                "grid_frame; the drivable grid needs a camera above the ground (camera.z > 0)"
            )
        return self

    @property
    def position(self) -> np.ndarray:
        """Camera centre in ``grid_frame`` (3,)."""
        return np.array([self.x, self.y, self.z], dtype=np.float64)

    @property
    def rotation_body(self) -> np.ndarray:
        """Rotation grid_frame <- camera body frame (3, 3)."""
        return rpy_matrix(self.roll, self.pitch, self.yaw)

    @property
    def rotation(self) -> np.ndarray:
        """Rotation grid_frame <- optical frame (3, 3): ``p_grid = R @ p_opt + position``."""
        return self.rotation_body @ BODY_FROM_OPTICAL

    def grid_to_optical(self, points: np.ndarray) -> np.ndarray:
        """Points (N, 3) in grid_frame -> optical frame (N, 3)."""
        return rotate(np.asarray(points, dtype=np.float64) - self.position, self.rotation.T)

    def optical_to_grid(self, points: np.ndarray) -> np.ndarray:
        """Points or directions (N, 3) in the optical frame -> grid_frame, as points."""
        return rotate(points, self.rotation) + self.position


def _as_tuple(values: Sequence[float] | np.ndarray, name: str) -> tuple[float, ...]:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"camera {name} has non-finite values: {arr.tolist()}")
    return tuple(float(v) for v in arr)


@dataclass(frozen=True, eq=True)
class CameraModel:
    """Intrinsics of one camera (sensor_msgs/CameraInfo's width, height, K, D, distortion_model).

    Instances are immutable and compare by value, so ``new != old`` is the "camera changed"
    test that decides whether the ground lookup must be rebuilt. A D of only zeros is stored
    as empty (so a driver that sends ``[0, 0, 0, 0, 0]`` does not count as a change).
    """

    width: int
    height: int
    K: tuple[float, ...] | np.ndarray | Sequence[float]  # CameraInfo spelling
    D: tuple[float, ...] | np.ndarray | Sequence[float] = ()
    distortion_model: str = "plumb_bob"

    def __post_init__(self) -> None:
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))
        k = _as_tuple(self.K, "K")
        if len(k) != 9:
            raise ValueError(f"camera K needs 9 values (3x3 row-major), got {len(k)}")
        object.__setattr__(self, "K", k)
        raw_d = () if self.D is None else self.D
        d = _as_tuple(raw_d, "D") if len(np.asarray(raw_d).ravel()) else ()
        if not any(d):
            d = ()
        object.__setattr__(self, "D", d)
        object.__setattr__(self, "distortion_model", str(self.distortion_model or "plumb_bob"))

    @classmethod
    def from_camera_info_fields(
        cls,
        width: int,
        height: int,
        k: Sequence[float],
        d: Sequence[float] = (),
        distortion_model: str = "plumb_bob",
    ) -> CameraModel:
        """Build from the fields of a sensor_msgs/CameraInfo (``msg.k``, ``msg.d`` ...)."""
        return cls(width, height, tuple(k), tuple(d), distortion_model)

    @classmethod
    def from_fov(cls, width: int, height: int, hfov_deg: float) -> CameraModel:
        """Square-pixel pinhole with the principal point at the image centre (tests, demos)."""
        f = 0.5 * width / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(width, height, (f, 0.0, (width - 1) / 2.0, 0.0, f, (height - 1) / 2.0, 0, 0, 1))

    # -- checks -------------------------------------------------------------------------------
    def validate(self) -> CameraModel:
        """Raise ValueError with a clear message for unusable intrinsics; returns ``self``."""
        if self.width <= 0 or self.height <= 0:
            raise ValueError(
                f"camera image size {self.width}x{self.height} is empty (CameraInfo width/height "
                "must be > 0; an all-zero CameraInfo means the camera is not calibrated)"
            )
        if self.width > MAX_IMAGE_SIDE or self.height > MAX_IMAGE_SIDE:
            raise ValueError(
                f"camera image size {self.width}x{self.height} is beyond any camera (at most "
                f"{MAX_IMAGE_SIDE} pixels a side)"
            )
        k = self.matrix
        if k[0, 0] <= 0.0 or k[1, 1] <= 0.0:
            raise ValueError(
                f"camera focal length fx={k[0, 0]}, fy={k[1, 1]} must be > 0 "
                "(is CameraInfo K set?)"
            )
        if not (MIN_FOCAL <= k[0, 0] <= MAX_FOCAL and MIN_FOCAL <= k[1, 1] <= MAX_FOCAL):
            raise ValueError(
                f"camera focal length fx={k[0, 0]:g}, fy={k[1, 1]:g} pixels is outside "
                f"[{MIN_FOCAL:g}, {MAX_FOCAL:g}]: no real camera has it (is CameraInfo K in "
                "pixels?)"
            )
        if abs(k[2, 2] - 1.0) > 1e-9 or k[1, 0] != 0.0 or k[2, 0] != 0.0 or k[2, 1] != 0.0:
            raise ValueError(f"camera K is not an upper-triangular intrinsic matrix: {self.K}")
        if max(abs(k[0, 1]), abs(k[0, 2]), abs(k[1, 2])) > MAX_PIXEL_COORD:
            raise ValueError(
                f"camera principal point ({k[0, 2]:g}, {k[1, 2]:g}) or skew {k[0, 1]:g} is "
                f"beyond {MAX_PIXEL_COORD:g} pixels: not a camera's intrinsics"
            )
        if self.D:
            counts = SUPPORTED_DISTORTION.get(self.distortion_model)
            if counts is None:
                raise ValueError(
                    f"distortion model '{self.distortion_model}' with non-zero D is not supported "
                    f"(supported: {', '.join(SUPPORTED_DISTORTION)}); rectify the image or "
                    "publish a CameraInfo with zero D"
                )
            if len(self.D) not in counts:
                raise ValueError(
                    f"distortion model '{self.distortion_model}' takes {counts} coefficients, "
                    f"got {len(self.D)}"
                )
            worst = max(abs(d) for d in self.D)
            if worst > MAX_DISTORTION:
                raise ValueError(
                    f"distortion coefficient {worst:g} is beyond {MAX_DISTORTION:g}: no lens "
                    f"model has it (D = {list(self.D)})"
                )
        return self

    # -- accessors ----------------------------------------------------------------------------
    @property
    def matrix(self) -> np.ndarray:
        """K as a (3, 3) float64 array."""
        return np.asarray(self.K, dtype=np.float64).reshape(3, 3)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.width, self.height

    @property
    def has_distortion(self) -> bool:
        return bool(self.D)

    @cached_property
    def _coeffs(self) -> np.ndarray:
        """Distortion coefficients padded to OpenCV's layout (8 for pinhole, 4 for fisheye)."""
        n = 4 if self.distortion_model == "equidistant" else 8
        out = np.zeros(n)
        d = np.asarray(self.D, dtype=np.float64)
        out[: len(d)] = d[:n]
        return out

    @cached_property
    def max_valid_radius(self) -> float:
        """Largest undistorted radius ``r = |(x/z, y/z)|`` where the radial map is monotonic.

        Polynomial lens models fold back beyond this radius, so a point far outside the field
        of view could land inside the image; such points are treated as not visible.
        """
        if not self.D:
            return math.inf
        r = np.linspace(0.0, 20.0, 40001)
        with np.errstate(**_QUIET):
            rd = r * self._radial_gain(r)
            step = np.diff(rd)
        bad = np.nonzero(~(step > 0.0))[0]  # falling, flat, or NaN/inf from overflow
        return float(r[bad[0]]) if len(bad) else 20.0

    def _radial_gain(self, r: np.ndarray) -> np.ndarray:
        c = self._coeffs
        with np.errstate(**_QUIET):
            if self.distortion_model == "equidistant":
                theta = np.arctan(r)
                t2 = theta * theta
                thd = theta * (1 + t2 * (c[0] + t2 * (c[1] + t2 * (c[2] + t2 * c[3]))))
                return np.where(r > 1e-12, thd / np.maximum(r, 1e-12), 1.0)
            r2 = r * r
            num = 1 + r2 * (c[0] + r2 * (c[1] + r2 * c[4]))
            den = 1 + r2 * (c[5] + r2 * (c[6] + r2 * c[7]))
            return num / den

    # -- projection ---------------------------------------------------------------------------
    def distort_normalized(self, xy: np.ndarray) -> np.ndarray:
        """Undistorted normalised coordinates (N, 2) -> distorted normalised coordinates."""
        xy = np.asarray(xy, dtype=np.float64)
        if not self.D:
            return xy.copy()
        x, y = xy[:, 0], xy[:, 1]
        with np.errstate(**_QUIET):
            r2 = x * x + y * y
            gain = self._radial_gain(np.sqrt(r2))
            if self.distortion_model == "equidistant":
                return np.stack([x * gain, y * gain], axis=1)
            c = self._coeffs
            p1, p2 = c[2], c[3]
            xd = x * gain + 2 * p1 * x * y + p2 * (r2 + 2 * x * x)
            yd = y * gain + p1 * (r2 + 2 * y * y) + 2 * p2 * x * y
            return np.stack([xd, yd], axis=1)

    def project(self, points_optical: np.ndarray) -> np.ndarray:
        """Points (N, 3) in the optical frame -> pixel coordinates (N, 2), distortion applied.

        Points at or behind the camera plane (z <= 1e-9) or beyond the lens model's monotonic
        range get NaN. Whether a pixel lies inside the image is the caller's test.
        """
        p = np.asarray(points_optical, dtype=np.float64).reshape(-1, 3)
        z = p[:, 2]
        ok = z > 1e-9
        with np.errstate(**_QUIET):
            xy = p[:, :2] / np.where(ok, z, 1.0)[:, None]
            if self.D:
                r = np.hypot(xy[:, 0], xy[:, 1])
                ok &= r <= self.max_valid_radius
                xy = self.distort_normalized(xy)
            k = self.matrix
            u = k[0, 0] * xy[:, 0] + k[0, 1] * xy[:, 1] + k[0, 2]
            v = k[1, 1] * xy[:, 1] + k[1, 2]
        uv = np.stack([u, v], axis=1)
        ok &= np.isfinite(u) & np.isfinite(v)  # overflow: not an image point (NaN, not inf)
        uv[~ok] = np.nan
        return uv

    def pixel_rays(self, uv: np.ndarray) -> np.ndarray:
        """Pixel coordinates (N, 2) -> ray directions (N, 3) in the optical frame, z = 1.

        Inverts the distortion with OpenCV's iterative solver (tight criteria), so it agrees
        with :meth:`project` to well below a pixel.
        """
        uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
        k = self.matrix
        if not self.D:
            y = (uv[:, 1] - k[1, 2]) / k[1, 1]
            x = (uv[:, 0] - k[0, 2] - k[0, 1] * y) / k[0, 0]
        else:
            crit = (cv2.TERM_CRITERIA_COUNT | cv2.TERM_CRITERIA_EPS, 100, 1e-12)
            src = np.ascontiguousarray(uv).reshape(-1, 1, 2)  # cv2 ignores strides here
            if self.distortion_model == "equidistant":
                xy = cv2.fisheye.undistortPoints(src, k, self._coeffs, criteria=crit)
            else:
                xy = cv2.undistortPoints(src, k, self._coeffs, criteria=crit)
            x, y = xy[:, 0, 0], xy[:, 0, 1]
        return np.stack([x, y, np.ones_like(x)], axis=1)

    def pixel_grid(self) -> np.ndarray:
        """Centres of all pixels, (H*W, 2) as (u, v), row-major like ``image.ravel()``."""
        out = np.empty((self.width * self.height, 2))
        out[:, 0] = np.tile(np.arange(self.width, dtype=np.float64), self.height)
        out[:, 1] = np.repeat(np.arange(self.height, dtype=np.float64), self.width)
        return out


def ground_point(camera: CameraModel, mounting: CameraMounting, uv: np.ndarray) -> np.ndarray:
    """Pixel coordinates (N, 2) -> their ground points (N, 2) x, y on z = 0 of grid_frame.

    Rays that do not go down towards the ground (at or above the horizon) give NaN.
    """
    rays = rotate(camera.pixel_rays(uv), mounting.rotation)
    dz = rays[:, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        t = np.where(dz < -1e-12, -mounting.z / dz, np.nan)
    return mounting.position[:2] + rays[:, :2] * t[:, None]
