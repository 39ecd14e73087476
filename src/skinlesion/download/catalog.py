"""The built-in datasets: URLs, published sizes, licences and citations.

Sources (checked for this release):

* ISIC challenge data page, https://challenge.isic-archive.com/data/ (tabs 2016, 2017,
  2019, 2020). Its template lives in github.com/ImageMarkup/stade
  (``stade/core/templates/data/20XX.html``). Versions of that page link the same files
  on two S3 hosts, ``isic-archive.s3.amazonaws.com/challenges/YEAR/`` and
  ``isic-challenge-data.s3.amazonaws.com/YEAR/``; where both appear, both are listed
  (the first one answering is used).
* Udacity dermatologist-ai README, https://github.com/udacity/dermatologist-ai
  (the train/valid/test zips of tutorial 1).
* HAM10000 on Harvard Dataverse, https://doi.org/10.7910/DVN/DBW86T, whose files are
  only reachable through the Dataverse API (resolved at download time).

Sizes are the rounded figures the pages publish (decimal units). **No checksum is
published for any of these files** except the MD5s the Dataverse API reports for
HAM10000; the ISIC and Udacity files are checked by exact length (``Content-Length``)
and, where the S3 ETag is a plain MD5 (single-part uploads), by that ETag. The SHA-256
of every file is computed during download and recorded in the completion marker.
"""

from __future__ import annotations

from skinlesion.download.registry import (
    DatasetRegistry,
    DatasetSpec,
    DataverseFile,
    DataverseSource,
    RemoteFile,
)

KB, MB, GB = 10**3, 10**6, 10**9

CC0 = ("CC-0", "https://creativecommons.org/share-your-work/public-domain/cc0/")
CC_BY_NC = ("CC-BY-NC 4.0", "https://creativecommons.org/licenses/by-nc/4.0/")


def _isic(year: int, name: str, approx: int, *, extract_to: str | None = None,
          hosts: tuple[str, ...] = ("isic-archive", "isic-challenge-data"),
          description: str = "") -> RemoteFile:
    """An ISIC challenge file on the official S3 host(s), in the order given."""
    prefixes = {
        "isic-archive": f"https://isic-archive.s3.amazonaws.com/challenges/{year}/",
        "isic-challenge-data": f"https://isic-challenge-data.s3.amazonaws.com/{year}/",
    }
    return RemoteFile(name=name, urls=tuple(prefixes[h] + name for h in hosts),
                      approx_size=approx, extract_to=extract_to, etag_md5=True,
                      description=description)


# === Udacity dermatologist-ai (tutorial 1) ===
# Source: https://github.com/udacity/dermatologist-ai README, "Getting Started":
# train.zip (5.3 GB), valid.zip (824.5 MB), test.zip (5.1 GB). Checksums: not published.
# The images are the ISIC 2017 challenge images sorted into melanoma/, nevus/,
# seborrheic_keratosis/ folders (train 2000, valid 150, test 600).
_UDACITY = "https://s3-us-west-1.amazonaws.com/udacity-dlnfd/datasets/skin-cancer/"
DERMATOLOGIST_AI = DatasetSpec(
    name="dermatologist-ai",
    title="Udacity dermatologist-ai (ISIC 2017 images in class folders)",
    licence=CC0[0], licence_url=CC0[1],
    citation=("Codella N, Gutman D, Celebi ME, Helba B, Marchetti MA, Dusza S, Kalloo A, "
              "Liopyris K, Mishra N, Kittler H, Halpern A. Skin Lesion Analysis Toward "
              "Melanoma Detection: A Challenge at the 2017 International Symposium on "
              "Biomedical Imaging (ISBI), Hosted by the International Skin Imaging "
              "Collaboration (ISIC). arXiv:1710.05006. Packaged by Udacity "
              "(github.com/udacity/dermatologist-ai)."),
    source_page="https://github.com/udacity/dermatologist-ai",
    prepare_format="folders",
    files=(
        RemoteFile("train.zip", (_UDACITY + "train.zip",), approx_size=5_300 * MB,
                   extract_to="train", etag_md5=True,
                   description="2000 training images in melanoma/ nevus/ seborrheic_keratosis/"),
        RemoteFile("valid.zip", (_UDACITY + "valid.zip",), approx_size=824_500 * KB,
                   extract_to="valid", etag_md5=True, description="150 validation images"),
        RemoteFile("test.zip", (_UDACITY + "test.zip",), approx_size=5_100 * MB,
                   extract_to="test", etag_md5=True, description="600 test images"),
    ),
    notes="Tutorial 1's data. train/ valid/ test/ each hold one folder per diagnosis; "
          "`prepare` keeps the given split and maps melanoma to 1, the others to 0.",
)

# === ISIC 2020 (SIIM-ISIC melanoma classification, tutorial 2) ===
# Source: https://challenge.isic-archive.com/data/#2020 (stade data/2020.html):
# "Download JPEG (23GB) 33,126 JPEG images", "Download metadata (2MB)" (GroundTruth.csv),
# "Download metadata v2 (2MB)" (adds lesion ID), "Download duplicate image list (2MB)
# List of 425 duplicate images". Checksums: not published. The v1 GroundTruth.csv
# (same page) is left out on purpose: v2 supersedes it (see notes).
ISIC2020 = DatasetSpec(
    name="isic2020",
    title="ISIC 2020 (SIIM-ISIC) training set: 33,126 JPEGs + ground truth",
    licence=CC_BY_NC[0], licence_url=CC_BY_NC[1],
    citation=("International Skin Imaging Collaboration. SIIM-ISIC 2020 Challenge Dataset. "
              "https://doi.org/10.34970/2020-ds01 (2020). Rotemberg V. et al. A "
              "patient-centric dataset of images and metadata for identifying melanomas "
              "using clinical context. Sci Data 8, 34 (2021). "
              "https://doi.org/10.1038/s41597-021-00815-z"),
    source_page="https://challenge.isic-archive.com/data/#2020",
    prepare_format="isic2020",
    files=(
        _isic(2020, "ISIC_2020_Training_JPEG.zip", 23 * GB,
              extract_to="ISIC_2020_Training_JPEG", description="33,126 training JPEGs"),
        _isic(2020, "ISIC_2020_Training_GroundTruth_v2.csv", 2 * MB,
              description="image_name, patient_id, lesion_id, sex, age_approx, site, "
                          "diagnosis, benign_malignant, target"),
        _isic(2020, "ISIC_2020_Training_Duplicates.csv", 2 * MB,
              description="the 425 duplicate image pairs"),
    ),
    notes="Ground truth v2 only: it has every row and column of the original "
          "ISIC_2020_Training_GroundTruth.csv plus lesion_id, and two ground-truth tables in "
          "one folder would list every image twice for `prepare`. `prepare` also reads "
          "ISIC_2020_Training_Duplicates.csv and drops the second image of each pair.",
)

# === ISIC 2019 ===
# Source: https://challenge.isic-archive.com/data/#2019 (stade data/2019.html), task 1/2
# training data: ISIC_2019_Training_Input.zip (9.1GB, 25,331 JPEGs),
# ISIC_2019_Training_GroundTruth.csv (1MB), ISIC_2019_Training_Metadata.csv (1MB).
# Only the isic-challenge-data host is linked for 2019. Checksums: not published.
ISIC2019 = DatasetSpec(
    name="isic2019",
    title="ISIC 2019 training set: 25,331 JPEGs (BCN20000, HAM10000, MSK) + ground truth",
    licence=CC_BY_NC[0], licence_url=CC_BY_NC[1],
    citation=("BCN_20000 Dataset: (c) Department of Dermatology, Hospital Clínic de "
              "Barcelona. HAM10000 Dataset: (c) by ViDIR Group, Department of Dermatology, "
              "Medical University of Vienna; https://doi.org/10.1038/sdata.2018.161. MSK "
              "Dataset: (c) Anonymous; arXiv:1710.05006; arXiv:1902.03368. "
              "Hernández-Pérez C. et al. BCN20000: Dermoscopic lesions in the wild. "
              "Sci Data 11, 641 (2024)."),
    source_page="https://challenge.isic-archive.com/data/#2019",
    prepare_format="isic2019",
    files=(
        _isic(2019, "ISIC_2019_Training_Input.zip", 9_100 * MB, hosts=("isic-challenge-data",),
              extract_to="ISIC_2019_Training_Input", description="25,331 training JPEGs"),
        _isic(2019, "ISIC_2019_Training_GroundTruth.csv", 1 * MB, hosts=("isic-challenge-data",),
              description="one-hot MEL NV BCC AK BKL DF VASC SCC UNK"),
        _isic(2019, "ISIC_2019_Training_Metadata.csv", 1 * MB, hosts=("isic-challenge-data",),
              description="age, sex, anatomic site, lesion id"),
    ),
    notes="Contains the HAM10000 images (do not combine with `ham10000` without "
          "de-duplicating).",
)

# === ISIC 2017 (part 3: lesion classification) ===
# Source: https://challenge.isic-archive.com/data/#2017 (stade data/2017.html):
# Training_Data.zip (5.8GB), Training_Part3_GroundTruth.csv (43KB), Validation_Data.zip
# (878MB), Validation_Part3_GroundTruth.csv (3KB), Test_v2_Data.zip (5.4GB),
# Test_v2_Part3_GroundTruth.csv (13KB). Checksums: not published.
ISIC2017 = DatasetSpec(
    name="isic2017",
    title="ISIC 2017 part 3: 2,000 training, 150 validation, 600 test images + ground truth",
    licence=CC0[0], licence_url=CC0[1],
    citation=("Codella N, Gutman D, Celebi ME, Helba B, Marchetti MA, Dusza S, Kalloo A, "
              "Liopyris K, Mishra N, Kittler H, Halpern A. Skin Lesion Analysis Toward "
              "Melanoma Detection: A Challenge at the 2017 International Symposium on "
              "Biomedical Imaging (ISBI), Hosted by the International Skin Imaging "
              "Collaboration (ISIC). arXiv:1710.05006"),
    source_page="https://challenge.isic-archive.com/data/#2017",
    prepare_format="isic2017",
    files=(
        _isic(2017, "ISIC-2017_Training_Data.zip", 5_800 * MB,
              extract_to="ISIC-2017_Training_Data", description="2000 JPEGs (+ superpixel PNGs)"),
        _isic(2017, "ISIC-2017_Training_Part3_GroundTruth.csv", 43 * KB,
              description="image_id, melanoma, seborrheic_keratosis"),
        _isic(2017, "ISIC-2017_Validation_Data.zip", 878 * MB,
              extract_to="ISIC-2017_Validation_Data", description="150 JPEGs"),
        _isic(2017, "ISIC-2017_Validation_Part3_GroundTruth.csv", 3 * KB),
        _isic(2017, "ISIC-2017_Test_v2_Data.zip", 5_400 * MB,
              extract_to="ISIC-2017_Test_v2_Data", description="600 JPEGs"),
        _isic(2017, "ISIC-2017_Test_v2_Part3_GroundTruth.csv", 13 * KB),
    ),
    notes="The same images as `dermatologist-ai`, in the challenge's own layout with its "
          "ground-truth CSVs. The zips also hold *_superpixels.png files, which `prepare` "
          "ignores.",
)

# === ISIC 2016 (part 3: lesion classification) ===
# Source: https://challenge.isic-archive.com/data/#2016 (stade data/2016.html), task 3:
# ISBI2016_ISIC_Part3_Training_Data.zip (602MB, 900 JPEGs),
# ISBI2016_ISIC_Part3_Training_GroundTruth.csv (19KB), ISBI2016_ISIC_Part3_Test_Data.zip
# (232MB, 379 JPEGs), ISBI2016_ISIC_Part3_Test_GroundTruth.csv (7KB).
# Checksums: not published.
ISIC2016 = DatasetSpec(
    name="isic2016",
    title="ISIC 2016 part 3: 900 training and 379 test images + malignancy ground truth",
    licence=CC0[0], licence_url=CC0[1],
    citation=("Gutman D, Codella NCF, Celebi E, Helba B, Marchetti M, Mishra N, Halpern A. "
              "Skin Lesion Analysis toward Melanoma Detection: A Challenge at the "
              "International Symposium on Biomedical Imaging (ISBI) 2016, hosted by the "
              "International Skin Imaging Collaboration (ISIC). arXiv:1605.01397"),
    source_page="https://challenge.isic-archive.com/data/#2016",
    prepare_format="isic2017",
    files=(
        _isic(2016, "ISBI2016_ISIC_Part3_Training_Data.zip", 602 * MB,
              extract_to="ISBI2016_ISIC_Part3_Training_Data", description="900 JPEGs"),
        _isic(2016, "ISBI2016_ISIC_Part3_Training_GroundTruth.csv", 19 * KB,
              description="no header: image id, benign|malignant"),
        _isic(2016, "ISBI2016_ISIC_Part3_Test_Data.zip", 232 * MB,
              extract_to="ISBI2016_ISIC_Part3_Test_Data", description="379 JPEGs"),
        _isic(2016, "ISBI2016_ISIC_Part3_Test_GroundTruth.csv", 7 * KB,
              description="no header: image id, 0|1"),
    ),
    notes="The training ground truth says benign/malignant, the test ground truth 0/1; "
          "neither file has a header row.",
)

# === HAM10000 (Harvard Dataverse) ===
# Source: https://doi.org/10.7910/DVN/DBW86T. The dataset page lists HAM10000_images_part_1.zip
# (5000 JPEGs), HAM10000_images_part_2.zip (5015 JPEGs) and HAM10000_metadata (an
# ingested tabular file; ?format=original returns the uploaded CSV). Files have no
# stable direct URL: their ids, exact sizes and MD5s come from the Dataverse API
# (GET /api/datasets/:persistentId/versions/:latest-published/files), and each file is
# fetched from /api/access/datafile/{id}. Sizes: not published on the page we cite.
# Licence: HAM10000 is listed as CC-BY-NC on the ISIC 2018 data page
# (https://challenge.isic-archive.com/data/#2018); the Dataverse record's own terms apply.
HAM10000 = DatasetSpec(
    name="ham10000",
    title="HAM10000: 10,015 dermatoscopic images of pigmented lesions + metadata",
    licence=CC_BY_NC[0], licence_url=CC_BY_NC[1],
    citation=("Tschandl P, Rosendahl C, Kittler H. The HAM10000 dataset, a large collection "
              "of multi-source dermatoscopic images of common pigmented skin lesions. "
              "Sci Data 5, 180161 (2018). https://doi.org/10.1038/sdata.2018.161; "
              "Harvard Dataverse, https://doi.org/10.7910/DVN/DBW86T"),
    source_page="https://doi.org/10.7910/DVN/DBW86T",
    prepare_format="ham10000",
    dataverse=DataverseSource(
        server="https://dataverse.harvard.edu",
        persistent_id="doi:10.7910/DVN/DBW86T",
        files=(
            DataverseFile("HAM10000_images_part_1", "HAM10000_images_part_1.zip",
                          extract_to="HAM10000_images_part_1", description="5000 JPEGs"),
            DataverseFile("HAM10000_images_part_2", "HAM10000_images_part_2.zip",
                          extract_to="HAM10000_images_part_2", description="5015 JPEGs"),
            DataverseFile("HAM10000_metadata", "HAM10000_metadata.csv", original=True,
                          description="lesion_id, image_id, dx, dx_type, age, sex, localization"),
        ),
    ),
    notes="Sizes and MD5 checksums come from the Dataverse API at download time. The images "
          "are also part of `isic2019`.",
)

BUILTIN_DATASETS: tuple[DatasetSpec, ...] = (
    DERMATOLOGIST_AI, ISIC2020, ISIC2019, ISIC2017, ISIC2016, HAM10000,
)


_DEFAULT: DatasetRegistry | None = None


def default_registry() -> DatasetRegistry:
    """The built-in registry of known datasets (``catalog.py``)."""
    global _DEFAULT
    if _DEFAULT is None:
        _DEFAULT = DatasetRegistry.of(BUILTIN_DATASETS)
    return _DEFAULT
