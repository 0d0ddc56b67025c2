"""Redis as compose and Kubernetes run it: with a password, and over TLS (rediss://), on a real redis-server. A
wrong password costs the cache, never an answer and never access."""
from __future__ import annotations

import datetime
import ipaddress

import pytest

from tests.support.apps import build_app, client_with_key
from tests.support.data import FEATURES, mixed_frame, to_records
from tests.support.redisserver import redis_server

ROWS = {"data": to_records(mixed_frame(n=3, seed=91)[FEATURES])}


@pytest.fixture(scope="module")
def certificate(tmp_path_factory):
    """A self-signed certificate for 127.0.0.1: (certificate file, key file)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(hours=1))
                   .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                                  critical=False)
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .sign(key, hashes.SHA256()))
    folder = tmp_path_factory.mktemp("tls")
    (folder / "cert.pem").write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    (folder / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption()))
    return str(folder / "cert.pem"), str(folder / "key.pem")


def cached_keys(redis) -> list[bytes]:
    return redis.client().keys("agserve:cache:*")


def test_the_cache_works_over_tls_with_a_password(repository_path, tmp_path, certificate):
    with redis_server(password="s3cret-pass", tls=certificate) as redis:
        assert redis.url.startswith("rediss://:s3cret-pass@127.0.0.1:")
        app = build_app(tmp_path / "auth.sqlite3", MODEL_REPOSITORY=str(repository_path), REDIS_URL=redis.url,
                        CACHE_SECRET="shared")
        client = client_with_key(app)
        first = client.post("/models/binary/predict", json=ROWS)
        assert first.status_code == 200
        assert len(cached_keys(redis)) == 3  # written through TLS with the password
        again = client.post("/models/binary/predict", json=ROWS)
        assert again.get_json()["predictions"] == first.get_json()["predictions"]
        assert app.extensions["agserve.redis"].up


def test_a_wrong_password_loses_the_cache_and_nothing_else(repository_path, tmp_path):
    with redis_server(password="right") as redis:
        url = redis.url.replace(":right@", ":wrong@")
        app = build_app(tmp_path / "auth.sqlite3", MODEL_REPOSITORY=str(repository_path), REDIS_URL=url)
        client = client_with_key(app)
        answers = [client.post("/models/binary/predict", json=ROWS) for _ in range(2)]
        assert [a.status_code for a in answers] == [200, 200]
        assert answers[0].get_json()["predictions"] == answers[1].get_json()["predictions"]
        assert cached_keys(redis) == []
        assert not app.extensions["agserve.redis"].up  # refused, and left alone for a second
        assert app.test_client().post("/models/binary/predict", json=ROWS).status_code == 401
