import { Controller, Get, Inject, Param, StreamableFile } from '@nestjs/common';
import { createReadStream } from 'node:fs';
import { Roles } from '../admin/admin-auth.guard';
import { toModelVersionResponse, type ModelVersionResponse } from './dtos/model-version.dto';
import { ModelMarksRepository } from './model-marks.repository';
import { ModelStoreService } from './model-store.service';

@Controller('models')
@Roles('viewer')
export class ModelsController {
  constructor(
    @Inject(ModelStoreService) private readonly store: ModelStoreService,
    @Inject(ModelMarksRepository) private readonly marks: ModelMarksRepository,
  ) {}

  @Get()
  async list(): Promise<ModelVersionResponse[]> {
    const marks = new Map((await this.marks.list()).map((m) => [m.version, m]));
    return this.store
      .list()
      .map((s) =>
        toModelVersionResponse(s, this.store.hasWeights(s.manifest.version), marks.get(s.manifest.version)),
      );
  }

  @Get(':version')
  async get(@Param('version') version: string): Promise<ModelVersionResponse> {
    const signed = this.store.requireManifest(version);
    return toModelVersionResponse(signed, this.store.hasWeights(version), await this.marks.get(version));
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
