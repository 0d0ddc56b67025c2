"""Settings for the test suite (`AGSERVE_ENV=testing`); tests layer their own mapping on top."""
LOG_LEVEL = "warning"
WORKERS = 2
