"""Per-row explanations: Shapley values over the caller's original features, exact in their sum.

Method: antithetic permutation sampling against a background sample stored with the model version. For each
permutation the row's features are switched on one by one (the others taken from each background row); the change
in the model's mean output at each step is that feature's contribution. Each permutation telescopes from the mean
output over the background (the base value) to the row's own output, so base + Σ contributions = output up to
float rounding, for any ensemble and any feature kind (a date or text column is one feature, whatever AutoGluon
derives from it). The permutations are seeded from the model version and the row, so an answer is reproducible.
"""
from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from app.frames import json_value, records
from app.inference.errors import InvalidInput, ModelError, ModelLoadError
from app.inference.served import MaskedRows, Prediction, ServedModel
from app.inference.tables import Table, merge_columns, table_from_records, take_rows
from app.state.cache import row_keys

log = logging.getLogger("agserve.explain")
BACKGROUND_FILE = "background.json"
BACKGROUND_ROWS = 50  # 50 rows keep one explanation near 3,000 model rows while the base value stays stable
STRATA = 5  # label bins of a regression's reference data


class NoBackground(ModelError):
    """The version has no background sample: explanations need one."""

    status = 409


# --- at import time: choosing and storing the background sample -------------------------------------------------

def sample_background(data: pd.DataFrame, features: list[str], label: str | None, problem_type: str,
                      rows: int = BACKGROUND_ROWS, seed: int = 0) -> pd.DataFrame:
    """A stratified sample of the reference data: by class for classifiers, by label quintile for regression
    (proportional, at least one row per stratum), a plain random sample when there is no label."""
    frame = data.reset_index(drop=True)
    if len(frame) <= rows:
        return frame[features]
    if label is None or label not in frame.columns or frame[label].isna().all():
        return frame.sample(rows, random_state=seed)[features]
    target = frame[label]
    if problem_type in ("binary", "multiclass"):
        strata = target.astype(str).where(target.notna(), "<missing>")
    else:
        strata = pd.qcut(target.rank(method="first"), STRATA, labels=False).astype("Int64").astype(str)
    shares = strata.value_counts(normalize=True)
    quota = {s: max(1, int(round(share * rows))) for s, share in shares.items()}
    picked = [frame[strata == s].sample(min(q, int((strata == s).sum())), random_state=seed) for s, q in quota.items()]
    return pd.concat(picked).sort_index()[features]


def write_background(version_dir: Path, sample: pd.DataFrame) -> dict[str, Any]:
    """Write the sample beside the manifest; return the manifest entry that pins it (file, rows, sha256)."""
    content = orjson.dumps(records(sample))
    (version_dir / BACKGROUND_FILE).write_bytes(content)
    return {"file": BACKGROUND_FILE, "rows": len(sample), "sha256": hashlib.sha256(content).hexdigest()}


# --- at load time -----------------------------------------------------------------------------------------------

def load_background(version_dir: Path, manifest: dict[str, Any], model: ServedModel) -> dict[str, Any] | None:
    """The background rows as validated columns, or None when the version has none; a file that does not match
    its checksum refuses the version, like any other changed file."""
    entry = manifest.get("background")
    if not entry:
        return None
    path = version_dir / entry["file"]
    content = path.read_bytes() if path.is_file() else b""
    if hashlib.sha256(content).hexdigest() != entry["sha256"]:
        raise ModelLoadError(f"model {model.name} version {model.version}: {entry['file']} failed its integrity "
                             "check; refusing to load it")
    rows = orjson.loads(content)
    try:
        return model.validate_table(table_from_records(rows, model.feature_names))
    except InvalidInput as exc:  # e.g. bounds set after import that the reference data breaks
        log.warning("background sample does not pass the input schema; explanations are off: %s", exc.details,
                    extra={"model": model.name, "version": model.version})
        return None


# --- at request time --------------------------------------------------------------------------------------------

def explain_table(model: ServedModel, table: Table, permutations: int, cache=None) -> list[dict[str, Any]]:
    """One full explanation per row (every output: each class, each quantile level, or the value)."""
    background = model.background
    if background is None:
        raise NoBackground(
            f"model {model.name!r} version {model.version!r} has no background sample, so it cannot be explained. "
            f"Add one with `agserve models background {model.name} {model.version} --data REFERENCE.csv` "
            "(then promote or restart), or import the version with --reference", {"model": model.name})
    columns = model.validate_table(table)
    names = model.feature_names
    namespace = f"{model.cache_namespace}:explain:{permutations}"
    keys = row_keys(namespace, columns, names, table.n) if cache is not None else None
    found = cache.get_many(keys) if cache is not None else [None] * table.n
    seeds = row_keys(f"{model.name}:{model.version}", columns, names, table.n)  # the same on every worker
    todo = [i for i in range(table.n) if found[i] is None]
    if todo:
        computed = _explain_rows(model, take_rows(columns, todo), background, permutations,
                                 [int(seeds[i][:16], 16) for i in todo])
        for i, explanation in zip(todo, computed):
            found[i] = explanation
        if cache is not None:
            cache.set_many({keys[i]: found[i] for i in todo})
    integers = {f["name"] for f in model.features if f["kind"] == "integer"}
    return [{**explanation, "inputs": {name: _input_value(columns[name][i], name in integers) for name in names}}
            for i, explanation in enumerate(found)]


def _explain_rows(model: ServedModel, rows: dict[str, Any], background: dict[str, Any], permutations: int,
                  seeds: list[int]) -> list[dict[str, Any]]:
    """All rows' masked copies in one stream of model calls: [the rows, the background, row 1's blocks, ...]."""
    names = model.feature_names
    p, r = len(names), len(seeds)
    m = len(next(iter(background.values())))
    steps = max(p - 1, 0)  # the first (all background) and last (all row) steps are the base and the row itself
    orders, designs = [], []
    for i, seed in enumerate(seeds):
        rng = np.random.default_rng(seed)
        half = [rng.permutation(p) for _ in range(permutations // 2)]
        orders.append(half + [order[::-1] for order in half])  # antithetic pairs halve the variance for free
        designs.append(_masked(names, take_rows(rows, [i]), background, orders[-1], steps, m))
    kinds = {feature["name"]: feature["kind"] for feature in model.features}
    block = permutations * steps * m
    answers, outputs = _predict(model, merge_columns([rows, background, *designs], kinds), r + m + r * block, r)
    base = outputs[r:r + m].mean(axis=0)
    explanations = []
    for i in range(r):
        value = outputs[i]
        blocks = outputs[r + m + i * block:r + m + (i + 1) * block]
        means = blocks.reshape(permutations, steps, m, outputs.shape[1]).mean(axis=2)
        path = np.concatenate([np.broadcast_to(base, (permutations, 1, len(base))), means,
                               np.broadcast_to(value, (permutations, 1, len(value)))], axis=1)
        taken = np.diff(path, axis=1)  # (orders, features, outputs): step j is feature order[j]'s contribution
        contributions = np.zeros((p, outputs.shape[1]))
        for order, steps_of_order in zip(orders[i], taken):
            contributions[order] += steps_of_order
        contributions /= permutations
        explanations.append({"prediction": answers[i], "outputs": _output_names(answers[i]),
                             "value": value.tolist(), "base": base.tolist(), "contributions": contributions.tolist()})
    return explanations


def _masked(names: list[str], row: dict[str, Any], background: dict[str, Any], orders: list[np.ndarray],
            steps: int, m: int) -> dict[str, Any]:
    """Block (k, j) of m rows: feature f from the row when it is among the first j+1 features of order k, else
    from each background row."""
    masked = {}
    for f, name in enumerate(names):
        from_row = np.array([[np.flatnonzero(order == f)[0] <= j for j in range(steps)] for order in orders],
                            dtype=bool).reshape(-1)
        masked[name] = _mix(row[name][0], background[name], np.repeat(from_row, m))
    return masked


def _mix(value: Any, background: Any, from_row: np.ndarray) -> Any:
    """The background column tiled once per block, with the row's value where from_row is set."""
    # an integer float64 cannot hold exactly (2**63 - 1 would round to 2**63 and overflow int64) keeps its column object
    exact = isinstance(background, np.ndarray) and not (type(value) is int and abs(value) >= 2 ** 53)
    tiled = np.tile(np.asarray(background, dtype="float64" if exact else object),
                    len(from_row) // max(len(background), 1))
    tiled[from_row] = value
    return tiled if tiled.dtype != object else tiled.tolist()


def _predict(model: ServedModel, columns: dict[str, Any], n: int, answered: int) -> tuple[list[Any], np.ndarray]:
    """All rows through the model's batcher in chunks it takes whole, so predictions queued meanwhile get their
    turn between chunks; returns the first rows' answers (as the cache keeps them) and every row's outputs."""
    chunk = min(model.explain_chunk_rows, model.batcher.max_rows) if model.batcher is not None else n
    answers, outputs = [], []
    for start in range(0, n, chunk):
        stop = min(start + chunk, n)
        part = model.predict_columns(MaskedRows({name: values[start:stop] for name, values in columns.items()}),
                                     stop - start)
        answers.extend(part.row(j) for j in range(min(answered - start, stop - start)))
        outputs.append(_output_matrix(part))
    return answers, np.concatenate(outputs)


def _output_matrix(prediction: Prediction) -> np.ndarray:
    if prediction.probabilities is not None:
        return np.array([list(row.values()) for row in prediction.probabilities], dtype="float64")
    if prediction.columns is not None:  # quantile levels
        return np.array([list(row.values()) for row in prediction.predictions], dtype="float64")
    return np.asarray(prediction.predictions, dtype="float64").reshape(-1, 1)


def _output_names(answer: list[Any]) -> list[str | None]:
    probabilities = answer[1]
    if probabilities is not None:
        return list(probabilities)
    return list(answer[0]) if isinstance(answer[0], dict) else [None]


def _input_value(value: Any, integer: bool) -> Any:
    """The row's validated value as the caller would send it (whole numbers of integer features as ints)."""
    value = json_value(value.item() if isinstance(value, np.generic) else value)
    return int(value) if integer and isinstance(value, float) else value


# --- shaping an answer ------------------------------------------------------------------------------------------

def shape(model: ServedModel, full: dict[str, Any], all_classes: bool, top: int | None) -> dict[str, Any]:
    """One row's answer: the prediction, then per chosen output its base value, value and contributions
    (largest first; with top, the k largest and the rest summed, so the sum still holds)."""
    prediction, probabilities = full["prediction"]
    outputs = full["outputs"]
    if probabilities is not None:
        chosen = range(len(outputs)) if all_classes else [outputs.index(str(prediction))]
        kind = "probability"
    else:
        chosen = range(len(outputs))
        kind = "quantile" if outputs != [None] else "value"
    names = model.feature_names
    explanations = []
    for o in chosen:
        items = sorted(({"feature": name, "value": full["inputs"][name], "contribution": full["contributions"][f][o]}
                        for f, name in enumerate(names)), key=lambda item: -abs(item["contribution"]))
        explanation = {"output": outputs[o], "kind": kind, "base_value": full["base"][o],
                       "output_value": full["value"][o], "contributions": items}
        if top is not None and top < len(items):
            rest = items[top:]
            explanation["contributions"] = items[:top]
            explanation["rest"] = {"features": len(rest), "contribution": math.fsum(i["contribution"] for i in rest)}
        explanations.append(explanation)
    answer = {"prediction": prediction, "explanations": explanations}
    if probabilities is not None:
        answer = {"prediction": prediction, "probabilities": probabilities, "explanations": explanations}
    return answer
