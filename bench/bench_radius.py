"""AP50 against the clustering radius: DyCo3D's decoded masks vs the clusters themselves.

    python bench/bench_radius.py --checkpoint checkpoints/dyco3d_scannet_m16.safetensors

DyCo3D (section 4.4.4, Fig. 6) claims its masks hardly depend on the grouping radius r, from 3 cm
up to extreme values such as 30 cm, where PointGroup, which takes each cluster as an instance,
degrades. For every radius this runs one checkpoint on the scans twice: "dyco3d" = the decoded,
NMS-ed masks the node publishes; "clusters" = each cluster (>= the model's minimum size) taken as
an instance, scored by the model's learned IoU score (PointGroup's ScoreNet role) - the same
network, so the difference is the dynamic decoder alone. Prints a table (AP50 labelled and
class-agnostic) and writes a PNG plot.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import numpy as np
import torch
from dyco_perception.checkpoint import build_model, load_checkpoint
from dyco_perception.evaluation import evaluate_predictions
from dyco_perception.model.postprocess import select_instances
from dyco_perception.scenes import load_npz_scene
from tqdm import tqdm

SCANS = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scannet50k"
VAL = ("scene0009_00", "scene0009_01", "scene0009_02", "scene0010_00", "scene0010_01")


def decoded_instances(outputs: dict, num_points: int, cfg) -> list[dict]:
    final = select_instances(outputs, num_points, cfg.mask_head, cfg.inference)
    owner = final.point_instance.numpy()
    return [
        {"label": int(c), "score": float(s), "point_indices": np.flatnonzero(owner == k + 1)}
        for k, (c, s) in enumerate(zip(final.class_id.tolist(), final.score.tolist(), strict=True))
    ]


def cluster_instances(outputs: dict, cfg) -> list[dict]:
    proposals = outputs["proposals"]
    scores = outputs["score_logits"].sigmoid().tolist()
    out = []
    for k in range(proposals.num):
        points = proposals.point_index[proposals.proposal_id == k].numpy()
        if len(points) >= cfg.inference.min_instance_points:
            out.append(
                {"label": int(proposals.class_id[k]), "score": scores[k], "point_indices": points}
            )
    return out


@torch.no_grad()
def run(model, scenes, radius: float) -> dict[str, dict]:
    cfg = copy.deepcopy(model.cfg)
    cfg.grouping.radius = radius
    model.cfg = cfg
    rows: dict[str, list] = {"dyco3d": [], "clusters": []}
    for scene in scenes:
        xyz = torch.from_numpy(scene.xyz)
        rgb = torch.from_numpy(scene.rgb).float() / 127.5 - 1
        outputs = model(xyz, rgb, torch.zeros(len(xyz), dtype=torch.long))
        gt = (scene.semantic, scene.instance)
        rows["dyco3d"].append((*gt, decoded_instances(outputs, len(xyz), cfg)))
        rows["clusters"].append((*gt, cluster_instances(outputs, cfg)))
    return {name: evaluate_predictions(scans) for name, scans in rows.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", default="checkpoints/dyco3d_scannet_m16.safetensors")
    parser.add_argument("--scans", default=str(SCANS))
    parser.add_argument("--names", default=",".join(VAL), help="comma-separated scan names")
    parser.add_argument("--radii", default="0.01,0.02,0.03,0.06,0.1,0.2,0.3")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--plot", default="out/bench_radius.png")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    state, card = load_checkpoint(args.checkpoint)
    model = build_model({k: v.float() for k, v in state.items()}, card).eval()
    model.set_backend("auto")
    scenes = [load_npz_scene(Path(args.scans) / f"{name}.npz") for name in args.names.split(",")]
    radii = [float(r) for r in args.radii.split(",")]
    results = {r: run(model, scenes, r) for r in tqdm(radii, desc="radius", unit="r")}
    print(f"{args.checkpoint} on {len(scenes)} scans ({args.names})")
    header = ["radius (m)", "DyCo3D AP50", "clusters AP50", "DyCo3D agnostic", "clusters agnostic"]
    print("| " + " | ".join(header) + " |")
    print("|---" * len(header) + "|")
    for r, res in results.items():
        d, c = res["dyco3d"], res["clusters"]
        print(
            f"| {r:.2f} | {d['AP50'] or 0:.3f} | {c['AP50'] or 0:.3f} | "
            f"{d['class_agnostic']['AP50'] or 0:.3f} | {c['class_agnostic']['AP50'] or 0:.3f} |"
        )
    plot(results, args.plot)


def plot(results: dict[float, dict], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    radii = list(results)
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for name, style in (("dyco3d", "o-"), ("clusters", "s--")):
        ax.plot(radii, [results[r][name]["AP50"] or 0 for r in radii], style, label=name)
        agnostic = [results[r][name]["class_agnostic"]["AP50"] or 0 for r in radii]
        ax.plot(radii, agnostic, style, alpha=0.4, label=f"{name} (class-agnostic)")
    ax.set_xscale("log")
    ax.set_xlabel("clustering radius r (m)")
    ax.set_ylabel("AP50")
    ax.legend(fontsize=7)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
