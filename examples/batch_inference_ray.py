"""Score a folder or a bucket of images with a trained run on Ray Data.

Locally (starts a Ray on this machine)::

    pip install -e '.[scale]'
    python examples/batch_inference_ray.py runs/effnet photos/ predictions.csv

On a Ray cluster (the run directory and the images on storage every node reads;
one model actor per GPU)::

    RAY_ADDRESS=ray://ray-head:10001 python examples/batch_inference_ray.py \\
        /mnt/shared/runs/effnet gs://my-bucket/isic-2024/ gs://my-bucket/scores/ \\
        --concurrency 8 --gpus 1

An OUT ending in .csv is one sorted CSV written by this script; anything else is a
folder or bucket the workers fill with Parquet files. See docs/SCALING.md.
"""

from __future__ import annotations

import argparse
import sys

from skinlesion import INTENDED_USE
from skinlesion.inference.batch import predict_at_scale


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", help="finished training run (model.keras + model_spec.json)")
    parser.add_argument("inputs", nargs="+", help="folders, files or bucket URIs of images")
    parser.add_argument("out", help="OUT.csv, or a folder / bucket URI for Parquet files")
    parser.add_argument("--concurrency", type=int, default=1, help="model actors (default 1)")
    parser.add_argument("--gpus", type=float, default=0.0, help="GPUs per actor (default 0)")
    parser.add_argument("--cpus", type=float, default=1.0, help="CPUs per actor (default 1)")
    parser.add_argument("--batch-size", type=int, default=64, help="images per model call")
    parser.add_argument("--tta", type=int, default=1, choices=(1, 2, 4, 8))
    args = parser.parse_args(argv)
    result = predict_at_scale(args.run_dir, args.inputs, args.out, tta=args.tta,
                              batch_size=args.batch_size, concurrency=args.concurrency,
                              num_cpus=args.cpus, num_gpus=args.gpus)
    print(f"{result.images} images scored ({result.failed} unreadable) → {result.output}",
          file=sys.stderr)
    print(INTENDED_USE, file=sys.stderr)
    print(result.output)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
