# agserve image: pinned dependencies, non-root, gunicorn as PID 1. Models are mounted at /srv/agserve/models.
# Python must match the one that saved the models (AutoGluon refuses another major.minor).
# Pinned by tag, not digest: no registry could be reached to verify one, and a wrong digest breaks every build; pin
# where you build (`docker buildx imagetools inspect python:3.11.7-slim-bookworm`, see docs/deployment.md).
FROM python:3.11.7-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
RUN python -m venv /opt/venv
COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install -r /tmp/requirements.txt
COPY setup.cfg pyproject.toml README.md /src/
COPY app /src/app
RUN /opt/venv/bin/pip install --no-deps /src

FROM python:3.11.7-slim-bookworm
# LightGBM needs the OpenMP runtime. Not pinned to a version (DL3008): Debian's security fixes of it are wanted at
# every rebuild, and bookworm's stable updates do not change its ABI.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends libgomp1 && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /srv/agserve agserve \
    && mkdir -p /srv/agserve/var && chown agserve /srv/agserve/var
COPY --from=build /opt/venv /opt/venv
WORKDIR /srv/agserve
COPY --chown=root:root config ./config
COPY --chown=root:root app ./app
COPY --chown=root:root wsgi.py gunicorn.conf.py ./
ENV PATH=/opt/venv/bin:$PATH PYTHONUNBUFFERED=1 AGSERVE_ENV=production AGSERVE_MODEL_REPOSITORY=/srv/agserve/models
# Numeric, so runtimes (Kubernetes runAsNonRoot) can tell it is not root.
USER 10001
EXPOSE 8000
# Models are mounted read-only; keys, monitoring and the prediction log live in var/ (a volume).
VOLUME ["/srv/agserve/models", "/srv/agserve/var"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s CMD ["python", "-c", "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:8000/health/live', timeout=2).status != 200)"]
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
