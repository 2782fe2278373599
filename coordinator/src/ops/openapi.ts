import type { INestApplication } from '@nestjs/common';
import { ROUTE_ARGS_METADATA } from '@nestjs/common/constants';
import { RouteParamtypes } from '@nestjs/common/enums/route-paramtypes.enum';
import { ModulesContainer } from '@nestjs/core';
import type { z } from 'zod';
import { DocumentBuilder, SwaggerModule, type OpenAPIObject } from '@nestjs/swagger';
import { PUBLIC_KEY } from '../admin/admin-auth.guard';
import { API_PREFIX } from '../admin/http/listen';
import { ZodBodyPipe } from '../admin/http/zod-body.pipe';
import { COMPONENT_SCHEMAS, OPERATION_BODIES, fromZod, type JsonSchema } from './openapi-schemas';

/** Where the OpenAPI UI and JSON document are served (outside the `/api/v1` prefix). */
export const OPENAPI_PATH = 'api/docs';
export const OPENAPI_JSON_PATH = `${OPENAPI_PATH}/openapi.json`;

interface HandlerFacts {
  /** `Controller_method` ids (swagger's default operationId) of handlers marked `@Public()`. */
  open: Set<string>;
  /** Request body schemas of handlers whose `@Body()` is validated by a {@link ZodBodyPipe}. */
  bodies: Map<string, { schema: JsonSchema; required: boolean }>;
}

/** What the OpenAPI document needs from each registered handler's decorators. */
function handlerFacts(app: INestApplication): HandlerFacts {
  const open = new Set<string>();
  const bodies = new Map<string, { schema: JsonSchema; required: boolean }>();
  for (const mod of app.get(ModulesContainer).values()) {
    for (const wrapper of mod.controllers.values()) {
      const cls = wrapper.metatype as (new (...a: never[]) => unknown) | null;
      if (!cls) continue;
      const classPublic = Reflect.getMetadata(PUBLIC_KEY, cls) === true;
      const proto = cls.prototype as Record<string, unknown>;
      for (const key of Object.getOwnPropertyNames(proto)) {
        const fn = proto[key];
        if (key === 'constructor' || typeof fn !== 'function') continue;
        const id = `${cls.name}_${key}`;
        if (classPublic || Reflect.getMetadata(PUBLIC_KEY, fn) === true) open.add(id);
        // Param decorators are stored as `"<paramtype>:<index>" → { pipes }` on the class.
        const args = (Reflect.getMetadata(ROUTE_ARGS_METADATA, cls, key) ?? {}) as Record<
          string,
          { pipes?: unknown[] }
        >;
        for (const [k, arg] of Object.entries(args)) {
          if (!k.startsWith(`${RouteParamtypes.BODY}:`)) continue;
          const pipe = arg.pipes?.find((p): p is ZodBodyPipe<z.ZodType> => p instanceof ZodBodyPipe);
          // Required unless the schema accepts no body at all.
          if (pipe)
            bodies.set(id, {
              schema: fromZod(pipe.schema, 'input'),
              required: !pipe.schema.safeParse(undefined).success,
            });
        }
      }
    }
  }
  return { open, bodies };
}

type Operation = NonNullable<OpenAPIObject['paths'][string]['get']>;

/** Sets an operation's request body and success responses from {@link OPERATION_BODIES}. */
function describeBodies(op: Operation, facts: HandlerFacts): void {
  const id = op.operationId ?? '';
  const known = OPERATION_BODIES[id];
  const request = facts.bodies.get(id) ?? (known?.request && { schema: known.request, required: true });
  if (request) {
    op.requestBody = {
      required: request.required,
      content: { 'application/json': { schema: request.schema } },
    };
  }
  if (!known) return;
  const responses: Operation['responses'] = {};
  for (const [status, r] of Object.entries(known.responses)) {
    responses[status] = {
      description: r.description,
      content: Object.fromEntries(
        (r.mediaTypes ?? ['application/json']).map((t) => [t, { schema: r.schema }]),
      ),
    };
  }
  const error = { content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } };
  responses['default'] = { description: 'an error: `{ error: { code, message, details? } }`', ...error };
  op.responses = responses;
}

/**
 * Builds the OpenAPI document from the registered controllers: paths, methods, tags (first
 * segment after the prefix), auth (bearer unless `@Public()`), request bodies (from each
 * handler's zod body pipe) and responses (openapi-schemas.ts). The root-level operations
 * endpoints are added by hand.
 */
export function buildOpenApiDocument(app: INestApplication): OpenAPIObject {
  const config = new DocumentBuilder()
    .setTitle('fedssl coordinator')
    .setDescription('Admin REST API of the federated self-supervised pretraining coordinator.')
    .setVersion('1')
    .addBearerAuth({ type: 'http', scheme: 'bearer', description: 'admin token' }, 'bearer')
    .build();
  const doc = SwaggerModule.createDocument(app, config);
  const facts = handlerFacts(app);
  const prefix = `/${API_PREFIX}/`;
  for (const [path, item] of Object.entries(doc.paths)) {
    const tag = path.startsWith(prefix) ? path.slice(prefix.length).split('/')[0] : undefined;
    for (const method of ['get', 'put', 'post', 'delete', 'patch'] as const) {
      const op = item[method];
      if (!op) continue;
      if (tag) op.tags = [tag];
      op.security = facts.open.has(op.operationId ?? '') ? [] : [{ bearer: [] }];
      describeBodies(op, facts);
    }
  }
  const root = (path: string, op: Operation): void => {
    describeBodies(op, facts);
    doc.paths[path] = { get: op };
  };
  root('/healthz', {
    operationId: 'ops_health',
    tags: ['ops'],
    summary: 'Liveness',
    security: [],
    responses: {},
  });
  root('/readyz', {
    operationId: 'ops_ready',
    tags: ['ops'],
    summary: 'Readiness: store, data dir, keys',
    security: [],
    responses: {},
  });
  root('/metrics', {
    operationId: 'ops_metrics',
    tags: ['ops'],
    summary: 'Prometheus metrics (viewer or higher)',
    security: [{ bearer: [] }],
    responses: {},
  });
  doc.components = { ...doc.components, schemas: { ...doc.components?.schemas, ...COMPONENT_SCHEMAS } };
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
