# fedssl coordinator. Build from the repository root:
#   docker build -f deploy/docker/coordinator.Dockerfile -t fedssl/coordinator .
# Pinned base (full Node.js version); bump deliberately.
FROM node:20.19.5-bookworm-slim AS build
WORKDIR /src
RUN apt-get update && apt-get install -y --no-install-recommends python3 make g++ && rm -rf /var/lib/apt/lists/*
COPY package.json package-lock.json tsconfig.base.json ./
COPY shared/package.json shared/
COPY coordinator/package.json coordinator/
COPY site-agent/package.json site-agent/
COPY demo/package.json demo/
RUN npm ci --no-audit --no-fund
COPY shared shared
COPY coordinator coordinator
# The web console's browser copy of socket.io-client is vendored before pruning drops the package.
RUN mkdir -p coordinator/src/console/public/vendor \
 && cp node_modules/socket.io-client/dist/socket.io.min.js coordinator/src/console/public/vendor/ \
 && npx tsc -b shared coordinator \
 && npm prune --omit=dev --workspace coordinator --workspace shared --include-workspace-root=false

FROM node:20.19.5-bookworm-slim
ENV NODE_ENV=production FEDSSL_HOST=0.0.0.0 FEDSSL_PORT=8080 FEDSSL_DATA_DIR=/var/lib/fedssl
WORKDIR /app
COPY --from=build /src/node_modules node_modules
COPY --from=build /src/package.json ./
COPY --from=build /src/shared/package.json shared/
COPY --from=build /src/shared/dist shared/dist
COPY --from=build /src/coordinator/package.json coordinator/
COPY --from=build /src/coordinator/dist coordinator/dist
# Static files of the web console (served at /console); found from dist/console via ../../src/console/public.
COPY --from=build /src/coordinator/src/console/public coordinator/src/console/public
RUN mkdir -p /var/lib/fedssl && chown node:node /var/lib/fedssl
USER node
VOLUME /var/lib/fedssl
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD node -e "fetch('http://127.0.0.1:'+process.env.FEDSSL_PORT+'/api/v1/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"
ENTRYPOINT ["node", "/app/coordinator/dist/cli/coordinator-cli.js"]
CMD ["serve"]
