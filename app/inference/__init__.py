"""The model layer: repository on disk, safe loading, served models. It never imports Flask."""
from app.inference.errors import (InvalidInput, ModelError, ModelLoadError, ModelNotFound, ModelNotReady,
                                  RepositoryError)
from app.inference.registry import ModelRegistry
from app.inference.repository import ModelRepository, ModelVersion

__all__ = ["InvalidInput", "ModelError", "ModelLoadError", "ModelNotFound", "ModelNotReady", "ModelRegistry",
           "ModelRepository", "ModelVersion", "RepositoryError"]
