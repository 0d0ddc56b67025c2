"""Production secrets must be real: not a placeholder from this repository's templates, not guessable.

The placeholders are the values the templates ship (deploy/k8s/examples/secret.yaml, docker-compose.yml, config/,
the README); tests/auth/test_secrets.py reads them from those files, so a template that gains a new one fails the
suite until it is listed here or caught by the words below.
"""
from __future__ import annotations

import math
import re
import zlib
from collections import Counter

PLACEHOLDERS = frozenset({
    "replace-with-a-long-random-string",  # deploy/k8s/examples/secret.yaml
    "replace-with-at-least-32-random-bytes-of-secret",  # deploy/k8s/examples/secret.yaml
    "...",  # README examples
})
# Words that only a template puts in a secret (a random 40-character value holds one of them about never).
PLACEHOLDER_WORDS = re.compile(r"replace|change|example|placeholder|your[-_]|secret|password|dummy|sample|"
                               r"\.\.\.|<[a-z-]+>", re.IGNORECASE)
MIN_BITS = 96  # of the estimate below: token_urlsafe(32) gives about 220, token_hex(16) about 115 (1 in 10,000 under)


def entropy_bits(value: str) -> float:
    """An upper estimate of a value's entropy: the lower of length × the Shannon entropy of its own characters
    (low for repeats and short alphabets) and its zlib-compressed size (low for patterns such as 0123456789...)."""
    if not value:
        return 0.0
    counts = Counter(value)
    shannon = -sum(n * math.log2(n / len(value)) for n in counts.values())
    compressed = 8 * max(0, len(zlib.compress(value.encode(), 9)) - 11)  # zlib's header, checksum and end: ~11
    return max(0.0, min(shannon, compressed))


def weakness(value: str) -> str | None:
    """Why a production secret is unacceptable, or None. The message never repeats the value."""
    if value.strip().lower() in PLACEHOLDERS or PLACEHOLDER_WORDS.search(value):
        return "is a placeholder from a template"
    bits = entropy_bits(value)
    if bits < MIN_BITS:
        return (f"has too little entropy (about {bits:.0f} bits, at least {MIN_BITS} needed); "
                "make one with: python -c 'import secrets; print(secrets.token_urlsafe(32))'")
    return None
