"""The HTTP service (FastAPI + uvicorn) and its web page."""
