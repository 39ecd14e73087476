"""The bench harness: what every bench module uses so that all results look alike.

* :mod:`bench.harness.environment` — where things live (the repo, the bench cache, the
  isic-dev images and their prepared copy) and the machine and software a result was
  measured on (CPU model, cores, memory, load average, library versions, git commit);
* :mod:`bench.harness.timing` — repetitions → ``median_s``/``min_s``/``max_s`` (plus items
  per second), ratios, and peak resident memory;
* :mod:`bench.harness.child` — a measurement in its own Python process, so its peak memory
  belongs to that measurement alone and one crash or hang never takes the whole bench
  down; ``python -m bench`` runs every bench through it;
* :mod:`bench.harness.results` — one JSON record per bench, written atomically, read back,
  and merged when a bench is measured in parts.

Import from the module that holds a name (``from bench.harness.timing import time_calls``);
this package re-exports nothing.
"""
