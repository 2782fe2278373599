import { Controller, Get, Inject, Param, StreamableFile } from '@nestjs/common';
import { createReadStream } from 'node:fs';
import type { SignedModelManifest } from '@fedssl/shared/protocol';
import { Roles } from '../admin/admin-auth.guard';
import { ModelStoreService } from './model-store.service';

@Controller('models')
@Roles('viewer')
export class ModelsController {
  constructor(@Inject(ModelStoreService) private readonly store: ModelStoreService) {}

  @Get()
  list(): SignedModelManifest[] {
    return this.store.list();
  }

  @Get(':version')
  get(@Param('version') version: string): SignedModelManifest {
    return this.store.requireManifest(version);
  }

  /**
   * Streams the encoded weights; clients check them against the signed manifest's SHA-256.
   * The content type goes on the file, not the route, so an error still answers as JSON.
   */
  @Get(':version/weights')
  weights(@Param('version') version: string): StreamableFile {
    const { manifest } = this.store.requireManifest(version);
    return new StreamableFile(createReadStream(this.store.requireWeightsPath(version)), {
      length: manifest.weightsBytes,
      type: 'application/octet-stream',
    });
  }
}
