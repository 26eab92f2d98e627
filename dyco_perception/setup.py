"""ament_python package: the ROS-free core (dyco_perception.*), its rclpy node (.ros) and the
ROS command-line tools (.tools)."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dyco_perception"

setup(
    name=PACKAGE,
    version="0.1.0",
    packages=find_packages(include=[PACKAGE, f"{PACKAGE}.*"]),
    # The measured per-layer sparse-conv table (bench/bench_sparse_conv.py --write).
    package_data={PACKAGE: ["sparse/algorithms.yaml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        # Environment hook (named in colcon.pkg): the tools on PATH after sourcing the workspace.
        (f"share/{PACKAGE}/hook", ["hook/tools_path.dsv", "hook/tools_path.sh"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", glob("config/*.yaml") + glob("config/*.xml")),
        (f"share/{PACKAGE}/config/model", glob("config/model/*.yaml")),
        (f"share/{PACKAGE}/checkpoints", glob("checkpoints/*.safetensors")),
        (f"share/{PACKAGE}/demo/demo_rooms", glob("demo/demo_rooms/*")),
    ],
    install_requires=["setuptools"],
    zip_safe=True,
    maintainer="dyco_perception developers",
    maintainer_email="dev@dyco-perception.invalid",
    description="3D instance segmentation of point-cloud maps (DyCo3D) as a ROS 2 node.",
    license="Apache-2.0",
    entry_points={
        "console_scripts": [
            "segment_node = dyco_perception.ros.segment_node:main",
            "managed_segment_node = dyco_perception.ros.managed_node:main",
            "dyco-make-bag = dyco_perception.tools.make_bag:main",
            "dyco-replay = dyco_perception.tools.replay:main",
            "dyco-demo = dyco_perception.tools.demo:main",
        ],
    },
)
