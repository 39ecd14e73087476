"""Rebuild the demo sample shipped in src/skinlesion/demo/sample from isic-dev.

200 CC-0 images (ISIC Archive, ISIC 2016 and ISIC 2017 challenge sources of the
isic-dev data card): 80 melanoma, 120 benign (nevus, seborrheic keratosis),
drawn with a fixed seed and downscaled so the longer side is 256 px.

Usage: python scripts/make_demo_sample.py [ISIC_DEV_DIR]
"""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd
from PIL import Image

CC0_SOURCES = ("ISIC-archive", "ISIC2016", "ISIC2017-train", "ISIC2017-val")
OUT = Path(__file__).resolve().parents[1] / "src" / "skinlesion" / "demo" / "sample"


def main(src: Path) -> None:
    df = pd.read_csv(src / "labels.csv")
    df["dataset"] = df["source"].str.split(":").str[-1]
    df = df[df["dataset"].isin(CC0_SOURCES) & df["filename"].str.startswith("images/")]
    df = df[df["diagnosis"].isin(["melanoma", "nevus", "seborrheic_keratosis"])]
    mal = df[df["label"] == 1].sample(80, random_state=2026)
    ben = df[df["label"] == 0].sample(120, random_state=2026)
    sample = pd.concat([mal, ben]).sort_values("image_id").reset_index(drop=True)
    (OUT / "images").mkdir(parents=True, exist_ok=True)
    for row in sample.itertuples():
        with Image.open(src / row.filename) as im:
            im = im.convert("RGB")
            im.thumbnail((256, 256), Image.Resampling.LANCZOS)
            im.save(OUT / "images" / f"{row.image_id}.jpg", quality=90)
    out = pd.DataFrame({
        "image_id": sample["image_id"], "filename": "images/" + sample["image_id"] + ".jpg",
        "label": sample["label"], "diagnosis": sample["diagnosis"], "source": sample["dataset"],
        "patient_id": "",
    })
    out.to_csv(OUT / "labels.csv", index=False)
    # Clinical metadata of the same images (the isic-dev metadata table: ISIC challenge
    # metadata and archive JSON), so the sample shows metadata fusion too.
    meta = pd.read_csv(src / "metadata.csv", dtype=str, keep_default_na=False)
    cols = ["image_id", "age_approx", "sex", "anatom_site_general", "lesion_id"]
    meta = meta[meta["image_id"].isin(set(out["image_id"]))][cols]
    meta.sort_values("image_id").to_csv(OUT / "metadata.csv", index=False)
    lines = [
        "# Demo sample: attribution",
        "",
        "200 dermoscopic images (80 melanoma, 120 benign: nevus and seborrheic keratosis),",
        "downscaled to at most 256 px, taken from the ISIC Archive and the ISIC 2016 and 2017",
        "challenge data sets, which the ISIC Archive publishes under **CC-0**",
        "(International Skin Imaging Collaboration, https://www.isic-archive.com).",
        "",
        "Please cite the ISIC Archive and, for the challenge images:",
        "- Codella N. et al., *Skin lesion analysis toward melanoma detection: a challenge at the",
        "  2017 ISBI*, arXiv:1710.05006 (ISIC 2017).",
        "- Gutman D. et al., *Skin lesion analysis toward melanoma detection: a challenge at ISBI",
        "  2016*, arXiv:1605.01397 (ISIC 2016).",
        "",
        "Built by `scripts/make_demo_sample.py` from the project's isic-dev development set.",
        "Intended use: research and education only; not a diagnostic device.",
        "",
        "| image_id | source | diagnosis | label |",
        "|---|---|---|---|",
    ]
    lines += [f"| {r.image_id} | {r.source} | {r.diagnosis} | {r.label} |" for r in out.itertuples()]
    (OUT / "ATTRIBUTION.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    print(f"wrote {len(out)} images to {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else
         Path(__file__).resolve().parents[2] / "shared" / "data" / "isic-dev")
