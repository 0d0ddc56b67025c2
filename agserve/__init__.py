"""agserve's Python client package: `from agserve.client import Client`. Needs only pandas and requests (no AutoGluon,
no Flask), so callers install it beside their own code."""
