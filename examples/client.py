"""Calling agserve from Python: `AGSERVE_KEY=agk_... .venv/bin/python examples/client.py` (after `make run`).

Predicts three copies of the default model's sample row, sends their outcomes back, and shows a refused row's error.
"""
import os

import pandas as pd

from agserve.client import Client, ValidationError

client = Client(os.environ.get("AGSERVE_URL", "http://127.0.0.1:8000"), key=os.environ["AGSERVE_KEY"])

info = client.info()  # the default model: name, version, problem type, features, the server's limits
print(f"{info['name']} version {info['version']}: at most {info['limits']['max_rows']} rows per request")

frame = pd.DataFrame([info["sample_row"]] * 3)  # any DataFrame holding the model's features
answers = client.predict(frame)  # frames over the row limit are chunked; large ones travel as CSV
print(answers)
print("request ids:", answers.attrs["request_ids"])

# When the true outcomes are known (here: pretend the model was right), they feed the live-quality metric.
first = answers.columns[0]
print("outcomes stored:", client.feedback(answers.attrs["prediction_ids"], answers[first].tolist()))

try:
    client.predict([{"not_a_feature": 1}])
except ValidationError as exc:  # raised at once, never retried; carries the server's JSON error
    print(exc.status, exc.error, exc.details, exc.request_id)
