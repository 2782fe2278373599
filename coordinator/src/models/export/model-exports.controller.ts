import { Controller, Get, Inject, Param, Query, StreamableFile } from '@nestjs/common';
import { Roles } from '../../admin/admin-auth.guard';
import { ModelExportsService } from './model-exports.service';

/**
 * `GET /models/:version/download/:format` (tfjs | safetensors | card): files for people;
 * `?inputSize=224` builds a group-norm tfjs graph for another input size.
 */
@Controller('models')
@Roles('viewer')
export class ModelExportsController {
  constructor(@Inject(ModelExportsService) private readonly exports: ModelExportsService) {}

  @Get(':version/download/:format')
  async download(
    @Param('version') version: string,
    @Param('format') format: string,
    @Query('inputSize') inputSize?: unknown,
  ): Promise<StreamableFile> {
    const d = await this.exports.download(version, format, { inputSize });
    return new StreamableFile(d.data, {
      type: d.type,
      length: d.data.length,
      disposition: `attachment; filename="${d.name}"`,
    });
  }
}
