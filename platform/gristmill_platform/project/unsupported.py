"""What craft-ai-sdk 0.74 can ask and a self-hosted Gristmill does not run: pipeline
templates (the vendor's catalogue of hosted models) and the vector database (a managed
Weaviate). A clear 501 instead of a 404 that reads like a typo (docs/compatibility.md)."""

from __future__ import annotations

from typing import NoReturn

from gristmill_platform.errors import AppError

TEMPLATES_MESSAGE = (
    "Pipeline templates are not supported by Gristmill: it has no catalogue of hosted "
    "models. Create the pipeline from your own code with create_pipeline(function_path=..., "
    "function_name=...); see docs/compatibility.md.")
VECTOR_DATABASE_MESSAGE = (
    "Gristmill does not run a vector database: get_vector_database_credentials and "
    "get_weaviate_client are not supported. Run Weaviate yourself and pass its URL to your "
    "steps as an environment variable; see docs/compatibility.md.")


class NotSupported(AppError):
    status_code = 501
    name = "NotSupported"


def pipeline_templates_not_supported() -> NoReturn:
    raise NotSupported(TEMPLATES_MESSAGE, additional_data={"feature": "pipeline_templates"})


def vector_database_not_supported() -> NoReturn:
    raise NotSupported(VECTOR_DATABASE_MESSAGE, additional_data={"feature": "vector_database"})
