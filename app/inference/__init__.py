"""The model layer: repository on disk, safe loading, served models. It never imports Flask."""
from app.inference.errors import (InvalidInput, ModelError, ModelLoadError, ModelNotFound, ModelNotReady,
                                  RepositoryError)
from app.inference.registry import ModelRegistry
from app.inference.repository import ModelRepository, ModelVersion

__all__ = ["InvalidInput", "ModelError", "ModelLoadError", "ModelNotFound", "ModelNotReady", "ModelRegistry",
           "ModelRepository", "ModelVersion", "RepositoryError"]

import logging as _logging

# AutoGluon logs an error on every GPU probe when torch is absent; tabular CPU models never need torch.
_logging.getLogger("autogluon.common.utils.resource_utils").addFilter(
    lambda record: "Failed to import torch" not in record.getMessage())
