"""Settings for production (`AGSERVE_ENV=production`)."""
# Behind a load balancer or in a container the server must listen beyond loopback.
BIND = "0.0.0.0:8000"
LOG_LEVEL = "info"
