import { Controller, Get, Inject, Param, Query, StreamableFile } from '@nestjs/common';
import { ApiParam, ApiQuery } from '@nestjs/swagger';
import { TFJS_MAX_INPUT_SIZE, TFJS_MIN_INPUT_SIZE } from '@fedssl/shared/model';
import { Roles } from '../../admin/admin-auth.guard';
import { DOWNLOAD_FORMATS, ModelExportsService } from './model-exports.service';

/**
 * `GET /models/:version/download/:format` (tfjs | safetensors | card): files for people;
 * `?inputSize=224` builds a group-norm tfjs graph for another input size.
 */
@Controller('models')
@Roles('viewer')
export class ModelExportsController {
  constructor(@Inject(ModelExportsService) private readonly exports: ModelExportsService) {}

  @Get(':version/download/:format')
  // The handler takes the raw query value (the service words its errors), so swagger cannot
  // infer the parameter: documented here with the range the service enforces.
  @ApiParam({ name: 'format', enum: [...DOWNLOAD_FORMATS] })
  @ApiQuery({
    name: 'inputSize',
    required: false,
    schema: { type: 'integer', minimum: TFJS_MIN_INPUT_SIZE, maximum: TFJS_MAX_INPUT_SIZE },
    description:
      'tfjs only (refused for other formats): the input side in pixels the graph is built for. A group-norm encoder gets a graph for inputSize×inputSize inputs; a batch-norm graph takes any size, so the value is only checked. Default: the model input size.',
  })
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
