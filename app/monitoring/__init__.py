"""Monitoring after the answer: traffic, input drift, live quality from feedback, and alerts.

monitor.Monitor ties the parts together for one worker: the shared store (store.py), this worker's collector
(collector.py), drift and quality reports (drift.py, quality.py) and the alert evaluator (alerts.py).
"""
