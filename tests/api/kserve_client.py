"""KServe's own InferenceRESTClient at its defaults, run in .venv-kserve (kserve pins psutil<6; agserve runs 7.x).

Reads a request from stdin as JSON ({"url", "key", "model", "request_id", "inputs": [{"name", "datatype", "values"}],
"parameters", "outputs"}), builds each input with set_data_from_numpy (binary_data=True is its default), and prints
what the client decoded: each output's values, each output's binary_data_size (None: it came as JSON), the answer's
Inference-Header-Content-Length and which inputs the client sent as binary."""
import asyncio
import json
import sys

import numpy as np
from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
from kserve.protocol.infer_type import RequestedOutput

NUMPY = {"FP64": np.float64, "FP32": np.float32, "INT64": np.int64, "INT32": np.int32, "BOOL": np.bool_,
         "BYTES": np.object_}


def tensor(spec):
    values = [np.nan if v is None and spec["datatype"].startswith("FP") else v for v in spec["values"]]
    array = np.array(values, dtype=NUMPY[spec["datatype"]])
    infer_input = InferInput(spec["name"], list(array.shape), spec["datatype"])
    infer_input.set_data_from_numpy(array)  # the default: binary_data=True
    return infer_input


async def main(spec):
    inputs = [tensor(s) for s in spec["inputs"]]
    outputs = [RequestedOutput(o["name"], o.get("parameters")) for o in spec["outputs"]] if spec["outputs"] else None
    request = InferRequest(spec["model"], inputs, request_id=spec["request_id"], parameters=spec["parameters"],
                           request_outputs=outputs)
    client = InferenceRESTClient(RESTConfig(protocol="v2", retries=0, timeout=30))
    sent = []  # the raw answer, to read its JSON header: decoding drops binary_data_size from the outputs
    client._client.event_hooks["response"] = [lambda response: _keep(response, sent)]
    headers = {}
    result = await client.infer(spec["url"], request, model_name=spec["model"], headers={"X-API-Key": spec["key"]},
                                response_headers=headers)
    length = int(headers["inference-header-content-length"]) if "inference-header-content-length" in headers else None
    header = json.loads(sent[0][:length])
    decoded = {}
    for output in result.outputs:
        values = output.as_numpy().tolist()
        decoded[output.name] = [v.decode() if isinstance(v, bytes) else v for v in values]
    return {"id": result.id, "outputs": decoded,
            "binary_sizes": {o["name"]: (o.get("parameters") or {}).get("binary_data_size") for o in header["outputs"]},
            "header_length": length, "content_type": headers.get("content-type"),
            "sent_binary": [i.name for i in inputs if i.parameters and "binary_data_size" in i.parameters]}


async def _keep(response, sent):
    sent.append(await response.aread())


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.load(sys.stdin)))))
