"""The model layer: repository on disk, safe loading, served models. It never imports Flask.

Names are re-exported lazily, so that importing app.inference.errors (as the HTTP layer and gunicorn's master do)
does not pull in pandas or prometheus_client.
"""
import importlib
import logging as _logging

_EXPORTS = {
    "InvalidInput": "app.inference.errors", "ModelError": "app.inference.errors",
    "ModelLoadError": "app.inference.errors", "ModelNotFound": "app.inference.errors",
    "ModelNotReady": "app.inference.errors", "RepositoryError": "app.inference.errors",
    "ModelRegistry": "app.inference.registry",
    "ModelRepository": "app.inference.repository", "ModelVersion": "app.inference.repository",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'app.inference' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)


# AutoGluon logs an error on every GPU probe when torch is absent; tabular CPU models never need torch.
_logging.getLogger("autogluon.common.utils.resource_utils").addFilter(
    lambda record: "Failed to import torch" not in record.getMessage())
