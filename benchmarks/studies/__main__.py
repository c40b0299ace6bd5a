"""``python -m benchmarks.studies``: the measurements behind the design choices of the method pages
(docs/model.md, docs/reference.md, docs/transport.md, docs/training.md, docs/metrics.md), each against
its alternative.

    python -m benchmarks.studies [--only PART ...] [--experiments ...] [--schedules ...] [--scale ...]

One module per question; each part is a function of it:

* `benchmarks.studies.kernels`: ``kernels``, ``slope``, ``health``, ``step`` (the IPM's kernel and step);
* `benchmarks.studies.reference`: ``reference`` (the IPM against the PDE reference);
* `benchmarks.studies.blocks`: ``blocks``, ``small`` (block descent against the optimum);
* `benchmarks.studies.calibration`: ``energy``, ``c2st``, ``pools`` (the training pools under
  ``--runs``: their m2 and radial KS against the other runs'), ``ks``, ``sources`` (the metrics);
* `benchmarks.studies.training`: ``residual``, ``training`` (its schedules in
  `benchmarks.studies.schedules`), ``tails``, ``matching``, ``shrink``, ``anisotropy``;
* `benchmarks.studies.structure`: ``structure`` (the structure check's false alarms and what it sees
  in the finished runs under ``--runs``), ``structure-ablations`` (what keeps kolmogorov3d's cross),
  ``structure-between`` (its networks between two training values), ``structure-denser`` (with 25.1 a
  training value), ``structure-interpolants`` (a held-out law from its two neighbours' laws),
  ``structure-augmented`` (trained on those interpolants as well), ``structure-shells`` (the finished runs'
  shape by radius: each shell's mass and aspect against the IPM's);
* `benchmarks.studies.extrapolation`: ``extrapolation`` (what makes the map follow the physics past its
  training range).

Quality numbers, not times: they do not depend on the machine. The results are merged into
``benchmarks/results/ablations-<device>-<date>.json`` (``--only`` replaces the parts it runs); its
``made_by`` gives each part the command and manifest of the run that made it (``last_writer_only``: a
part written before the file kept them, of which only the file's last writer is known).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os

from benchmarks import _common
from benchmarks.studies.blocks import blocks, small
from benchmarks.studies.calibration import c2st, energy, ks, pools, sources
from benchmarks.studies.extrapolation import VARIANTS as EXTRAPOLATION_VARIANTS
from benchmarks.studies.extrapolation import extrapolation
from benchmarks.studies.kernels import health, kernels, slope, step
from benchmarks.studies.reference import reference
from benchmarks.studies.schedules import MORE_SCHEDULES, SCHEDULES
from benchmarks.studies.structure import (
    VARIANTS,
    structure,
    structure_ablations,
    structure_augmented,
    structure_between,
    structure_denser,
    structure_interpolants,
    structure_shells,
)
from benchmarks.studies.training import TRAINING_EXPERIMENTS, anisotropy, matching, residual, shrink, tails, training
from ksdp.experiments.specs import EXPERIMENTS, SCALES

PARTS = (
    "kernels",
    "slope",
    "blocks",
    "small",
    "residual",
    "energy",
    "reference",
    "training",
    "health",
    "step",
    "tails",
    "matching",
    "c2st",
    "pools",
    "ks",
    "shrink",
    "sources",
    "anisotropy",
    "structure",
    "structure-ablations",
    "structure-between",
    "structure-denser",
    "structure-interpolants",
    "structure-augmented",
    "structure-shells",
    "extrapolation",
)

# the parts whose rows accumulate over runs of the study, each row keyed by what it measured
ROW_KEYS = {
    "training": lambda r: (r.get("scale", "quick"), r["experiment"], r["schedule"]),
    "structure-ablations": lambda r: (r.get("experiment", "kolmogorov3d-amplitude"), r["variant"], r["seed"]),
    "extrapolation": lambda r: (r["experiment"], r["variant"]),
    "pools": lambda r: (r["scale"], r["experiment"], r.get("seed"), r["pool_runs"], r["eta"]),
}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    ap.add_argument("--out", default=None)
    ap.add_argument(
        "--schedules",
        nargs="+",
        choices=list(SCHEDULES) + list(MORE_SCHEDULES),
        default=None,
        help="training schedules of the 'training' part (default: the five of benchmarks.studies.schedules.SCHEDULES)",
    )
    ap.add_argument(
        "--experiments",
        nargs="+",
        choices=list(EXPERIMENTS),
        default=None,
        help="experiments of the 'training' part (quick scale; default: ks2d-time laminar2d-amplitude), "
        "of the 'tails' part (default: every finished one), of the 'extrapolation' part (default: the laminar "
        "and the time experiments) and of the 'structure-ablations' part (default: kolmogorov3d-amplitude)",
    )
    ap.add_argument(
        "--scale",
        choices=list(SCALES),
        default="quick",
        help="scale of the 'training' part (its datasets, sizes and steps; default quick)",
    )
    ap.add_argument(
        "--reference-sizes",
        type=int,
        nargs="+",
        default=[2000, 10000],
        help="IPM sizes J of the 'reference' part (from 10^4 on with the particle mesh; 10^6 takes minutes)",
    )
    ap.add_argument(
        "--ks-scale",
        choices=list(SCALES),
        default="paper",
        help="scale of the 'ks' and 'sources' parts (default paper: J = 10^4)",
    )
    ap.add_argument(
        "--ks-runs", type=int, default=26, help="independent IPM runs of the 'ks' part (default 26; cached)"
    )
    ap.add_argument(
        "--runs",
        nargs="+",
        default=["ksdp-runs"],
        help="the experiments' run folder (default ksdp-runs); 'structure' and 'structure-shells' take several",
    )
    ap.add_argument(
        "--variants",
        nargs="+",
        choices=list(VARIANTS),
        default=None,
        help="changes of the 'structure-ablations' part (default: all of benchmarks.studies.structure.VARIANTS)",
    )
    ap.add_argument(
        "--seeds",
        type=int,
        nargs="+",
        default=[0, 1],
        help="seeds of the 'structure-ablations', '-between', '-denser', '-interpolants', '-augmented' parts",
    )
    ap.add_argument(
        "--extrapolation-variants",
        nargs="+",
        choices=list(EXTRAPOLATION_VARIANTS),
        default=None,
        help="changes of the 'extrapolation' part (default: all of benchmarks.studies.extrapolation.VARIANTS); "
        "its rows of other changes and experiments are kept",
    )
    args = ap.parse_args(argv)

    def one_folder():
        if len(args.runs) != 1:
            ap.error(f"--runs takes one folder for the parts other than 'structure', got {len(args.runs)}")
        return args.runs[0]

    parts = {
        "kernels": kernels,
        "slope": slope,
        "blocks": blocks,
        "small": small,
        "residual": residual,
        "energy": energy,
        "reference": lambda: reference(sizes=tuple(args.reference_sizes)),
        "health": health,
        "step": step,
        "training": lambda: training(
            names=args.experiments or TRAINING_EXPERIMENTS, scale=args.scale, schedules=args.schedules
        ),
        "tails": lambda: tails(names=args.experiments),
        "matching": lambda: matching(names=args.experiments),
        "c2st": lambda: c2st(names=args.experiments),
        "pools": lambda: pools(out=one_folder(), names=args.experiments),
        "ks": lambda: ks(scale=args.ks_scale, runs=args.ks_runs),
        "shrink": lambda: shrink(names=args.experiments or ("kolmogorov3d-amplitude",)),
        "sources": lambda: sources(scale=args.ks_scale),
        "anisotropy": anisotropy,
        "structure": lambda: structure(out=args.runs, names=args.experiments),
        "structure-ablations": lambda: [
            row
            for name in args.experiments or ["kolmogorov3d-amplitude"]
            for row in structure_ablations(out=one_folder(), variants=args.variants, seeds=args.seeds, name=name)
        ],
        "structure-between": lambda: structure_between(out=one_folder(), variants=args.variants, seeds=args.seeds),
        "structure-denser": lambda: structure_denser(out=one_folder(), seeds=args.seeds),
        "structure-interpolants": lambda: structure_interpolants(
            out=one_folder(), variants=args.variants, seeds=args.seeds
        ),
        "structure-augmented": lambda: structure_augmented(out=one_folder(), variants=args.variants, seeds=args.seeds),
        "structure-shells": lambda: [
            row for out in args.runs for row in structure_shells(out=out, names=args.experiments)
        ],
        "extrapolation": lambda: extrapolation(
            out=one_folder(), names=args.experiments, variants=args.extrapolation_variants
        ),
    }
    results = {name: parts[name]() for name in args.only}
    # --only updates the parts it ran in today's file and keeps the others
    previous = os.path.join(
        args.out or _common.RESULTS, f"ablations-{_common.device_name()}-{datetime.date.today().isoformat()}.json"
    )
    from ksdp.provenance import manifest

    # each part keeps the manifest and command of the run that made it (the file's own are the last run's)
    made_by = {part: {"command": _common.command(), "manifest": manifest()} for part in results}
    if os.path.exists(previous):
        with open(previous) as f:
            old = json.load(f)
        kept = [k for k in PARTS if k in old and k not in results]
        earlier = {
            k: {"command": old.get("command"), "manifest": old.get("manifest"), "last_writer_only": True} for k in kept
        }
        made_by = {**earlier, **{k: v for k, v in old.get("made_by", {}).items() if k in kept}, **made_by}
        results = {**{k: old[k] for k in kept}, **results}
        for part, key in ROW_KEYS.items():  # rows run now replace their old rows only
            if part in args.only and part in old:
                done = {key(r) for r in results[part]}
                results[part] = [r for r in old[part] if key(r) not in done] + results[part]
    return _common.save("ablations", {**results, "made_by": made_by}, args.out)


if __name__ == "__main__":
    main()
