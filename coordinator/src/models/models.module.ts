import { Module } from '@nestjs/common';
import { ModelExportsController } from './export/model-exports.controller';
import { ModelExportsService } from './export/model-exports.service';
import { ModelsController } from './models.controller';

@Module({ controllers: [ModelsController, ModelExportsController], providers: [ModelExportsService] })
export class ModelsModule {}
