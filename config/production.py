"""Settings for production (`AGSERVE_ENV=production`)."""
# Behind a load balancer or in a container the server must listen beyond loopback.
BIND = "0.0.0.0:8000"
LOG_LEVEL = "info"
# Predictions are logged for retraining and audit; mount a volume here in containers.
PREDICTION_LOG_DIR = "var/predictions"
