"""ament_python package: works with ``colcon build`` and with ``pip install``."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "seg_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(exclude=["test", "test.*"]),
    package_data={PACKAGE: ["weights/*.safetensors", "weights/*.json"]},
    include_package_data=True,
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.rviz")
         + glob("config/*.xml")),
    ],
    python_requires=">=3.10",
    install_requires=["setuptools", "numpy", "opencv-python-headless", "pyyaml", "safetensors",
                      "tqdm"],
    # `pip install seg_perception[fleet]`: process-many on Ray, locally or on a cluster (the
    # cluster must run the same Ray version; Ray Client needs the [client] part).
    extras_require={"fleet": ["ray[client]==2.60.0"]},
    zip_safe=False,
    maintainer="seg_perception developers",
    maintainer_email="seg-perception@example.org",
    description="Camera semantic segmentation and drivable area (grid, boundary) for ROS 2",
    license="Apache-2.0",
    tests_require=["pytest"],
    entry_points={
        "console_scripts": [
            "seg_node = seg_perception.ros.node:main",
            "seg_lifecycle_node = seg_perception.ros.lifecycle:main",
            "seg-perception = seg_perception.cli:main",
        ],
    },
)
