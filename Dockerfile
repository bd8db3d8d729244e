# Conveyor's image: the `conveyor` command, run as the API, a worker, beat or Flower.
#
#   docker build -t conveyor .                  # installs dependencies from the package index
#   ./scripts/build-image                       # the same with no network during the build
#   docker run --rm conveyor --version
#
# BASE_IMAGE: any Debian-like image with python3 (3.11 or newer) and its venv module. The
# tests build FROM conveyor-test/python:3.11, a Debian rootfs made by scripts/base-images,
# since their machines can pull from no registry.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
# The label marks this project's images, so scripts/build-image can prune its old ones.
LABEL org.opencontainers.image.title=conveyor
COPY . /src
# With a wheelhouse in dist/wheels (scripts/build-image makes one) nothing is fetched, so the
# build runs with `--network none`; without one, pip uses the package index as usual. Either
# way the project itself is built from /src, never from a possibly stale wheel (after a
# change of dependencies, run scripts/build-image again or delete dist/wheels).
RUN python3 -m venv /opt/conveyor \
    && if [ -d /src/dist/wheels ]; then \
        set -- --no-index --find-links /src/dist/wheels; \
    fi \
    && /opt/conveyor/bin/pip install --no-cache-dir --disable-pip-version-check "$@" /src

# The runtime stage holds the virtualenv only: no sources, wheels or build tools.
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title=conveyor
RUN groupadd --system --gid 10001 conveyor \
    && useradd --system --uid 10001 --gid conveyor --home-dir /var/lib/conveyor \
        --create-home --shell /usr/sbin/nologin conveyor
COPY --from=build /opt/conveyor /opt/conveyor
# CONVEYOR_DATA_DIR: the embedded database, workspaces and artifacts, owned by the user the
# container runs as (mount a volume here to keep them).
ENV PATH=/opt/conveyor/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    CONVEYOR_DATA_DIR=/var/lib/conveyor
USER conveyor
WORKDIR /var/lib/conveyor
EXPOSE 8080
ENTRYPOINT ["conveyor"]
CMD ["--help"]
