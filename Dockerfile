# vulnattest's image for the Kubernetes work pool (deployments/prefect-kubernetes.yaml builds and pushes it):
# vulnattest, its flows and Prefect on Python, with Trivy copied from Aqua's own image.
#
# Both bases are pinned by digest, and the digests are build arguments with no default: a build without them fails
# instead of taking whatever the tags point at that day. Look them up once (README.md, "Running it for real"):
#   docker buildx imagetools inspect aquasec/trivy:0.76.0 --format '{{ .Manifest.Digest }}'
#   docker buildx imagetools inspect python:3.11-slim-trixie --format '{{ .Manifest.Digest }}'
ARG TRIVY_VERSION=0.76.0
ARG TRIVY_DIGEST
ARG PYTHON_VERSION=3.11-slim-trixie
ARG PYTHON_DIGEST

FROM aquasec/trivy:${TRIVY_VERSION}@${TRIVY_DIGEST} AS trivy

FROM python:${PYTHON_VERSION}@${PYTHON_DIGEST}

# the ids the work pool's base job template runs as (runAsUser, fsGroup)
RUN useradd --uid 10001 --user-group --create-home --home-dir /home/vulnattest --shell /usr/sbin/nologin vulnattest \
    && install -d -o vulnattest -g vulnattest /var/cache/trivy

# Trivy's release binary is static: it runs on any base
COPY --from=trivy /usr/local/bin/trivy /usr/local/bin/trivy

# the deployments run flows/<name>.py from this directory (their pull step sets it as the working directory)
WORKDIR /opt/vulnattest
COPY pyproject.toml README.md ./
COPY vulnattest ./vulnattest
COPY tasks ./tasks
COPY flows ./flows
COPY deployments ./deployments
# no `trivy` extra: it installs a repackaged Trivy, and this image carries Aqua's own
RUN pip install --no-cache-dir --disable-pip-version-check --root-user-action=ignore . \
    && trivy --version \
    && vulnattest --help > /dev/null

# DOCKER_CONFIG: where the job mounts the registry Secret's config.json (vulnattest and Trivy both read it there);
# TRIVY_CACHE_DIR: the job's cache volume
ENV HOME=/home/vulnattest \
    DOCKER_CONFIG=/var/run/secrets/vulnattest/docker \
    TRIVY_CACHE_DIR=/var/cache/trivy \
    PREFECT_LOGGING_EXTRA_LOGGERS=vulnattest \
    PYTHONUNBUFFERED=1

USER 10001:10001
