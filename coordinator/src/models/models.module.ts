import { Module } from '@nestjs/common';
import { SQL_STORE, type SqlStore } from '../store/sql-store';
import { ModelExportsController } from './export/model-exports.controller';
import { ModelExportsService } from './export/model-exports.service';
import { ModelMarksRepository } from './model-marks.repository';
import { ModelsController } from './models.controller';

/** Published versions over REST (list, manifest, weights, exports) and their retention marks. */
@Module({
  controllers: [ModelsController, ModelExportsController],
  providers: [
    ModelExportsService,
    {
      provide: ModelMarksRepository,
      useFactory: (db: SqlStore) => new ModelMarksRepository(db).init(),
      inject: [SQL_STORE],
    },
  ],
  exports: [ModelMarksRepository],
})
export class ModelsModule {}
