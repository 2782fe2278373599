import type { INestApplication } from '@nestjs/common';
import { ModulesContainer } from '@nestjs/core';
import { DocumentBuilder, SwaggerModule, type OpenAPIObject } from '@nestjs/swagger';
import { PUBLIC_KEY } from '../admin/admin-auth.guard';
import { API_PREFIX } from '../admin/http/listen';

/** Where the OpenAPI UI and JSON document are served (outside the `/api/v1` prefix). */
export const OPENAPI_PATH = 'api/docs';
export const OPENAPI_JSON_PATH = `${OPENAPI_PATH}/openapi.json`;

/** `Controller_method` ids (swagger's default operationId) of handlers marked `@Public()`. */
function publicOperationIds(app: INestApplication): Set<string> {
  const ids = new Set<string>();
  for (const mod of app.get(ModulesContainer).values()) {
    for (const wrapper of mod.controllers.values()) {
      const cls = wrapper.metatype as (new (...a: never[]) => unknown) | null;
      if (!cls) continue;
      const classPublic = Reflect.getMetadata(PUBLIC_KEY, cls) === true;
      const proto = cls.prototype as Record<string, unknown>;
      for (const key of Object.getOwnPropertyNames(proto)) {
        const fn = proto[key];
        if (key === 'constructor' || typeof fn !== 'function') continue;
        if (classPublic || Reflect.getMetadata(PUBLIC_KEY, fn) === true) ids.add(`${cls.name}_${key}`);
      }
    }
  }
  return ids;
}

/**
 * Builds the OpenAPI document from the registered controllers. The controllers validate
 * with zod pipes rather than DTO classes, so bodies are not described; paths, methods, tags
 * (first segment after the prefix) and auth (bearer unless `@Public()`) are. The root-level
 * operations endpoints are added by hand.
 */
export function buildOpenApiDocument(app: INestApplication): OpenAPIObject {
  const config = new DocumentBuilder()
    .setTitle('fedssl coordinator')
    .setDescription('Admin REST API of the federated self-supervised pretraining coordinator.')
    .setVersion('1')
    .addBearerAuth({ type: 'http', scheme: 'bearer', description: 'admin token' }, 'bearer')
    .build();
  const doc = SwaggerModule.createDocument(app, config);
  const open = publicOperationIds(app);
  const prefix = `/${API_PREFIX}/`;
  for (const [path, item] of Object.entries(doc.paths)) {
    const tag = path.startsWith(prefix) ? path.slice(prefix.length).split('/')[0] : undefined;
    for (const method of ['get', 'put', 'post', 'delete', 'patch'] as const) {
      const op = item[method];
      if (!op) continue;
      if (tag) op.tags = [tag];
      op.security = open.has(op.operationId ?? '') ? [] : [{ bearer: [] }];
    }
  }
  const plain = { 200: { description: 'OK' } };
  doc.paths['/healthz'] = {
    get: { operationId: 'ops_health', tags: ['ops'], summary: 'Liveness', security: [], responses: plain },
  };
  doc.paths['/readyz'] = {
    get: {
      operationId: 'ops_ready',
      tags: ['ops'],
      summary: 'Readiness: store, data dir, keys',
      security: [],
      responses: { ...plain, 503: { description: 'not ready; body lists each check' } },
    },
  };
  doc.paths['/metrics'] = {
    get: {
      operationId: 'ops_metrics',
      tags: ['ops'],
      summary: 'Prometheus metrics (viewer or higher)',
      security: [{ bearer: [] }],
      responses: plain,
    },
  };
  return doc;
}

/** Serves the UI at `/api/docs` and the JSON at `/api/docs/openapi.json`. */
export function setupOpenApi(app: INestApplication): void {
  SwaggerModule.setup(OPENAPI_PATH, app, () => buildOpenApiDocument(app), {
    jsonDocumentUrl: OPENAPI_JSON_PATH,
    yamlDocumentUrl: `${OPENAPI_PATH}/openapi.yaml`,
    useGlobalPrefix: false,
  });
}
