# fedssl site agent (CPU image: trains on the WASM backend, or on tfjs-node where libtensorflow
# could be downloaded at build time). Build from the repository root:
#   docker build -f deploy/docker/site-agent.Dockerfile -t fedssl/site-agent .
# Air-gapped builds: pass the libtensorflow mirror as build args (docs/offline-install.md).
# Pinned base (full Node.js version); bump deliberately.
FROM node:20.19.5-bookworm-slim AS build
ARG TFJS_NODE_CDN_STORAGE
ARG TFJS_NODE_BASE_URI
ARG npm_config_tfjs_binding_binary_host_mirror
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json tsconfig.base.json ./
COPY shared/package.json shared/
COPY coordinator/package.json coordinator/
COPY site-agent/package.json site-agent/
COPY demo/package.json demo/
RUN npm ci --no-audit --no-fund
COPY shared shared
COPY site-agent site-agent
COPY demo demo
COPY coordinator coordinator
RUN npx tsc -b shared site-agent demo

FROM node:20.19.5-bookworm-slim
ENV NODE_ENV=production FEDSSL_AGENT_HOME=/var/lib/fedssl-agent
WORKDIR /app
COPY --from=build /src /app
RUN mkdir -p /var/lib/fedssl-agent && chown node:node /var/lib/fedssl-agent
USER node
VOLUME /var/lib/fedssl-agent
# Healthy = the agent home is initialised and the coordinator answers from here (outbound only).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
  CMD node -e "const c=require(process.env.FEDSSL_AGENT_HOME+'/config.json');fetch(c.coordinatorUrl+'/api/v1/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "/app/site-agent/dist/cli/agent-cli.js"]
CMD ["run"]
