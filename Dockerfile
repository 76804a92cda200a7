# The Lathe GPU node image: CUDA, Python 3.12, lathe with the pinned node stack
# (requirements.lock: torch, Axolotl, DeepSpeed, Ray, MLX for export), llama-cpp-python
# built with CUDA, and llama.cpp's tools and converter at the same llama.cpp version.
#
#   docker build -t lathe-node:0.1.0 .
#   docker run --gpus all --network host lathe-node:0.1.0 ray start --address HEAD:6379 --block
#
# Used by infra/ray/aws-gpu.yaml and infra/kuberay/raycluster.yaml.

# The CUDA that the locked torch is built for (its nvidia-cuda-runtime pin; a test checks): llama.cpp
# compiled here links the same runtime, and hosts need its driver (>= 580.65.06 for 13.0).
ARG CUDA_VERSION=13.0.1
ARG UBUNTU=ubuntu22.04

FROM nvidia/cuda:${CUDA_VERSION}-devel-${UBUNTU} AS build
# Must equal llama-cpp-python's pin in requirements.lock (a test checks).
ARG LLAMA_CPP_PYTHON_VERSION=0.3.36
ARG UV_VERSION=0.9.5
ENV DEBIAN_FRONTEND=noninteractive \
    UV_PYTHON_INSTALL_DIR=/opt/python \
    UV_LINK_MODE=copy \
    CMAKE_BUILD_PARALLEL_LEVEL=8
# A failure anywhere in a pipe fails the RUN (the uv download below is piped into tar).
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl git cmake build-essential \
 && rm -rf /var/lib/apt/lists/*
RUN curl -LsSf "https://github.com/astral-sh/uv/releases/download/${UV_VERSION}/uv-x86_64-unknown-linux-gnu.tar.gz" \
    | tar -xz --strip-components=1 -C /usr/local/bin uv-x86_64-unknown-linux-gnu/uv
RUN uv python install 3.12 && uv venv --python 3.12 /opt/lathe/.venv

WORKDIR /opt/lathe/src
COPY pyproject.toml requirements.lock README.md ./
COPY orchestrator ./orchestrator
# The locked stack; llama-cpp-python compiled for CUDA, for the GPUs Ray might schedule on: A100/A10/
# L4/H100 (80-90), B200 (100) and RTX 50xx (120). CUDA 13 has no Volta or older.
RUN CMAKE_ARGS="-DGGML_CUDA=ON -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DCMAKE_CUDA_ARCHITECTURES=80;86;89;90;100;120" \
    uv pip install --python /opt/lathe/.venv/bin/python -r requirements.lock \
 && uv pip install --python /opt/lathe/.venv/bin/python --no-deps .

# llama.cpp's tools (quantize, imatrix, server, cli, perplexity) and converter from the same sdist.
RUN /opt/lathe/.venv/bin/python -m pip download -q --no-deps --no-binary :all: \
      "llama-cpp-python==${LLAMA_CPP_PYTHON_VERSION}" -d /tmp/sdist \
 && tar -xzf /tmp/sdist/llama_cpp_python-*.tar.gz -C /tmp/sdist \
 && cmake -S /tmp/sdist/llama_cpp_python-*/vendor/llama.cpp -B /tmp/llama-build \
      -DGGML_CUDA=ON -DGGML_NATIVE=OFF -DLLAMA_CURL=OFF -DCMAKE_CUDA_ARCHITECTURES="80;86;89;90;100;120" \
      -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
 && cmake --build /tmp/llama-build --config Release \
      --target llama-quantize llama-imatrix llama-server llama-cli llama-perplexity \
 && mkdir -p /opt/llama.cpp/bin /opt/lathe/.venv/share/lathe/llama.cpp \
 && cp /tmp/llama-build/bin/llama-* /opt/llama.cpp/bin/ \
 && find /tmp/llama-build -name '*.so*' -exec cp {} /opt/llama.cpp/bin/ \; \
 && cp -r /tmp/sdist/llama_cpp_python-*/vendor/llama.cpp/convert_hf_to_gguf.py \
          /tmp/sdist/llama_cpp_python-*/vendor/llama.cpp/conversion \
          /tmp/sdist/llama_cpp_python-*/vendor/llama.cpp/gguf-py /opt/lathe/.venv/share/lathe/llama.cpp/ \
 && echo "${LLAMA_CPP_PYTHON_VERSION}" > /opt/lathe/.venv/share/lathe/llama.cpp/VERSION \
 && rm -rf /tmp/sdist /tmp/llama-build

FROM nvidia/cuda:${CUDA_VERSION}-runtime-${UBUNTU}
ENV DEBIAN_FRONTEND=noninteractive \
    PATH=/opt/lathe/.venv/bin:/opt/llama.cpp/bin:$PATH \
    LD_LIBRARY_PATH=/opt/llama.cpp/bin \
    HF_HUB_DISABLE_TELEMETRY=1 \
    AXOLOTL_DO_NOT_TRACK=1 \
    RAY_USAGE_STATS_ENABLED=0
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libgomp1 openssh-client rsync \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 lathe
COPY --from=build /opt/python /opt/python
COPY --from=build /opt/lathe/.venv /opt/lathe/.venv
COPY --from=build /opt/llama.cpp /opt/llama.cpp
# By uid, as a host resolves it (useradd above gives lathe uid 1000).
USER 1000
WORKDIR /home/lathe
# Ray: GCS 6379, dashboard 8265, metrics 8080; node_exporter runs beside, not in, this image.
EXPOSE 6379 8265 8080
HEALTHCHECK --interval=30s --timeout=5s CMD ["python", "-c", "import orchestrator, ray, axolotl, llama_cpp"]
CMD ["ray", "start", "--head", "--block", "--dashboard-host", "127.0.0.1"]
