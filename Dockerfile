# quantserve image: `scripts/image.sh` builds it (buildah/podman, or `docker build .`).
#
#   builder: Debian's toolchain and libraries, LibTorch from the pinned torch wheel (its C++
#            library only; no Python at run time), then `quantserve` and `quantserve-cli`.
#   runtime: bookworm-slim with the shared libraries those two binaries load, LibTorch's CPU
#            library, the default model, running as an unprivileged user.
#
# Behind an intercepting HTTPS proxy, pass its CA as a build secret (optional):
#   buildah bud --secret id=ca,src=/etc/ssl/certs/ca-certificates.crt -t quantserve .
ARG DEBIAN_IMAGE=docker.io/library/debian:bookworm

FROM ${DEBIAN_IMAGE} AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# Versions come from bookworm's archive (the project's pinned distribution).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential cmake ninja-build pkg-config ca-certificates \
      python3 python3-venv python3-pip \
      libgrpc++-dev libgrpc-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler \
      libabsl-dev prometheus-cpp-dev nlohmann-json3-dev libpcre2-dev \
 && rm -rf /var/lib/apt/lists/*
# LibTorch: the pinned wheel without its Python dependencies, plus the two CUDA runtime
# libraries its CPU library links (nothing else of CUDA is loaded).
COPY deploy/docker/requirements-image.txt /tmp/requirements-image.txt
RUN --mount=type=secret,id=ca,required=false \
    python3 -m venv /opt/venv \
 && if [ -s /run/secrets/ca ]; then export PIP_CERT=/run/secrets/ca; fi \
 && /opt/venv/bin/pip install --no-cache-dir --no-deps -r /tmp/requirements-image.txt
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake cmake
COPY proto proto
COPY common common
COPY models models
COPY quant quant
COPY loader loader
COPY engine engine
COPY server server
COPY cli cli
# RelWithDebInfo (-O2) as the tested builds (GCC 12 -O3 trips -Wrestrict in libstdc++), debug
# info stripped below. QS_TORCH_DIR: LibTorch without importing torch (no Python deps here).
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQS_BUILD_TESTS=OFF \
      -DQS_TORCH_DIR=/opt/venv/lib/python3.11/site-packages/torch \
 && cmake --build build --target quantserve quantserve-cli \
 && mkdir -p /out/bin /out/lib \
 && cp build/server/quantserve build/cli/quantserve-cli /out/bin/ \
 && torch=/opt/venv/lib/python3.11/site-packages/torch/lib \
 && cp "$torch"/libtorch_cpu.so "$torch"/libc10.so "$torch"/libgomp.so.1 /out/lib/ \
 && cp /opt/venv/lib/python3.11/site-packages/nvidia/cu13/lib/libcudart.so.13 \
       /opt/venv/lib/python3.11/site-packages/nvidia/cu13/lib/libcupti.so.13 /out/lib/ \
 && strip --strip-unneeded /out/bin/*

FROM ${DEBIAN_IMAGE}-slim AS runtime
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      libgrpc++1.51 libgrpc29 libprotobuf32 libabsl20220623 \
      libprometheus-cpp-core1.0 libprometheus-cpp-pull1.0 libpcre2-8-0 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin quantserve \
 && mkdir -p /models \
 && chown quantserve /models
COPY --from=builder /out/bin/ /opt/quantserve/bin/
COPY --from=builder /out/lib/ /opt/quantserve/lib/
COPY deploy/docker/entrypoint.sh /opt/quantserve/bin/entrypoint.sh
COPY assets/models/kjv-llama /opt/quantserve/models/kjv-llama
COPY deploy/examples/default-model.json /opt/quantserve/config/default-model.json
ENV PATH=/opt/quantserve/bin:$PATH \
    LD_LIBRARY_PATH=/opt/quantserve/lib \
    QUANTSERVE_MODEL_ROOT=/opt/quantserve/models \
    QUANTSERVE_CONFIG=/opt/quantserve/config/default-model.json \
    QUANTSERVE_LISTEN=0.0.0.0:50051 \
    QUANTSERVE_METRICS_LISTEN=0.0.0.0:9090
USER 10001
EXPOSE 50051 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
  CMD ["quantserve-cli", "--server=127.0.0.1:50051", "--timeout_seconds=3", "health"]
ENTRYPOINT ["/opt/quantserve/bin/entrypoint.sh"]
