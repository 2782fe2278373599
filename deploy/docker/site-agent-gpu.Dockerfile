# fedssl site agent, GPU image: @tensorflow/tfjs-node-gpu on CUDA 11.2 + cuDNN 8.1 (what
# libtensorflow 2.9.1 under tfjs 4.22 is built against). Build from the repository root:
#   docker build -f deploy/docker/site-agent-gpu.Dockerfile -t fedssl/site-agent-gpu .
# Run with the NVIDIA container toolkit:
#   docker run --gpus all -v agent-home:/var/lib/fedssl-agent -v /data:/data:ro fedssl/site-agent-gpu
# The agent logs "backend: tensorflow (gpu)" at start when the GPU binding loaded; otherwise it
# says why and falls back to WASM. Air-gapped builds: pass the mirror build args below
# (docs/offline-install.md).
ARG CUDA_IMAGE=nvidia/cuda:11.2.2-cudnn8-runtime-ubuntu20.04
ARG NODE_VERSION=20.19.5

FROM ${CUDA_IMAGE} AS build
ARG NODE_VERSION
ARG TFJS_NODE_CDN_STORAGE
ARG TFJS_NODE_BASE_URI
ARG npm_config_tfjs_binding_binary_host_mirror
ARG NODE_DIST_URL=https://nodejs.org/dist
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl xz-utils python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
RUN curl -fsSL "${NODE_DIST_URL}/v${NODE_VERSION}/node-v${NODE_VERSION}-linux-x64.tar.xz" -o /tmp/node.tar.xz \
 && curl -fsSL "${NODE_DIST_URL}/v${NODE_VERSION}/SHASUMS256.txt" -o /tmp/SHASUMS256.txt \
 && (cd /tmp && grep " node-v${NODE_VERSION}-linux-x64.tar.xz\$" SHASUMS256.txt | sed 's/node-v.*/node.tar.xz/' | sha256sum -c -) \
 && tar -xJf /tmp/node.tar.xz -C /usr/local --strip-components=1 --no-same-owner \
 && rm /tmp/node.tar.xz /tmp/SHASUMS256.txt
WORKDIR /src
COPY package.json package-lock.json tsconfig.base.json ./
COPY shared/package.json shared/
COPY coordinator/package.json coordinator/
COPY site-agent/package.json site-agent/
COPY demo/package.json demo/
# Optional dependencies included: this is where tfjs-node-gpu fetches libtensorflow-gpu.
RUN npm ci --no-audit --no-fund --include=optional \
 && node -e "require('@tensorflow/tfjs-node-gpu')" \
 || (echo 'tfjs-node-gpu did not install: check the libtensorflow mirror build args' >&2; exit 1)
COPY shared shared
COPY site-agent site-agent
COPY demo demo
COPY coordinator coordinator
RUN npx tsc -b shared site-agent demo

FROM ${CUDA_IMAGE}
COPY --from=build /usr/local/bin/node /usr/local/bin/node
ENV NODE_ENV=production FEDSSL_AGENT_HOME=/var/lib/fedssl-agent
RUN groupadd --system --gid 10001 fedssl \
 && useradd --system --uid 10001 --gid fedssl --home-dir /var/lib/fedssl-agent --shell /usr/sbin/nologin fedssl \
 && mkdir -p /var/lib/fedssl-agent && chown fedssl:fedssl /var/lib/fedssl-agent && chmod 0700 /var/lib/fedssl-agent
WORKDIR /app
COPY --from=build /src /app
USER fedssl
VOLUME /var/lib/fedssl-agent
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD node -e "const c=require(process.env.FEDSSL_AGENT_HOME+'/config.json');fetch(c.coordinatorUrl+'/api/v1/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "/app/site-agent/dist/cli/agent-cli.js"]
CMD ["run"]
