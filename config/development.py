"""Settings for a developer's machine (`AGSERVE_ENV=development`, the default)."""
LOG_LEVEL = "info"
