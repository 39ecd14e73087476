"""Workflows: the orchestrators that tie the packages below together.

Each function here reads a run folder and a prepared data folder, calls the pure
packages (``data``, ``inference``, ``evaluation``, ``training``) and writes a result
folder — what one CLI command or one Python-API call does:

* :mod:`.scoring` — score a manifest split through the ``Predictor`` and choose the
  operating threshold (shared by evaluate, compare and ensemble);
* :mod:`.evaluate` — ``evaluate_run``: metrics, plots and the report in ``RUN_DIR/eval/``;
* :mod:`.compare` — ``compare_runs``: several runs on the same images, paired tests;
* :mod:`.ensemble` — ``build_ensemble``: several runs as one run folder;
* :mod:`.export` — ``export_run``: SavedModel / TFLite / ONNX, checked and written atomically;
* :mod:`.demo` — ``run_demo``: prepare → train → evaluate on the bundled sample.

Nothing below this layer imports it; the CLI, the Python API and the service call it.
"""
