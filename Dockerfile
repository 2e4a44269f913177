# syntax=docker/dockerfile:1
# ifseg-deploy for x86_64 desktops and servers with an NVIDIA GPU: CUDA, TensorRT, the package with its
# "gpu" extra, and the C++ latency benchmark ifseg_bench (TensorRT backend).
# Build and run: see docker/README.md. Lint: hadolint Dockerfile (tests/test_dockerfiles.py).

# NGC TensorRT image: TensorRT 10.3 (as JetPack 6.1), CUDA 12.6, Ubuntu 22.04, Python 3.10.
ARG BASE_IMAGE=nvcr.io/nvidia/tensorrt:24.08-py3

# ---- ifseg_bench, built against the image's own TensorRT and CUDA ----------------------------------
FROM ${BASE_IMAGE} AS bench-builder
# Pinned to the Ubuntu 22.04 series of the base image (the patch level follows its security updates);
# a base image on another Ubuntu release needs these versions changed with it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends "cmake=3.22.*" "g++=4:11.*" "make=4.3-*" \
 && rm -rf /var/lib/apt/lists/*
COPY cpp_bench /src/cpp_bench
RUN cmake -S /src/cpp_bench -B /build -DCMAKE_BUILD_TYPE=Release \
          -DIFSEG_BENCH_REQUIRE_TENSORRT=ON -DIFSEG_BENCH_WITH_ONNXRUNTIME=OFF \
 && cmake --build /build -j"$(nproc)" \
 && cmake --install /build --prefix /opt/ifseg_bench

# ---- runtime -------------------------------------------------------------------------------------
FROM ${BASE_IMAGE}
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# A PyTorch wheel index matching the image's CUDA (e.g. https://download.pytorch.org/whl/cu126);
# empty: torch comes from PyPI with the package's other dependencies.
ARG TORCH_INDEX_URL=
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONUNBUFFERED=1
WORKDIR /opt/ifseg-deploy
COPY . .
# The image's own TensorRT Python package satisfies the extra's "tensorrt>=10.0", so pip keeps it.
RUN if [ -n "$TORCH_INDEX_URL" ]; then \
        python3 -m pip install --index-url "$TORCH_INDEX_URL" "torch>=2.1,<2.15"; \
    fi \
 && python3 -m pip install "./[gpu]"
COPY --from=bench-builder /opt/ifseg_bench/bin/ifseg_bench /usr/local/bin/ifseg_bench
# Engines built with the Python tensorrt package must load in ifseg_bench: same TensorRT major.minor.
RUN trt_py="$(python3 -c 'import tensorrt; print(tensorrt.__version__)')" \
 && trt_cpp="$(ifseg_bench --help | sed -n 's/.*TensorRT \([0-9]*\.[0-9]*\)\..*/\1/p')" \
 && echo "TensorRT: Python ${trt_py}, ifseg_bench ${trt_cpp}" \
 && case "${trt_py}" in \
        "${trt_cpp}."*) ;; \
        *) echo "Python TensorRT ${trt_py} differs from the image's TensorRT ${trt_cpp}" >&2; exit 1 ;; \
    esac
WORKDIR /workspace
CMD ["ifseg-deploy", "--help"]
