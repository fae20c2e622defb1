"""Out-of-distribution detection with a trained VAE: each score's AUROC, AUPRC and FPR at 95% TPR, vaekit's hierarchy
against PyOD's VAE trained on the same images in the same run.

For each pair IN:OUT (Fashion-MNIST → MNIST and MNIST → Fashion-MNIST by default, or with `--one-class D` each class
of D held out: IN the other classes, OUT that class's test images) and each seed:
  1. `vaekit train` a top-down hierarchy on IN's training split (its validation split held out, as always);
  2. `vaekit score RUN --dataset IN --ood OUT` scores IN's and OUT's test images, and `--split val` IN's validation
     images, which set the typicality score's centre (nothing else is chosen, and nothing on test);
  3. PyOD's VAE (pyod.models.vae.VAE) is fit on the same training images, as a PyOD user would run it: with its
     defaults (`pyod-vae`: its capacity of 0 clamps the KL term to zero, so it trains as an autoencoder) and with
     the KL term on (`pyod-vae-kl`: capacity unbounded); its own decision_function is its score.
Scores (higher: more unlike IN): `iw-nll` the importance-weighted NLL bound, `elbo` the negative ELBO, `llr>k` the
likelihood ratio of Havtorn et al. (2021) for each k the hierarchy allows, `typicality` |NLL − mean validation NLL|
(the per-image form of Nalisnick et al. 2019's test), `recon` the reconstruction's squared error per pixel.

Every setting is fixed here, before the run; each record says its seeds, commit and machine. The AUROC of a record is
the mean over seeds; its interval spans the seeds' 95% bootstrap intervals over images (lowest low to highest high).

    python benchmarks/ood/run.py [--pairs fashion-mnist:mnist,mnist:fashion-mnist] [--seeds 0,1]
        [--model ladder|mlp] [--mnist-dir ../shared/data] [--out benchmarks/ood] [--no-pyod]
    python benchmarks/ood/run.py --one-class fashion-mnist [--classes 0,…,9] [--seeds 0,1]
    python benchmarks/ood/run.py --smoke --out /tmp/ood      # digits against noise, tiny widths: seconds

A run adds its records to OUT/results.json and keeps those of the models, pairs and scores it does not measure again.

Writes OUT/results.json (a list of records {"in", "out", "score", "model", "auroc", "auroc_interval", "auprc",
"fpr95", "seeds", "commit", …}), OUT/results.md, and the run folders and score tables under OUT/runs.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from suite import machine  # noqa: E402  (benchmarks/suite.py: the processor, torch and the commit)


@dataclass(frozen=True)
class Settings:
    """What every pair trains and scores with: fixed before the run."""

    network: tuple[str, ...] = ("--hidden", "512,256", "--latent-dim", "32", "--layers", "3", "--ladder-width", "256")
    # free bits keep the upper layers in use: without them a pilot (Fashion-MNIST validation against MNIST training
    # images, never a test split) left the top layer empty and LLR>k below 0.5; with 0.5 nats per unit, above it
    training: tuple[str, ...] = ("--epochs", "30", "--batch-size", "128", "--warmup", "5", "--free-bits", "0.5")
    data: tuple[str, ...] = ("--binarize", "dynamic", "--val-size", "5000", "--split-seed", "0")
    k: int = 100  # importance samples per image for every bound
    pyod_epochs: int = 30  # PyOD's default


MODELS = {
    "mlp": Settings(),
    # Havtorn et al.'s HVAE in small: z1 eight 14×14 maps, z2 16, z3 8, 32-channel conv stages. Validated as it stands
    # (Fashion-MNIST's validation split against 2,000 MNIST training images; no test split read): LLR>1's AUROC 0.949
    # after these 3 epochs, whose KL warm-up reaches β = 0.6 (longer runs were not tried: 130 s an epoch here). Free
    # bits of 2 nats a layer had emptied z2 and z3 in a pilot. k = 10: each sample decodes a conv stack, and Havtorn
    # et al. report LLR>1 from a single sample.
    "ladder": Settings(
        network=(
            "--network",
            "ladder",
            "--hidden",
            "32",
            "--z1-channels",
            "8",
            "--latent-dim",
            "16",
            "--layers",
            "3",
            "--ladder-width",
            "256",
        ),
        training=("--epochs", "3", "--batch-size", "128", "--warmup", "5"),
        k=10,
    ),
}
SMOKE = {
    "mlp": Settings(
        network=("--hidden", "32", "--latent-dim", "4", "--layers", "3", "--ladder-width", "16"),
        training=("--epochs", "2", "--batch-size", "64", "--lr", "1e-3", "--warmup", "1"),
        data=("--binarize", "dynamic", "--val-size", "200", "--split-seed", "0"),
        k=4,
        pyod_epochs=1,
    ),
    "ladder": Settings(
        network=(
            "--network",
            "ladder",
            "--hidden",
            "8",
            "--z1-channels",
            "2",
            "--latent-dim",
            "4",
            "--layers",
            "3",
            "--ladder-width",
            "16",
        ),
        training=("--epochs", "2", "--batch-size", "64", "--lr", "1e-3", "--warmup", "1"),
        data=("--binarize", "dynamic", "--val-size", "200", "--split-seed", "0"),
        k=4,
        pyod_epochs=1,
    ),
}
NOT_SCORES = ("index", "label", "set")
RENAMED = {"nll": "iw-nll", "neg_elbo": "elbo", "mse": "recon"}  # vaekit score's columns → the benchmark's names


def one_class_tasks(dataset: str, classes: list[int], folder: Path, data_dir: str | None) -> list[tuple[str, str]]:
    """For each class c, the pair (`dataset` without c, c alone) as two .npz files in `folder`: the model trains on the
    other classes' training images and scores their test images against class c's test images."""
    from vaekit.config import DataConfig
    from vaekit.data.sources import load_dataset

    data = load_dataset(DataConfig(dataset=dataset, data_dir=data_dir, val_size=0))
    train, test = data.train, data.test
    if train.y is None or test.y is None:
        sys.exit(f"--one-class needs labels and {dataset} has none")
    folder.mkdir(parents=True, exist_ok=True)
    pairs = []
    for c in classes:
        inside, outside = folder / f"{Path(dataset).stem}-without-{c}.npz", folder / f"{Path(dataset).stem}-{c}.npz"
        keep, alone = train.y != c, test.y == c
        np.savez(inside, x_train=train.x[keep].numpy(), y_train=train.y[keep].numpy(),
                 x_test=test.x[test.y != c].numpy(), y_test=test.y[test.y != c].numpy())  # fmt: skip
        np.savez(outside, x_train=train.x[~keep].numpy(), x_test=test.x[alone].numpy())
        pairs.append((str(inside), str(outside)))
    return pairs


def vaekit(*args: str) -> list[str]:
    return [sys.executable, "-m", "vaekit", *args]


def run(command: list[str], log: Path) -> None:
    """Run `command`, its output kept in `log`; a failure stops the benchmark with the log's tail."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("w") as out:
        done = subprocess.run(command, stdout=out, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        sys.exit(f"failed ({done.returncode}): {' '.join(command)}\n{log.read_text()[-2000:]}")


def read_table(path: Path) -> dict[str, np.ndarray]:
    with path.open() as f:
        rows = list(csv.DictReader(f))
    return {name: np.array([float(row[name]) for row in rows]) for name in rows[0]}


def vaekit_scores(
    pair: tuple[str, str], seed: int, s: Settings, data_dirs: dict[str, str], folder: Path
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each vaekit score's (IN test, OUT test) values from a hierarchy trained on IN with `seed`."""
    inside, outside = pair
    run_dir = folder / "run"
    where = ["--data-dir", data_dirs[inside]] if inside in data_dirs else []
    run([*vaekit("train", "--dataset", inside, *where, "--latent", "hierarchy", *s.network, *s.training, *s.data,
                 "--seed", str(seed), "--quiet", "--out", str(run_dir))], folder / "train.log")  # fmt: skip
    other = ["--ood-data-dir", data_dirs[outside]] if outside in data_dirs else []
    table, val = folder / "scores.csv", folder / "scores-val.csv"
    run([*vaekit("score", str(run_dir), "--dataset", inside, *where, "--ood", outside, *other, "--k", str(s.k),
                 "--out", str(table))], folder / "score.log")  # fmt: skip
    run([*vaekit("score", str(run_dir), "--dataset", inside, *where, "--split", "val", "--k", str(s.k),
                 "--out", str(val))], folder / "score-val.log")  # fmt: skip
    columns, centre = read_table(table), float(read_table(val)["nll"].mean())
    columns["typicality"] = np.abs(columns["nll"] - centre)
    is_out = columns["set"] == 1
    found = {}
    for name, values in columns.items():
        if name not in NOT_SCORES and name not in ("bits_per_dim", "kl", "reconstruction_nll"):
            found[RENAMED.get(name, name)] = (values[~is_out], values[is_out])
    return found


def pyod_scores(
    pair: tuple[str, str], seed: int, s: Settings, data_dirs: dict[str, str], smoke: bool
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """PyOD's VAE, fit on IN's training images (the same split vaekit trains on), scored on both test splits."""
    import torch
    from pyod.models.vae import VAE as PyodVAE

    from vaekit.config import DataConfig
    from vaekit.data.sources import load_dataset, to_float

    def images(name: str) -> Any:
        val_size = int(s.data[s.data.index("--val-size") + 1])
        config = DataConfig(dataset=name, data_dir=data_dirs.get(name), val_size=val_size, split_seed=0)
        return load_dataset(config)

    inside, outside = images(pair[0]), images(pair[1])
    flat = [to_float(split.x).flatten(1).numpy() for split in (inside.train, inside.test, outside.test)]
    found = {}
    for name, capacity in (("pyod-vae", 0.0), ("pyod-vae-kl", float("inf"))):
        torch.manual_seed(seed)
        detector = PyodVAE(epoch_num=s.pyod_epochs, capacity=capacity, random_state=seed, verbose=0, device="cpu")
        detector.fit(flat[0][:2000] if smoke else flat[0])
        found[name] = (detector.decision_function(flat[1]), detector.decision_function(flat[2]))
    return found


def named(dataset: str) -> str:
    """A dataset's name in the records: an array file's stem (`fashion-mnist-without-3`), else the name itself."""
    return Path(dataset).stem if dataset.endswith(".npz") else dataset


def records(
    pair: tuple[str, str], by_seed: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]], models: dict[str, str],
    about: str,
) -> list[dict[str, Any]]:  # fmt: skip
    """One record per score: its metrics' mean over seeds, the intervals' envelope and each seed's AUROC."""
    from vaekit.analysis.detection import separation

    seeds = sorted(by_seed)
    out = []
    for score in by_seed[seeds[0]]:
        found = [separation(score, *by_seed[seed][score], seed=seed) for seed in seeds]
        out.append({
            "in": named(pair[0]), "out": named(pair[1]), "score": score, "model": models.get(score, models["vaekit"]),
            "auroc": statistics.fmean(f.auroc for f in found),
            "auroc_interval": [min(f.auroc_interval[0] for f in found), max(f.auroc_interval[1] for f in found)],
            "auroc_by_seed": [f.auroc for f in found],
            "auprc": statistics.fmean(f.auprc for f in found),
            "fpr95": statistics.fmean(f.fpr_at_95_tpr for f in found),
            "in_images": found[0].inliers, "out_images": found[0].outliers,
            "seeds": seeds, "commit": about,
        })  # fmt: skip
    return out


def kept(path: Path, new: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records already in `path` that this run does not measure again (another model, pair or score)."""
    if not path.exists():
        return []
    measured = {(r["in"], r["out"], r["score"], r["model"]) for r in new}
    old: list[dict[str, Any]] = json.loads(path.read_text())
    return [r for r in old if (r["in"], r["out"], r["score"], r["model"]) not in measured]


def report(rows: list[dict[str, Any]], about: str, seconds: float) -> str:
    lines = ["# Out-of-distribution detection", "", f"The last run: {about}; {seconds / 60:.0f} min. Each record's own"]
    lines += ["commit and machine are in results.json.", ""]
    lines += ["| in → out | score | model | AUROC (95% interval) | by seed | AUPRC | FPR at 95% TPR |"]
    lines += ["|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["in"], r["out"], r["model"].startswith("pyod"), r["model"])):
        low, high = r["auroc_interval"]
        seeds = ", ".join(f"{a:.3f}" for a in r["auroc_by_seed"])
        lines.append(f"| {r['in']} → {r['out']} | {r['score']} | {r['model']} | {r['auroc']:.3f} ({low:.3f}–"
                     f"{high:.3f}) | {seeds} | {r['auprc']:.3f} | {r['fpr95']:.3f} |")  # fmt: skip
    held_out = [r for r in rows if "-without-" in r["in"]]
    if held_out:
        lines += ["", "One class held out, averaged over the classes:", ""]
        lines += ["| score | model | classes | mean AUROC | lowest |", "|---|---|---|---|---|"]
        for score, model in dict.fromkeys((r["score"], r["model"]) for r in held_out):
            found = [r["auroc"] for r in held_out if (r["score"], r["model"]) == (score, model)]
            lines.append(f"| {score} | {model} | {len(found)} | {statistics.fmean(found):.3f} | {min(found):.3f} |")
    return "\n".join([*lines, ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", default="fashion-mnist:mnist,mnist:fashion-mnist")
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--mnist-dir", default="../shared/data", help="the folder holding MNIST's IDX files (mnist/)")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--smoke", action="store_true", help="digits against noise images, tiny widths: seconds")
    parser.add_argument("--no-pyod", action="store_true", help="leave PyOD's rows out (those already there stay)")
    parser.add_argument("--model", choices=sorted(MODELS), default="ladder", help="the hierarchy to train")
    parser.add_argument("--one-class", metavar="DATASET", help="instead of --pairs: each class of DATASET held out")
    parser.add_argument("--classes", default="0,1,2,3,4,5,6,7,8,9", help="the classes --one-class holds out")
    args = parser.parse_args()
    s = (SMOKE if args.smoke else MODELS)[args.model]
    pairs = [tuple(p.split(":")) for p in args.pairs.split(",")]
    data_dirs = {"mnist": str(Path(args.mnist_dir).resolve() / "mnist")}
    if args.one_class:
        classes = [int(c) for c in args.classes.split(",")]
        pairs = one_class_tasks(args.one_class, classes, args.out / "data", data_dirs.get(args.one_class))
    if args.smoke and not args.one_class:
        noise = args.out / "noise.npz"
        noise.parent.mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(0)
        np.savez(noise, x_train=rng.integers(0, 17, (400, 8, 8), np.uint8) * 15,
                 x_test=rng.integers(0, 17, (300, 8, 8), np.uint8) * 15)  # fmt: skip
        pairs, data_dirs = [("digits", str(noise))], {}
    seeds = [int(seed) for seed in args.seeds.split(",")]
    about, started = machine(), time.perf_counter()
    pyod = "" if args.no_pyod else importlib.metadata.version("pyod")
    rows: list[dict[str, Any]] = []
    for pair in pairs:
        by_seed: dict[int, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        for seed in seeds:
            folder = args.out / "runs" / f"{Path(pair[0]).stem}-vs-{Path(pair[1]).stem}-seed{seed}"
            print(f"== {pair[0]} → {pair[1]}, seed {seed}", flush=True)
            by_seed[seed] = vaekit_scores(pair, seed, s, data_dirs, folder)
            if pyod:
                by_seed[seed] |= pyod_scores(pair, seed, s, data_dirs, args.smoke)
        models = {
            "vaekit": f"vaekit hierarchy ({args.model}): " + " ".join(s.network),
            "pyod-vae": f"pyod {pyod} VAE, its defaults (capacity 0: no KL term)",
            "pyod-vae-kl": f"pyod {pyod} VAE, KL term on (capacity unbounded)",
        }
        rows += records(pair, by_seed, models, about)
        print(report(rows, about, time.perf_counter() - started), flush=True)
    rows = kept(args.out / "results.json", rows) + rows
    (args.out / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    (args.out / "results.md").write_text(report(rows, about, time.perf_counter() - started))
    print(f"wrote {args.out / 'results.json'} and results.md")


if __name__ == "__main__":
    main()
