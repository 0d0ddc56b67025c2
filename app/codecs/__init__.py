"""Codecs: each wire format turns a request body into the Table the data plane takes, and its answer into bytes.

envelope.py holds the checks every format shares (content type, body size, the `data` field, row and column
limits); json_rows.py the JSON records and split bodies and answers; csv_rows.py CSV; the Open Inference Protocol's
JSON tensors are decoded and encoded in app/api/v2.py, its binary tensor data extension in v2_binary.py.
"""
