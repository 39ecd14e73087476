"""Dataset layouts: read each common ISIC layout into candidate manifest rows.

A *layout* knows how to find labels and image files in one source (a folder or
a CSV). Layouts are registered once in :data:`~skinlesion.data.layouts.detect.FORMATS`
(name → :class:`~skinlesion.data.layouts.base.Layout`);
:func:`~skinlesion.data.layouts.detect.detect_format` picks one from the files
themselves (CSV headers, folder structure) and
:func:`~skinlesion.data.layouts.detect.read_source` returns a
:class:`~skinlesion.data.layouts.base.SourceRows`: candidate rows (label decided,
image file located, nothing decoded yet) plus rows rejected with a reason.
Decoding, de-duplication and splitting happen in :mod:`skinlesion.data.prepare`.

Modules:

* ``base`` — ``SourceRows``, ``SourceError``, ``Layout``, ``CANDIDATE_FIELDS``,
  given splits (``TRAINVAL``) and ``add_row``, the one way a reader adds a row;
* ``tables`` — ``read_table``/``read_header`` (robust CSV reading), the id and path
  column names, column and cell helpers;
* ``files`` — ``ImageIndex`` (image files by id) and the sorted folder walk;
* one module per layout, each holding its header matcher, its reader and its
  ``LAYOUT``: ``folders``, ``isic2020``, ``ham10000``, ``isic2017``, ``isic2019``,
  ``archive``, ``csv_table`` (the ``csv`` layout);
* ``detect`` — the registry ``FORMATS``, ``detect_format``, ``read_source``,
  ``is_metadata_header`` and the side tables beside a label table.

Adding a layout is one new module with a ``LAYOUT`` and one line in ``FORMATS``.

Layouts:

==========  ================================================================
folders     one folder per class (any names, ``--label-map``); optional
            ``train/ valid/ test/`` parents keep their split (udacity
            dermatologist-ai)
isic2020    ISIC 2020 training CSV (``image_name, patient_id, …, target``; the
            v2 table's ``lesion_id`` is used too) with its JPEG folder and,
            if present, ``ISIC_2020_Training_Duplicates.csv``
ham10000    ``HAM10000_metadata.csv`` (``lesion_id, image_id, dx, …``),
            images in one or more folders
isic2017    ISIC 2017 ground truth (``image_id, melanoma,
            seborrheic_keratosis``) and ISIC 2016 (header-less
            ``ISIC_…, benign|malignant|0|1``); Training / Validation / Test
            files give the split
isic2019    ISIC 2019 ground truth, one-hot ``MEL NV BCC AK BKL DF VASC SCC
            UNK`` (also ISIC 2018 Task 3 with ``AKIEC``), optional
            ``…Metadata.csv`` for age, sex, site, lesion
archive     ISIC Archive download by ``isic image download``:
            ``metadata.csv`` with ``isic_id, diagnosis_1…5`` (or
            ``benign_malignant``), ``patient_id, lesion_id, …``
csv         any CSV with a path/filename (or image id) column and a label
            (0/1 or a name) or diagnosis column; optional ``split``,
            ``patient_id``, ``lesion_id``, ``source``, ... columns
==========  ================================================================
"""
