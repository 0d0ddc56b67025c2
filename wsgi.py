"""The WSGI entry point: the only module that builds an app at import time (gunicorn wsgi:app)."""
import sys

from app import create_app
from app.config import ConfigError

try:
    app = create_app()
except ConfigError as exc:
    print(f"agserve: configuration error: {exc}", file=sys.stderr)
    sys.exit(4)  # gunicorn's "app failed to load": the master stops instead of respawning
