"""Synthetic driving scenes with exact labels: the ground truth the projection is tested on.

A flat world (ground plane z = 0) holds a road of known shape, built from straight and
circular pieces in a *road frame* (the centreline starts at the origin heading +x, s is arc
length, lateral offset is positive to the left). Lanes with lane markings, sidewalks, grass
verges, buildings, trees and poles line it; obstacles are upright boxes. A camera with
given intrinsics and mounting on a vehicle (``SceneSpec.ego_pose`` places ``grid_frame`` in
the road frame) is rendered by casting one ray per pixel centre (vectorised numpy).
Tree crowns are the ellipsoid inscribed in their box. The look (a bright overcast sky,
paving slabs behind a raised kerb, brick facades with sash windows, leafy crowns, muted
colour and vignetting) follows CamVid's frames, so the CamVid-trained default model
reads the scenes much as it reads real streets.

Labels use CamVid's 11 classes (0 Sky, 1 Building, 2 Pole, 3 Road, 4 Pavement, 5 Tree,
6 SignSymbol, 7 Fence, 8 Car, 9 Pedestrian, 10 Bicyclist): lane markings are Road, grass is
Tree (CamVid files vegetation there), obstacles are Car unless they say otherwise.

Ground truth grid (``SceneRender.grid``): computed from the world, not from the image, with
the same visibility rules as the projection (:func:`.grid.cell_visibility`). A seen cell is
0 when its centre lies on the road and the straight segment from the camera to it meets no
box, else 100; unseen cells are -1. So ground hidden behind or under an obstacle counts as
seen-and-not-drivable, exactly what a perfect segmenter plus flat-ground projection yields.
``SceneRender.grid_world`` is the world's own layout (road minus obstacle footprints) over
every cell, regardless of visibility.

Layout: :mod:`.spec` (class ids, :class:`SceneSpec`, :class:`RoadGeometry`,
:class:`SceneRender`), :mod:`.boxes` (the solids), :mod:`.shading` (their colours),
:mod:`.raycast` (:func:`render_scene`), :mod:`.drive` (:func:`drive_sequence`). This
``__init__`` is the public surface: import from ``seg_perception.sim.scene``.
"""

from seg_perception.sim.scene.drive import drive_sequence, make_route
from seg_perception.sim.scene.raycast import render_scene
from seg_perception.sim.scene.spec import (
    BICYCLIST,
    BUILDING,
    CAR,
    FENCE,
    PAVEMENT,
    PEDESTRIAN,
    POLE,
    ROAD,
    SIGN,
    SKY,
    TREE,
    BoxObstacle,
    RoadGeometry,
    SceneRender,
    SceneSpec,
)

__all__ = [
    "BICYCLIST",
    "BUILDING",
    "CAR",
    "FENCE",
    "PAVEMENT",
    "PEDESTRIAN",
    "POLE",
    "ROAD",
    "SIGN",
    "SKY",
    "TREE",
    "BoxObstacle",
    "RoadGeometry",
    "SceneRender",
    "SceneSpec",
    "drive_sequence",
    "make_route",
    "render_scene",
]
