"""Rigid transforms as tf2 describes them: a rotation and a translation, quaternions (x, y, z, w).

A :class:`Transform` ``T`` from frame ``source`` to frame ``target`` (what
``lookup_transform(target, source, t)`` returns) maps points: ``p_target = R @ p_source + t``.
:func:`mounting_from_optical` turns the pose of a camera's *optical* frame (REP 103: z forward,
x right, y down; what an image's ``header.frame_id`` names) into the :class:`CameraMounting`
of its *body* frame that the ground grid uses.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from seg_perception.runtime.geometry.camera import BODY_FROM_OPTICAL, CameraMounting


def quaternion_matrix(x: float, y: float, z: float, w: float) -> np.ndarray:
    """Rotation matrix (3, 3) of a quaternion; it is normalised first (tf2 does too)."""
    q = np.array([x, y, z, w], dtype=np.float64)
    n = float(np.dot(q, q))
    if not math.isfinite(n) or n < 1e-12:
        raise ValueError(f"quaternion {tuple(q)} has no direction (zero or non-finite)")
    x, y, z, w = q / math.sqrt(n)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
        [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
        [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
    ])


def matrix_quaternion(rot: np.ndarray) -> tuple[float, float, float, float]:
    """Quaternion (x, y, z, w), w >= 0, of a rotation matrix (Shepperd's method)."""
    m = np.asarray(rot, dtype=np.float64)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = 2.0 * math.sqrt(tr + 1.0)
        q = ((m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, s / 4)
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2])
        q = (s / 4, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s)
    elif m[1, 1] > m[2, 2]:
        s = 2.0 * math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2])
        q = ((m[0, 1] + m[1, 0]) / s, s / 4, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s)
    else:
        s = 2.0 * math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1])
        q = ((m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, s / 4, (m[1, 0] - m[0, 1]) / s)
    x, y, z, w = (float(v) for v in q)
    return (-x, -y, -z, -w) if w < 0 else (x, y, z, w)


def slerp(q0: Sequence[float], q1: Sequence[float], f: float) -> np.ndarray:
    """Spherical interpolation of unit quaternions (x, y, z, w) at fraction ``f`` in [0, 1]."""
    a = np.asarray(q0, dtype=np.float64)
    b = np.asarray(q1, dtype=np.float64)
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    dot = float(np.dot(a, b))
    if dot < 0.0:  # the shorter way round
        b, dot = -b, -dot
    if dot > 0.9995:
        out = a + f * (b - a)
        return out / np.linalg.norm(out)
    theta = math.acos(min(1.0, dot))
    s = math.sin(theta)
    return (math.sin((1 - f) * theta) * a + math.sin(f * theta) * b) / s


@dataclass(frozen=True)
class Transform:
    """``p_target = rotation @ p_source + translation``; immutable, compares by value."""

    rotation: tuple[tuple[float, float, float], ...]  # 3x3, row-major
    translation: tuple[float, float, float]

    @classmethod
    def from_matrix(cls, rotation: np.ndarray, translation: Sequence[float]) -> Transform:
        r = np.asarray(rotation, dtype=np.float64).reshape(3, 3)
        t = np.asarray(translation, dtype=np.float64).reshape(3)
        if not (np.all(np.isfinite(r)) and np.all(np.isfinite(t))):
            raise ValueError("transform has non-finite values")
        return cls(tuple(tuple(float(v) for v in row) for row in r),
                   (float(t[0]), float(t[1]), float(t[2])))

    @classmethod
    def from_quaternion(cls, translation: Sequence[float],
                        quaternion: Sequence[float]) -> Transform:
        """From a geometry_msgs/Transform's translation and rotation (x, y, z, w)."""
        return cls.from_matrix(quaternion_matrix(*quaternion), translation)

    @classmethod
    def identity(cls) -> Transform:
        return cls.from_matrix(np.eye(3), (0.0, 0.0, 0.0))

    @property
    def matrix(self) -> np.ndarray:
        """The rotation (3, 3)."""
        return np.asarray(self.rotation, dtype=np.float64)

    @property
    def vector(self) -> np.ndarray:
        """The translation (3,)."""
        return np.asarray(self.translation, dtype=np.float64)

    @property
    def quaternion(self) -> tuple[float, float, float, float]:
        return matrix_quaternion(self.matrix)

    def __matmul__(self, other: Transform) -> Transform:
        """Composition: ``(a @ b)(p) = a(b(p))`` (b maps c -> b's target, a maps that on)."""
        r = self.matrix @ other.matrix
        return Transform.from_matrix(r, self.matrix @ other.vector + self.vector)

    def inverse(self) -> Transform:
        r = self.matrix.T
        return Transform.from_matrix(r, -(r @ self.vector))

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Points (N, 3) in the source frame -> target frame."""
        return np.asarray(points, dtype=np.float64) @ self.matrix.T + self.vector


def rpy_from_matrix(rot: np.ndarray) -> tuple[float, float, float]:
    """URDF fixed-axis (roll, pitch, yaw) with ``R = Rz(yaw) Ry(pitch) Rx(roll)``.

    At pitch +-90 degrees (gimbal lock) roll is set to 0 and yaw carries the rotation, so
    the angles still rebuild ``rot`` exactly.
    """
    m = np.asarray(rot, dtype=np.float64)
    pitch = math.atan2(-m[2, 0], math.hypot(m[0, 0], m[1, 0]))
    if math.hypot(m[0, 0], m[1, 0]) < 1e-9:
        roll = 0.0
        yaw = math.atan2(-m[0, 1], m[1, 1])
    else:
        roll = math.atan2(m[2, 1], m[2, 2])
        yaw = math.atan2(m[1, 0], m[0, 0])
    return roll, pitch, yaw


def mounting_from_optical(optical_in_grid: Transform) -> CameraMounting:
    """The body-frame :class:`CameraMounting` of a camera whose *optical* frame has pose
    ``optical_in_grid`` in grid_frame (``p_grid = T(p_optical)``, tf's
    ``lookup_transform(grid_frame, optical_frame)``).

    ``CameraMounting.rotation`` is ``R_body @ BODY_FROM_OPTICAL``, so the body rotation is
    ``R_optical @ BODY_FROM_OPTICAL.T``; the position is the same point.
    """
    body = optical_in_grid.matrix @ BODY_FROM_OPTICAL.T
    roll, pitch, yaw = rpy_from_matrix(body)
    x, y, z = optical_in_grid.translation
    return CameraMounting(x, y, z, roll, pitch, yaw)


def optical_from_mounting(mounting: CameraMounting) -> Transform:
    """Inverse of :func:`mounting_from_optical`: the optical frame's pose in grid_frame."""
    return Transform.from_matrix(mounting.rotation, mounting.position)


__all__ = [
    "Transform",
    "matrix_quaternion",
    "mounting_from_optical",
    "optical_from_mounting",
    "quaternion_matrix",
    "rpy_from_matrix",
    "slerp",
]
