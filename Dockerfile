# Class-N-Diff demo (research demo, not a medical device): app.py on port 7860.
#
#   docker build -t class-n-diff .                       # CPU torch (default)
#   docker build -t class-n-diff:cuda \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 .
#   docker run --rm -p 7860:7860 class-n-diff             # embedded weights
#   docker run --rm -p 7860:7860 -e HF_HUB_OFFLINE=0 -e CLASSNDIFF_WEIGHTS=org/repo@rev class-n-diff
#
# Offline by default (HF_HUB_OFFLINE=1: the shipped weights/embedded/, no network needed);
# pass -e HF_HUB_OFFLINE=0 to let a Hub source download. Also usable as a Docker Space.
FROM python:3.11-slim

# CPU wheels by default; a CUDA index (e.g. .../whl/cu128) for GPUs (run with --gpus all).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ARG HF_HUB_OFFLINE=1

# libgl1 + libglib2.0-0: OpenCV (pulled in by grad-cam) needs them on a slim image.
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgl1 libglib2.0-0 \
    && rm -rf /var/lib/apt/lists/*

# A non-root user with uid 1000 (what Hugging Face Spaces runs as).
RUN useradd --create-home --uid 1000 --shell /bin/bash user
ENV HOME=/home/user \
    PATH=/home/user/.local/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/home/user/.cache/huggingface \
    HF_HUB_OFFLINE=${HF_HUB_OFFLINE} \
    HF_HUB_DISABLE_TELEMETRY=1 \
    GRADIO_ANALYTICS_ENABLED=False \
    GRADIO_SERVER_NAME=0.0.0.0 \
    GRADIO_SERVER_PORT=7860
USER user
WORKDIR /home/user/app

# Dependencies first (a cached layer): torch + torchvision at the pinned versions from the
# chosen index, then the rest of requirements.txt (torch is then already satisfied).
COPY --chown=user:user requirements.txt ./
RUN pip install --user $(grep -E '^(torch|torchvision)==' requirements.txt) \
        --index-url "${TORCH_INDEX_URL}" \
    && pip install --user -r requirements.txt

# The app, the package it imports from this folder, configs, and whatever of weights/ and
# examples/ the checkout has (.dockerignore lists exactly what goes in).
COPY --chown=user:user . ./

EXPOSE 7860
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD python -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:7860/', timeout=4)"
CMD ["python", "app.py"]
