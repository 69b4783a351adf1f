# deepscreen: the Kafka screening service for GPU nodes.
#
#   docker build -t deepscreen:0.1.0 .
#   docker run --gpus all -e DEEPSCREEN_KAFKA__BOOTSTRAP_SERVERS=kafka:9092 deepscreen:0.1.0
#
# The GPU needs nothing in this image but PyTorch's own CUDA libraries: the
# default torch wheel from PyPI is the CUDA build and pulls them in as nvidia-*
# wheels. The host supplies the driver through the NVIDIA container runtime
# (runtimeClassName "nvidia" in the Helm chart, `--gpus` with Docker). The same
# image runs on the CPU (DEEPSCREEN_DETECTOR__DEVICE=cpu).
#
# The model, two ways:
#   - baked in: detector/models/default.pt, when present in the build context,
#     is installed with the package (package data) and is the default
#     DEEPSCREEN_DETECTOR__MODEL_PATH (detector.config.PACKAGED_MODEL);
#   - mounted: mount a TorchScript artifact (volume, PVC, init container) and
#     point DEEPSCREEN_DETECTOR__MODEL_PATH at it, e.g.
#     -v /srv/models:/models:ro -e DEEPSCREEN_DETECTOR__MODEL_PATH=/models/default.pt
#     The chart's model.source (image | pvc | initContainer) does this.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# ---------------------------------------------------------------- builder ----
# Builds the project's wheel and installs it with every dependency into a
# virtual environment at /opt/venv, which the runtime stage copies whole (both
# stages use the same base image, so the venv's interpreter path holds).
# Every dependency ships manylinux wheels but pdqhash (PDQ for the bank of
# known fakes), which builds from its sdist: the C++ compiler is here, in the
# builder only.
FROM ${PYTHON_IMAGE} AS builder

# Whatever g++ bookworm ships with the pinned base image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends g++ \
    && rm -rf /var/lib/apt/lists/*

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH

WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas ./schemas
COPY detector ./detector
COPY consumer ./consumer

# A wheel of the project, then the project from that wheel with its pinned
# dependency ranges (torch from PyPI: the CUDA build).
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
    && pip install --no-cache-dir /wheels/deepscreen-*.whl \
    && rm -rf /wheels

# ---------------------------------------------------------------- runtime ----
FROM ${PYTHON_IMAGE} AS runtime

# Runtime libraries only, no build tools:
#   tini          PID 1: forwards SIGTERM to Python (graceful drain) and reaps
#                 the decoder worker processes;
#   libgl1        libGL.so.1, which opencv-contrib-python's cv2 links against
#                 (MediaPipe bundles its own EGL/GLES; ffmpeg is in the cv2 wheel);
#   libglib2.0-0  libglib/libgthread, also linked by cv2.
# Versions are whatever bookworm ships with the pinned base image tag.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends tini libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# A fixed, unprivileged identity (the chart runs as 10001:10001 too).
RUN groupadd --system --gid 10001 deepscreen \
    && useradd --system --uid 10001 --gid 10001 --no-create-home \
       --home-dir /tmp --shell /usr/sbin/nologin deepscreen

COPY --from=builder /opt/venv /opt/venv

# HOME and the caches point at /tmp: the only writable place when the root
# filesystem is read-only (the chart mounts an emptyDir there). Fetched media
# is staged in /tmp as well (DEEPSCREEN_MEDIA__TEMP_DIR).
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/tmp \
    XDG_CACHE_HOME=/tmp/.cache \
    DEEPSCREEN_HTTP__PORT=8080 \
    DEEPSCREEN_MEDIA__TEMP_DIR=/tmp

WORKDIR /tmp
USER 10001:10001

# /healthz, /readyz and /metrics.
EXPOSE 8080

# Readiness of the running service (model loaded, loop running, broker up).
# The start period covers loading the model onto the GPU.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["deepscreen", "healthcheck"]

ENTRYPOINT ["tini", "--", "deepscreen"]
CMD ["serve"]
