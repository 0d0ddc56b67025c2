"""HTTP blueprints: thin views that parse, call the model layer and shape the answer."""
from flask import current_app

from app.inference import ModelRegistry


def served_models() -> ModelRegistry:
    return current_app.extensions["agserve.models"]
