import { Controller, Get, Inject, Param, StreamableFile } from '@nestjs/common';
import { Roles } from '../../admin/admin-auth.guard';
import { ModelExportsService } from './model-exports.service';

/** `GET /models/:version/download/:format` (tfjs | safetensors | card): files for people. */
@Controller('models')
@Roles('viewer')
export class ModelExportsController {
  constructor(@Inject(ModelExportsService) private readonly exports: ModelExportsService) {}

  @Get(':version/download/:format')
  async download(
    @Param('version') version: string,
    @Param('format') format: string,
  ): Promise<StreamableFile> {
    const d = await this.exports.download(version, format);
    return new StreamableFile(d.data, {
      type: d.type,
      length: d.data.length,
      disposition: `attachment; filename="${d.name}"`,
    });
  }
}
