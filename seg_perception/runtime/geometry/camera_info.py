"""sensor_msgs/CameraInfo read as image_geometry's ``PinholeCameraModel`` reads it.

What a CameraInfo says about the image that arrives with it:

- ``binning_x/y`` of 0 mean 1; an all-zero ``roi`` means the full sensor. K, P and the ROI
  are in full-resolution pixels; the image is the ROI, binned. image_geometry moves the
  principal point of K and P by the ROI offset, then scales row 0 of K and P by
  ``1/binning_x`` and row 1 by ``1/binning_y``, and expects images of
  ``roi.width / binning_x`` x ``roi.height / binning_y`` pixels (its rectification maps
  keep that layout for rectified images too).
- A *raw* image (``image_raw``) is projected with K and the distortion D (``plumb_bob``,
  ``rational_polynomial``, ``equidistant``); R and P do not apply to it.
- A *rectified* image (``image_rect``) has no distortion any more: a point ``X`` of the
  camera's (optical) frame lands at ``P @ [R @ X, 1]``. R is the rectification rotation
  (identity for monocular cameras; an all-zero R, which some drivers send, is read as
  identity) and P's last column holds a stereo baseline (``Tx = -fx' * B``).

An image whose size disagrees with its CameraInfo is refused for the grid
(:meth:`CameraCalibration.camera_for` raises :class:`CameraInfoMismatchError`): scaling the
intrinsics would hide a wrong ``camera_info`` remap or a wrong ``image_type``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from seg_perception.runtime.geometry.camera import CameraModel, CameraMounting
from seg_perception.runtime.geometry.transform import (
    Transform,
    mounting_from_optical,
    optical_from_mounting,
)


class CameraInfoMismatchError(ValueError):
    """An image that does not fit its CameraInfo (size, or an unusable P for rectified input)."""


def _floats(values: Sequence[float] | np.ndarray, n: int, name: str) -> tuple[float, ...]:
    arr = np.asarray(values, dtype=np.float64).ravel()
    if arr.size != n:
        raise ValueError(f"camera_info {name} needs {n} values, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"camera_info {name} has non-finite values: {arr.tolist()}")
    return tuple(float(v) for v in arr)


@dataclass(frozen=True)
class ImageCamera:
    """How pixels of one kind of image (raw or rectified) relate to the camera's optical frame.

    ``model`` projects points of the *projection frame*; a point ``X`` of the optical frame
    is ``rotation @ X + offset`` there (identity and zero for raw images).
    """

    model: CameraModel
    rotation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    offset: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @property
    def projection_from_optical(self) -> Transform:
        return Transform.from_matrix(np.reshape(self.rotation, (3, 3)), self.offset)

    def mounting(self, optical: CameraMounting) -> CameraMounting:
        """The mounting whose optical frame is this projection frame, for a camera whose
        optical frame has mounting ``optical`` (rectification and baseline folded in)."""
        if self.rotation == ImageCamera.rotation and self.offset == ImageCamera.offset:
            return optical
        grid_from_projection = (optical_from_mounting(optical)
                                @ self.projection_from_optical.inverse())
        return mounting_from_optical(grid_from_projection)


@dataclass(frozen=True)
class CameraCalibration:
    """The fields of a sensor_msgs/CameraInfo that describe the images (immutable, by value)."""

    width: int
    height: int
    K: tuple[float, ...]
    D: tuple[float, ...] = ()
    distortion_model: str = "plumb_bob"
    R: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    P: tuple[float, ...] = ()
    binning_x: int = 1
    binning_y: int = 1
    roi: tuple[int, int, int, int] = (0, 0, 0, 0)  # x_offset, y_offset, width, height

    @classmethod
    def from_msg(cls, msg: Any) -> CameraCalibration:
        """From a sensor_msgs/CameraInfo (rclpy or rosbags message: same field names).

        Raises ValueError for an unusable message (zero size, K without focal length, ...).
        """
        roi = msg.roi
        return cls.from_fields(
            msg.width, msg.height, msg.k, msg.d, msg.distortion_model, msg.r, msg.p,
            msg.binning_x, msg.binning_y,
            (roi.x_offset, roi.y_offset, roi.width, roi.height))

    @classmethod
    def from_fields(cls, width: int, height: int, k: Sequence[float],
                    d: Sequence[float] = (), distortion_model: str = "plumb_bob",
                    r: Sequence[float] | None = None, p: Sequence[float] | None = None,
                    binning_x: int = 0, binning_y: int = 0,
                    roi: Sequence[int] = (0, 0, 0, 0)) -> CameraCalibration:
        kk = _floats(k, 9, "K")
        rr = _floats(r, 9, "R") if r is not None and len(r) else ImageCamera.rotation
        if not any(rr):
            rr = ImageCamera.rotation  # drivers that leave R zero mean "no rectification"
        pp = _floats(p, 12, "P") if p is not None and len(p) else ()
        dd = _floats(d, len(d), "D") if d is not None and len(d) else ()
        rx, ry, rw, rh = (int(v) for v in roi)
        out = cls(int(width), int(height), kk, dd, str(distortion_model or "plumb_bob"), rr, pp,
                  max(1, int(binning_x)), max(1, int(binning_y)), (rx, ry, rw, rh))
        out.validate()
        return out

    @classmethod
    def from_model(cls, model: CameraModel) -> CameraCalibration:
        """The CameraInfo a driver sends for ``model``: R identity, P = [K | 0], full ROI."""
        k = np.asarray(model.K, np.float64).reshape(3, 3)
        p = np.zeros((3, 4))
        p[:, :3] = k
        return cls.from_fields(model.width, model.height, model.K, model.D,
                               model.distortion_model, None, p.ravel())

    # -- checks -------------------------------------------------------------------------------
    def validate(self) -> CameraCalibration:
        if self.width <= 0 or self.height <= 0:
            raise ValueError(
                f"camera_info size {self.width}x{self.height} is empty (an all-zero CameraInfo "
                "means the camera is not calibrated)")
        if not any(self.K):
            raise ValueError("camera_info K is all zero (the camera is not calibrated): no "
                             "grid from it")
        if self.K[0] <= 0.0 or self.K[4] <= 0.0:
            raise ValueError(f"camera_info has a non-positive focal length (fx={self.K[0]}, "
                             f"fy={self.K[4]}); is K set?")
        x, y, w, h = self.roi
        if (x, y, w, h) != (0, 0, 0, 0) and (
                w <= 0 or h <= 0 or x < 0 or y < 0 or x + w > self.width
                or y + h > self.height):
            raise ValueError(f"camera_info roi (x {x}, y {y}, {w}x{h}) does not lie inside the "
                             f"{self.width}x{self.height} sensor")
        w, h = self.image_size
        if w <= 0 or h <= 0:
            raise ValueError(f"camera_info binning {self.binning_x}x{self.binning_y} leaves an "
                             f"empty {w}x{h} image")
        rot = np.reshape(self.R, (3, 3))
        if (abs(np.linalg.det(rot) - 1.0) > 1e-4
                or not np.allclose(rot @ rot.T, np.eye(3), atol=1e-4)):
            raise ValueError(f"camera_info R is not a rotation matrix: {list(self.R)}")
        self._raw_model().validate()
        return self

    # -- what images look like ----------------------------------------------------------------
    @property
    def full_roi(self) -> tuple[int, int, int, int]:
        """The ROI with the all-zero default expanded to the whole sensor."""
        if self.roi == (0, 0, 0, 0):
            return 0, 0, self.width, self.height
        return self.roi

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the images that go with this CameraInfo (ROI, then binning)."""
        _, _, w, h = self.full_roi
        return w // self.binning_x, h // self.binning_y

    def _adjust(self, m: np.ndarray) -> np.ndarray:
        """Rows 0 and 1 of a 3xN matrix moved by the ROI offset and scaled by the binning."""
        m = np.array(m, dtype=np.float64)
        x, y, _, _ = self.full_roi
        m[0] -= x * m[2]
        m[1] -= y * m[2]
        m[0] /= self.binning_x
        m[1] /= self.binning_y
        return m

    def _raw_model(self) -> CameraModel:
        k = self._adjust(np.reshape(self.K, (3, 3)))
        w, h = self.image_size
        return CameraModel(w, h, tuple(k.ravel()), self.D, self.distortion_model)

    def camera_for(self, rectified: bool, size: tuple[int, int] | None = None) -> ImageCamera:
        """The projection for raw (K, D) or rectified (P, R) images of this camera.

        ``size`` (width, height) of the image at hand is checked against :attr:`image_size`;
        a mismatch raises :class:`CameraInfoMismatchError` (never rescaled).
        """
        if size is not None and tuple(size) != self.image_size:
            bx, by = self.binning_x, self.binning_y
            detail = []
            if (bx, by) != (1, 1):
                detail.append(f"binning {bx}x{by}")
            if self.roi != (0, 0, 0, 0):
                detail.append("roi {2}x{3} at ({0}, {1})".format(*self.roi))
            how = f" ({', '.join(detail)})" if detail else ""
            raise CameraInfoMismatchError(
                f"image is {size[0]}x{size[1]} but its camera_info describes "
                f"{self.image_size[0]}x{self.image_size[1]} images{how}: no grid for it "
                "(intrinsics are never rescaled; check the camera_info remap)")
        if not rectified:
            return ImageCamera(self._raw_model().validate())
        if len(self.P) != 12 or not any(self.P):
            raise CameraInfoMismatchError(
                "rectified image but camera_info P is empty or zero: cannot project it "
                "(set image_type raw if the image is not rectified)")
        p = self._adjust(np.reshape(self.P, (3, 4)))
        if p[0, 0] <= 0.0 or p[1, 1] <= 0.0 or not np.allclose(p[2], (0.0, 0.0, 1.0, 0.0)):
            raise CameraInfoMismatchError(
                f"camera_info P {list(self.P)} is not a pinhole projection (needs fx', fy' > 0 "
                "and a last row 0 0 1 0)")
        k = p[:, :3]
        offset = np.linalg.solve(k, p[:, 3])  # P = K' [I | t]
        w, h = self.image_size
        model = CameraModel(w, h, tuple(k.ravel())).validate()
        return ImageCamera(model, tuple(float(v) for v in self.R),
                           (float(offset[0]), float(offset[1]), float(offset[2])))


__all__ = ["CameraCalibration", "CameraInfoMismatchError", "ImageCamera"]
