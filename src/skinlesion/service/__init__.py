"""The HTTP service (FastAPI + uvicorn) and its web page."""

from skinlesion.utils.quiet import quiet_tensorflow

# A server's log is read by people on call: TensorFlow's start-up lines (cuInit on a CPU
# machine, oneDNN notes) are noise there too. SKINLESION_TF_LOGS=1 keeps them.
quiet_tensorflow()
