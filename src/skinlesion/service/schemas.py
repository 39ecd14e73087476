"""The service's response models: they validate the answers and document the API in ``/docs``.

The class names are the OpenAPI schema names (``Prediction``, ``Health``, ``ErrorBody``,
``DiagnosisProbability``): clients generated from the schema depend on them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field


class DiagnosisProbability(BaseModel):
    """One diagnosis class of a diagnosis model."""

    diagnosis: str
    probability: float = Field(..., ge=0.0, le=1.0)


class Prediction(BaseModel):
    """The answer of ``POST /v1/predict``."""

    probability: float = Field(..., ge=0.0, le=1.0, description="P(malignant) in [0, 1].")
    decision: str = Field(..., description="benign, malignant or inconclusive, at the run's threshold.")
    threshold: float = Field(..., description="The decision threshold on the probability.")
    inconclusive_band: float = Field(..., description="Half-width of the inconclusive band (0 = off).")
    model_id: str
    backbone: str
    tta: int = Field(..., description="Number of flip/transpose views averaged.")
    filename: str = Field(..., description="The upload's name, as a label only.")
    elapsed_ms: float = Field(..., description="Server time for decoding and inference.")
    intended_use: str
    heatmap_png_base64: str | None = Field(
        None, description="Grad-CAM overlay (PNG, base64) when heatmap=true.")
    diagnoses: list[DiagnosisProbability] | None = Field(
        None, description="A diagnosis model's classes, most likely first.")
    metadata: dict[str, Any] | None = Field(
        None, description="For a model that uses clinical metadata: the values it used after "
                          "normalisation (null = unknown).")


class Health(BaseModel):
    """The answer of ``GET /v1/health``."""

    status: str
    model_loaded: bool
    model_id: str | None
    version: str


class ErrorBody(BaseModel):
    """Every error answer."""

    detail: str
